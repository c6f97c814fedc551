"""The gateway's clock: ``time.time``, or, for tests only, a time read from a file.

Quota periods (a day, a week, a month) and token-bucket refills depend on the wall clock, and a test
cannot wait for midnight. When the environment variable ``LBD_TEST_CLOCK_FILE`` names a file, the
gateway's clock is the number of epoch seconds in that file (re-read on every call), so a test freezes
time, crosses a period boundary, or refills a bucket by writing a number. The variable is for lbd's test
harness only: no config key reaches it, and it is documented as such in docs/gateway.md.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from lbd.gateway.contracts import Clock

TEST_CLOCK_ENV = "LBD_TEST_CLOCK_FILE"


def gateway_clock() -> Clock:
    name = os.environ.get(TEST_CLOCK_ENV)
    if not name:
        return time.time
    path = Path(name)

    def test_clock() -> float:
        try:
            return float(path.read_text().strip())
        except (OSError, ValueError):
            return time.time()

    return test_clock
