"""Rate-limited warnings: a failure that repeats for every connection (a target refusing, accept running
out of descriptors) is logged once per interval and key, with how many were left out since."""

from __future__ import annotations

import logging
from time import monotonic
from typing import Any

INTERVAL = 10.0  # seconds between two warnings with the same key
MAX_KEYS = 1024  # a bound, not an LRU: keys are targets and listeners, which are few


class RateLimitedLog:
    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self._last: dict[str, tuple[float, int]] = {}  # key -> (last logged at, suppressed since)

    def allow(self, key: str, now: float) -> int | None:
        """None to stay quiet; else how many were suppressed since the last warning with this key."""
        last = self._last.get(key)
        if last is not None and now - last[0] < self.interval:
            self._last[key] = (last[0], last[1] + 1)
            return None
        if len(self._last) >= MAX_KEYS:
            self._last.clear()
        self._last[key] = (now, 0)
        return last[1] if last is not None else 0

    def warning(self, logger: logging.Logger, key: str, message: str, *args: Any) -> None:
        suppressed = self.allow(key, monotonic())
        if suppressed is None:
            return
        if suppressed:
            message += " (%d more like it in the last %.0f s not logged)"
            args = (*args, suppressed, self.interval)
        logger.warning(message, *args)


CONNECT_WARNINGS = RateLimitedLog()  # target connects that failed, per target
ACCEPT_WARNINGS = RateLimitedLog()  # accept() failures (EMFILE/ENFILE), per listener
