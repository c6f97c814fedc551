"""CloudFront-style distributions: the edge cache in front of origins that are target groups.

Flow: a viewer connection (server.py) -> the distribution's behaviors (behaviors.py: first path pattern
that matches) -> the cache key and a lookup (lbd/cache) -> a hit is answered at once; a miss, a stale
entry or an uncacheable request goes to the origin (origin.py: the load balancer's own HTTP/1.1 data path
and target pool, through a bridge like HTTP/2's) -> freshness, compression, storage (handler.py).
"""
