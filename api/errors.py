"""The one place where errors become HTTP answers.

    NotFound (a path id)               404  {"detail": "device 'X' does not exist"}
    NotFound (an id inside the body)   422  {"detail": [{"loc": ["body", "building_id"], ...}]}
    Invalid                            422  the same list shape, naming the field
    Conflict                           409  {"detail": "...", "field": "id" or null}
    BrokerAuthError                    503  the broker did not take the change; repeat it
    Unconfirmed                        503  the database did not confirm the change; reconcile
    psycopg data errors                422  a value the database cannot store (e.g. NUL)
    database unreachable               503

422 answers have the shape FastAPI gives request validation errors, so a client reads one
format: `detail` is a list of {loc, msg, type} and `loc` ends with the field's name.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from devices import registry
from devices.errors import BrokerAuthError, Unconfirmed
from runtime.errors import Conflict, Invalid, NotFound

log = logging.getLogger(__name__)


def _field_error(field: str | None, msg: str, kind: str) -> JSONResponse:
    loc = ["body", field] if field else ["body"]
    return JSONResponse({"detail": [{"loc": loc, "msg": msg, "type": kind}]}, status_code=422)


def _not_found(_: Request, exc: NotFound) -> JSONResponse:
    if exc.field:  # a referenced id in the request: the technician must see which field
        return _field_error(exc.field, str(exc), "not_found")
    return JSONResponse({"detail": str(exc)}, status_code=404)


def _invalid(_: Request, exc: Invalid) -> JSONResponse:
    return _field_error(exc.field, str(exc), "invalid")


def _conflict(_: Request, exc: Conflict) -> JSONResponse:
    return JSONResponse({"detail": str(exc), "field": exc.field}, status_code=409)


def _broker(_: Request, exc: BrokerAuthError) -> JSONResponse:
    log.warning("broker refused a credentials change: %s", exc)
    return JSONResponse({"detail": f"the broker did not take the change; the registry was "
                                   f"not changed; repeat the request: {exc}"},
                        status_code=503, headers={"Retry-After": "10"})


def _unconfirmed(_: Request, exc: Unconfirmed) -> JSONResponse:
    log.error("registry change not confirmed: %s", exc)
    return JSONResponse({"detail": str(exc)}, status_code=503)


def _request_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's own answer, except that it echoes the input: Python's JSON parser accepts
    # NaN and Infinity, which JSON cannot carry back, and that turned a 422 into a 500.
    return JSONResponse({"detail": _finite(jsonable_encoder(exc.errors()))}, status_code=422)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _integrity(request: Request, exc: psycopg.IntegrityError) -> JSONResponse:
    # Registry functions translate their own; this catches writes outside them (tickets).
    translated = registry.translate(exc)
    if isinstance(translated, NotFound):
        return _not_found(request, translated)
    if isinstance(translated, Conflict):
        return _conflict(request, translated)
    return _invalid(request, translated)


def _data(_: Request, exc: psycopg.DataError) -> JSONResponse:
    # Values pydantic let through that PostgreSQL cannot store, such as a NUL character.
    return _field_error(None, f"a value cannot be stored: {str(exc).splitlines()[0]}",
                        "data_error")


def _unavailable(_: Request, exc: psycopg.OperationalError) -> JSONResponse:
    log.warning("database unavailable: %s", exc)
    return JSONResponse({"detail": "the database is unavailable"}, status_code=503,
                        headers={"Retry-After": "10"})


def install(app: FastAPI) -> None:
    for exc_class, handler in ((RequestValidationError, _request_invalid),
                               (NotFound, _not_found), (Invalid, _invalid),
                               (Conflict, _conflict),
                               (BrokerAuthError, _broker),
                               (Unconfirmed, _unconfirmed),
                               (psycopg.IntegrityError, _integrity),
                               (psycopg.DataError, _data),
                               (psycopg.OperationalError, _unavailable)):
        # Starlette types a handler as taking any Exception, not the class it is added for.
        app.add_exception_handler(exc_class, handler)  # type: ignore[arg-type]
