"""lbd: a Layer-4/Layer-7 load balancer daemon with Elastic Load Balancing semantics."""

__version__ = "0.1.0"
