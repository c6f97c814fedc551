"""The response cache: the stage cache of APIs now, the edge cache of distributions later.

Pure: the engine (engine.py), the cached response (response.py) and the keys and Cache-Control rules
(keys.py) import nothing from lbd's I/O layers (tests/test_layers.py checks), so each can be tested
without a loop and compiled later.
"""

from lbd.cache.engine import CacheStats, Lookup, ResponseCache
from lbd.cache.response import CachedResponse

__all__ = ["CacheStats", "CachedResponse", "Lookup", "ResponseCache"]
