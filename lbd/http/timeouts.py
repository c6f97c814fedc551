"""When a client connection's timeout check runs next (pure; the connection owns the one timer).

The check runs every idle_timeout/2: that is enough for idle keep-alive connections, which close after two
quiet checks. A request head in progress has a hard deadline instead, ``idle_timeout`` after its first
byte (ALB answers 408, R10), so while one is pending the check is due at that deadline if it comes first.
One timer per connection, re-armed by the check itself: no timer per request.
"""

from __future__ import annotations

MIN_DELAY = 0.001  # the loop's timer resolution; a check due now still waits for the next iteration


def next_check(idle_timeout: float, head_started_at: float, now: float) -> float:
    """Seconds until the next check: idle_timeout/2, or less when a pending head's deadline is sooner."""
    delay = idle_timeout / 2
    if head_started_at:
        delay = min(delay, head_started_at + idle_timeout - now)
    return max(delay, MIN_DELAY)
