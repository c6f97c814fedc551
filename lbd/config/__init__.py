"""Config: schema, loader, cross-checks and the checks ``lbd run`` and ``lbd check`` share."""
