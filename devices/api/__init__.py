"""The provisioning HTTP API (docs/api.md): FastAPI, bearer tokens with roles."""

from devices.api.app import create_app, serve
from devices.api.auth import create_token, revoke_token

__all__ = ["create_app", "create_token", "revoke_token", "serve"]
