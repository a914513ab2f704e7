"""The devices package's errors, translated once at each edge (CLI exit code, HTTP status).

    DevicesError (runtime.FiregridError)
    ├── NotFound          a device, building, worker ... with that id does not exist (HTTP 404)
    ├── Conflict          the change contradicts the registry: duplicate id, retired device,
    │                     a building still in use (HTTP 409)
    ├── Invalid           a field value is wrong; `field` names it (HTTP 422, exit code 2)
    ├── ImportRejected    a CSV import found problems; nothing was written (exit code 2)
    ├── BrokerAuthError   the broker refused or did not answer a credentials command; the
    │                     registry change was rolled back (HTTP 503, exit code 3); repeat it
    └── Unconfirmed       the COMMIT after a broker change was not confirmed (connection
                          lost): the change may or may not be in the registry; the broker
                          was left as it is (HTTP 503, exit code 3); reconcile
"""

from __future__ import annotations

from runtime.errors import FiregridError


class DevicesError(FiregridError):
    pass


class NotFound(DevicesError):
    exit_code = 2  # the command line named something that is not there

    def __init__(self, what: str, ident: str, field: str | None = None) -> None:
        super().__init__(f"{what} {ident!r} does not exist")
        self.field = field


class Conflict(DevicesError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Invalid(DevicesError):
    exit_code = 2

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ImportRejected(DevicesError):
    exit_code = 2

    def __init__(self, problems: list) -> None:
        super().__init__(f"import rejected: {len(problems)} problem(s); nothing was written")
        self.problems = problems


class BrokerAuthError(DevicesError):
    exit_code = 3


class Unconfirmed(DevicesError):
    exit_code = 3
