"""Flow-control settings of the HTTP proxy, shared by the client side, the exchange and the target side.

A leaf module: the compiled client side, exchange and target side import each other's types, so the plain
values they share live here, where importing them starts no import cycle.
"""

# Write-buffer marks (DESIGN.md section 3): a side whose transport holds more than HIGH_WATER bytes pauses
# reading on the other side until it drains below LOW_WATER.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024

# Reasons reading from the client is paused; reading resumes only when none is left.
PAUSE_PIPELINE = 1  # an earlier request is still being answered
PAUSE_BACKPRESSURE = 2  # the target cannot take the request body as fast as the client sends it
PAUSE_CONNECTING = 4  # body arriving before the target connection exists
