"""What a route gets from the app: a database connection, the broker seam, the settings.

create_app puts the pool, broker and settings on app.state; these dependencies hand them
to routes, so a route module never reaches for globals and tests build as many apps as
they like."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

import psycopg
from fastapi import Depends, Request

from devices.broker import BrokerAuth
from runtime.settings import Settings


def _conn(request: Request) -> Iterator[psycopg.Connection]:
    # Autocommit: registry functions open their own transactions; reads need none.
    with request.app.state.pool.connection() as conn:
        yield conn


def _broker(request: Request) -> BrokerAuth:
    broker: BrokerAuth = request.app.state.broker
    return broker


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


Conn = Annotated[psycopg.Connection, Depends(_conn)]
Broker = Annotated[BrokerAuth, Depends(_broker)]
AppSettings = Annotated[Settings, Depends(_settings)]
