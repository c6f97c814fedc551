"""The API Gateway layer: APIs, routes, integrations, API keys, usage plans, authorizers, stage cache."""
