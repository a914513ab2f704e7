"""The /v1 routes, one module per thing a user manages."""
