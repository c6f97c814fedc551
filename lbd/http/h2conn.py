"""h2's connection with its open-stream count made cheap; used by both sides of lbd's HTTP/2.

``h2`` checks, before each new stream, that opening it stays within the peer's (outbound) or our
(inbound) ``SETTINGS_MAX_CONCURRENT_STREAMS`` (RFC 9113 5.1.2), by counting every stream it holds, open
or closed, and dropping the closed ones while it counts: O(streams) Python work per new stream, a tenth
of a busy worker's time with 100 streams in flight per connection.

The count that decides is only compared with the limit. While h2 holds fewer streams than the limit,
the number it holds (open and not yet dropped closed ones) is an upper bound of the open ones that is
still below the limit, so the answer is the same without counting; only at the limit is the exact,
purging count taken. So the decisions and their errors are h2's own, and closed streams are still
dropped, once per ``limit - open`` new streams instead of on every one. The price: below the limit,
``open_inbound_streams`` and ``open_outbound_streams`` are that upper bound, not the exact count (lbd
reads neither; it counts the streams it serves itself).
"""

from __future__ import annotations

import h2.connection


class H2Connection(h2.connection.H2Connection):
    @property
    def open_outbound_streams(self) -> int:
        held = len(self.streams)
        if held < self.remote_settings.max_concurrent_streams:
            return held
        return self._open_streams(int(self.config.client_side))

    @property
    def open_inbound_streams(self) -> int:
        held = len(self.streams)
        if held < self.local_settings.max_concurrent_streams:
            return held
        return self._open_streams(int(not self.config.client_side))
