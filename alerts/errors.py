"""The alerts package's errors, translated once at each edge (CLI exit code, HTTP status).

    runtime.errors: NotFound, Conflict, Invalid   shared meanings, re-exported here: an
                    incident outside the caller's area is NotFound (nobody learns what lies
                    outside their grid); a transition the incident's state does not allow,
                    or another open incident holding the key, is Conflict
    AlertsError (runtime.FiregridError)
    └── ChannelError (alerts.channels.base)   a notification channel could not deliver
"""

from __future__ import annotations

from runtime.errors import Conflict, FiregridError, Invalid, NotFound

__all__ = ["AlertsError", "Conflict", "Invalid", "NotFound"]


class AlertsError(FiregridError):
    pass
