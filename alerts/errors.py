"""The alerts package's errors, translated once at each edge (CLI exit code, HTTP status).

    AlertsError (runtime.FiregridError)
    ├── NotFound     an incident, silence ... with that id does not exist, or is outside the
    │                caller's area (HTTP 404: nobody learns what lies outside their grid)
    ├── Conflict     the transition is not possible from the incident's state, or another
    │                open incident holds the key (HTTP 409)
    └── Invalid      a field value is wrong; `field` names it (HTTP 422, exit code 2)
"""

from __future__ import annotations

from runtime.errors import FiregridError


class AlertsError(FiregridError):
    pass


class NotFound(AlertsError):
    exit_code = 2

    def __init__(self, what: str, ident: str, field: str | None = None) -> None:
        super().__init__(f"{what} {ident!r} does not exist")
        self.field = field


class Conflict(AlertsError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Invalid(AlertsError):
    exit_code = 2

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
