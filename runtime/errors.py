"""The firegrid error tree shared by the CLI, the API and the services.

    FiregridError               anything firegrid raises on purpose (exit code 1)
    ├── ConfigError             a setting is missing or invalid (exit code 2)
    ├── UnavailableError        a broker or database cannot be reached (exit code 3)
    ├── MigrationError          the schema cannot be brought up to date (exit code 1)
    ├── NotFound                a device, building, incident ... with that id does not exist,
    │                           or lies outside the caller's area (HTTP 404; 422 naming the
    │                           field when the id came in a request body; exit code 2)
    ├── Conflict                the change contradicts what is stored: a duplicate id, a
    │                           transition the state does not allow (HTTP 409)
    └── Invalid                 a field value is wrong; `field` names it (HTTP 422, exit 2)

Each package adds its own errors under its own root (devices.errors, alerts.errors,
ingest.errors, simulators.errors) and raises these three where it means the same thing.
Library errors (psycopg, paho, pydantic) are translated into this tree in one place per
package, so the CLI maps each class to one exit code and the API to one HTTP answer.
"""

from __future__ import annotations


class FiregridError(Exception):
    exit_code = 1


class ConfigError(FiregridError):
    exit_code = 2


class UnavailableError(FiregridError):
    exit_code = 3


class MigrationError(FiregridError):
    exit_code = 1


class NotFound(FiregridError):
    exit_code = 2  # the command line named something that is not there

    def __init__(self, what: str, ident: str, field: str | None = None) -> None:
        super().__init__(f"{what} {ident!r} does not exist")
        self.field = field


class Conflict(FiregridError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Invalid(FiregridError):
    exit_code = 2

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def first_line(exc: BaseException) -> str:
    """An error's message for a one-line log: its first line, or its repr when it has none
    (psycopg's messages run over several lines; an OSError may have no text at all)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else repr(exc)
