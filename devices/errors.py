"""The devices package's errors, translated once at each edge (CLI exit code, HTTP status).

    runtime.errors: NotFound, Conflict, Invalid   shared meanings, re-exported here
    DevicesError (runtime.FiregridError)
    ├── ImportRejected    a CSV import found problems; nothing was written (exit code 2)
    ├── BrokerAuthError   the broker refused or did not answer a credentials command; the
    │                     registry change was rolled back (HTTP 503, exit code 3); repeat it
    └── Unconfirmed       the COMMIT after a broker change was not confirmed (connection
                          lost): the change may or may not be in the registry; the broker
                          was left as it is (HTTP 503, exit code 3); reconcile
"""

from __future__ import annotations

from typing import Any

from runtime.errors import Conflict, FiregridError, Invalid, NotFound

__all__ = ["BrokerAuthError", "Conflict", "DevicesError", "ImportRejected", "Invalid",
           "NotFound", "Unconfirmed"]


class DevicesError(FiregridError):
    pass


class ImportRejected(DevicesError):
    exit_code = 2

    def __init__(self, problems: list[Any]) -> None:
        super().__init__(f"import rejected: {len(problems)} problem(s); nothing was written")
        self.problems = problems


class BrokerAuthError(DevicesError):
    exit_code = 3


class Unconfirmed(DevicesError):
    exit_code = 3
