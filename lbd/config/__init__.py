"""Config: schema, loader, cross-checks and the checks ``lbd run`` and ``lbd check`` share."""

# The schema first: lbd.config.gateway and gateway_auth build on its Model, and it includes their models.
from lbd.config import schema as schema
