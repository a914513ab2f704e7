"""Changes to the registry: the grid hierarchy, devices, people and the roster.

Every change runs in one transaction that names its actor (`firegrid.actor`), so the
history trigger (migration 0002) records who changed what and when. Functions here take an
autocommit connection and open their own transaction; `changes()` lets a caller such as the
CSV import put several of them into one.

Device credentials are pushed to the broker *inside* the transaction, just before COMMIT:
a broker that refuses rolls the registry back; a COMMIT that fails after the broker took the
change is undone at the broker. So the broker and the registry agree after every call.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime

import psycopg
from psycopg.types.json import Jsonb

from devices.broker import BrokerAuth
from devices.credentials import DeviceCredentials, hash_password, new_password
from devices.errors import Conflict, Invalid, NotFound, Unconfirmed
from devices.models import (
    ROLE_AREA,
    Building,
    Community,
    DevicePlacement,
    Grid,
    NewDevice,
    Replacement,
    Shift,
    Street,
    Worker,
)


@contextmanager
def changes(conn: psycopg.Connection, actor: str) -> Iterator[psycopg.Connection]:
    """One transaction whose changes the history attributes to `actor`."""
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('firegrid.actor', %s, true)", [actor])
            yield conn
    except psycopg.errors.IntegrityError as exc:
        raise translate(exc) from exc


# --- the grid hierarchy -------------------------------------------------------------------

_HIERARCHY = {
    # table: (model, columns)
    "street_offices": (Street, ("id", "name")),
    "communities": (Community, ("id", "street_id", "name")),
    "grids": (Grid, ("id", "community_id", "name", "households")),
    "buildings": (Building, ("id", "grid_id", "address", "lat", "lon", "floors", "households",
                             "use", "contact_name", "contact_phone")),
}


HierarchyRecord = Street | Community | Grid | Building

# Each hierarchy table's columns, id first, in the order upsert writes them.
HIERARCHY_COLUMNS = {table: cols for table, (_, cols) in _HIERARCHY.items()}


def upsert(conn: psycopg.Connection, table: str, rows: Sequence[HierarchyRecord],
           update: Collection[str] | None = None) -> None:
    """Insert or update hierarchy rows by id (streets, communities, grids, buildings).
    An existing row takes only the fields in `update` (default: all), so a file without a
    name column does not rename anything. Unchanged rows are left alone, so re-importing the
    same file adds no history."""
    if not rows:
        return
    _, cols = _HIERARCHY[table]
    names = ", ".join(cols)
    changed = [c for c in cols[1:] if update is None or c in update]
    sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join(['%s'] * len(cols))})"
    if not changed:
        sql += " ON CONFLICT (id) DO NOTHING"
    else:
        sql += (" ON CONFLICT (id) DO UPDATE SET "
                f"{', '.join(f'{c} = EXCLUDED.{c}' for c in changed)}"
                f" WHERE ({', '.join(f'{table}.{c}' for c in changed)}, NULL)"
                f" IS DISTINCT FROM ({', '.join(f'EXCLUDED.{c}' for c in changed)}, NULL)")
    with conn.cursor() as cur:
        cur.executemany(sql, [tuple(getattr(r, c) for c in cols) for r in rows])


def upsert_workers(conn: psycopg.Connection, workers: Sequence[Worker],
                   update: Collection[str] | None = None) -> None:
    """Insert or update workers. An existing worker takes name and role, and of phone,
    channels, active and areas only those in `update` (default: all): a file without an
    areas column leaves everyone's areas alone. Given areas replace the old ones."""
    if not workers:
        return
    changed = ["name", "role"] + [c for c in ("phone", "channels", "active")
                                  if update is None or c in update]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO workers (id, name, role, phone, channels, active)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in changed)
            + f" WHERE ({', '.join(f'workers.{c}' for c in changed)})"
            f" IS DISTINCT FROM ({', '.join(f'EXCLUDED.{c}' for c in changed)})",
            [(w.id, w.name, w.role, w.phone, Jsonb(w.channels), w.active) for w in workers])
        if update is not None and "areas" not in update:
            return
        # Only the areas that really changed are touched, so the history shows them alone.
        cur.executemany("DELETE FROM worker_areas WHERE worker_id = %s"
                        " AND coalesce(grid_id, community_id, street_id) <> ALL(%s::text[])",
                        [(w.id, list(w.areas)) for w in workers])
        rows = []
        for w in workers:
            level = ROLE_AREA[w.role]
            for area in dict.fromkeys(w.areas):
                rows.append((w.id, area if level == "grid" else None,
                             area if level == "community" else None,
                             area if level == "street" else None))
        cur.executemany("INSERT INTO worker_areas (worker_id, grid_id, community_id, street_id)"
                        " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING", rows)


def add_shifts(conn: psycopg.Connection, shifts: Sequence[Shift]) -> None:
    """Add roster shifts; a shift already there (same worker and start) takes the new end."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO roster (worker_id, starts_at, ends_at) VALUES (%s, %s, %s)"
            " ON CONFLICT (worker_id, starts_at) DO UPDATE SET ends_at = EXCLUDED.ends_at"
            " WHERE roster.ends_at <> EXCLUDED.ends_at",
            [(s.worker_id, s.starts_at, s.ends_at) for s in shifts])


# --- devices ------------------------------------------------------------------------------

_DEVICE_COLS = ("id", "kind", "model", "firmware", "building_id", "floor", "location",
                "gateway_id", "installed_at", "heartbeat_s", "password_hash", "password_salt")


def issue_credentials(devices: Sequence[NewDevice], iterations: int,
                      progress: Callable[[int, int], None] | None = None,
                      ) -> tuple[list[DeviceCredentials], list[tuple[str, str]]]:
    """Passwords (given or generated) and their hashes. Hashing is most of the cost of a
    bulk import; hashlib's PBKDF2 releases the GIL, so threads use every core. `progress`
    hears (hashed, total) every 256 devices and at the end."""
    creds = [DeviceCredentials(d.id, d.kind, d.password or new_password()) for d in devices]
    if len(creds) < 64:
        hashes = [hash_password(c.password, iterations) for c in creds]
    else:
        hashes = []
        # 256 to a task: a thread pool's map ignores chunksize, and a future per password
        # cost more than a tenth of the hashing itself.
        chunks = [creds[i:i + 256] for i in range(0, len(creds), 256)]
        with ThreadPoolExecutor() as pool:
            for done in pool.map(
                    lambda chunk: [hash_password(c.password, iterations) for c in chunk], chunks):
                hashes += done
                if progress is not None:
                    progress(len(hashes), len(creds))
    if progress is not None and creds:
        progress(len(hashes), len(creds))
    return creds, hashes


def provision(conn: psycopg.Connection, broker: BrokerAuth, devices: Sequence[NewDevice],
              actor: str, iterations: int,
              before: Callable[[psycopg.Connection], object] | None = None,
              progress: Callable[[int, int], None] | None = None,
              ) -> list[DeviceCredentials]:
    """Register devices with fresh credentials, in one transaction with `before` (the CSV
    import writes the hierarchy and people there). Returns the credentials, the only time
    the passwords exist outside the devices themselves."""
    creds, hashes = issue_credentials(devices, iterations, progress)
    pushed = False
    try:
        with changes(conn, actor):
            if before is not None:
                before(conn)
            _insert_devices(conn, devices, hashes)
            broker.add_devices(creds)
            pushed = True
    except BaseException as exc:
        if not pushed:
            raise
        # The COMMIT itself failed. A refused COMMIT (a constraint checked at the end) rolled
        # back for sure: take the accounts back off the broker. A dropped connection leaves
        # the outcome unknown: the devices may be registered, so their accounts stay.
        if isinstance(exc, (psycopg.errors.IntegrityError, Conflict, Invalid, NotFound)):
            broker.remove_devices([c.device_id for c in creds])
            raise
        raise Unconfirmed(
            f"the database did not confirm the registration of {len(creds)} device(s) "
            f"({exc}); their broker accounts were kept. Check with `firegrid broker "
            "reconcile` before registering them again") from exc
    return creds


def _insert_devices(conn: psycopg.Connection, devices: Sequence[NewDevice],
                    hashes: list[tuple[str, str]]) -> None:
    if not devices:
        return
    taken = conn.execute("SELECT id FROM devices WHERE id = ANY(%s) LIMIT 1",
                         [[d.id for d in devices]]).fetchone()
    if taken:
        raise Conflict(f"device {taken[0]!r} is already registered", field="id")
    # COPY: a whole deployment is tens of thousands of rows; the history trigger still
    # fires per row, so every registration is recorded.
    with conn.cursor() as cur, cur.copy(
            f"COPY devices ({', '.join(_DEVICE_COLS)}) FROM STDIN") as copy:
        for d, (digest, salt) in zip(devices, hashes, strict=True):
            copy.write_row((d.id, d.kind, d.model, d.firmware, d.building_id, d.floor,
                            d.location, d.gateway_id, d.installed_at or datetime.now().astimezone(),
                            d.heartbeat_s, digest, salt))
    _check_placement(conn, [d.id for d in devices])


def _check_placement(conn: psycopg.Connection, ids: list[str]) -> None:
    """What the foreign keys cannot say: the floor exists in the building, and a gateway
    is a live gateway other than the device itself. (The CSV import reports these by row
    before writing; this catches every other way in.)"""
    row = conn.execute(
        "SELECT d.id, d.floor, b.floors, b.id FROM devices d JOIN buildings b"
        " ON b.id = d.building_id WHERE d.id = ANY(%s) AND d.floor > b.floors LIMIT 1",
        [ids]).fetchone()
    if row:
        raise Invalid("floor", f"floor {row[1]} but building {row[3]!r} has {row[2]} floors")
    row = conn.execute(
        "SELECT d.id, d.gateway_id FROM devices d LEFT JOIN devices g ON g.id = d.gateway_id"
        " WHERE d.id = ANY(%s) AND d.gateway_id IS NOT NULL"
        " AND (g.kind IS DISTINCT FROM 'gateway' OR g.state = 'retired' OR g.id = d.id)"
        " LIMIT 1", [ids]).fetchone()
    if row:
        raise Invalid("gateway_id", f"{row[1]!r} is not a gateway in service")


def move_device(conn: psycopg.Connection, device_id: str, to: DevicePlacement,
                actor: str) -> None:
    with changes(conn, actor):
        _live_device(conn, device_id)
        conn.execute("UPDATE devices SET building_id = %s, floor = %s, location = %s"
                     " WHERE id = %s", [to.building_id, to.floor, to.location, device_id])
        _check_placement(conn, [device_id])


def set_state(conn: psycopg.Connection, device_id: str, state: str, actor: str) -> None:
    """Put a device into maintenance or back to active (retiring is retire_device)."""
    if state not in ("active", "maintenance"):
        raise Invalid("state", "must be 'active' or 'maintenance' (use retire to retire)")
    with changes(conn, actor):
        _live_device(conn, device_id)
        conn.execute("UPDATE devices SET state = %s WHERE id = %s", [state, device_id])


def rotate_credentials(conn: psycopg.Connection, broker: BrokerAuth, device_id: str,
                       actor: str, iterations: int, password: str | None = None
                       ) -> DeviceCredentials:
    """A new password; the old one is refused from the moment this returns."""
    password = password or new_password()
    digest, salt = hash_password(password, iterations)
    with changes(conn, actor):
        kind = _live_device(conn, device_id)
        conn.execute("UPDATE devices SET password_hash = %s, password_salt = %s,"
                     " credentials_rotated_at = now() WHERE id = %s",
                     [digest, salt, device_id])
        broker.set_password(device_id, password, kind)
    return DeviceCredentials(device_id, kind, password)


def retire_device(conn: psycopg.Connection, broker: BrokerAuth, device_id: str,
                  actor: str) -> None:
    """Retire for good: the hash is dropped, the broker account deleted and any connected
    session kicked. The row and its history stay."""
    with changes(conn, actor):
        _live_device(conn, device_id)
        conn.execute("UPDATE devices SET state = 'retired', retired_at = now(),"
                     " password_hash = NULL, password_salt = NULL WHERE id = %s", [device_id])
        broker.remove_devices([device_id])


def replace_device(conn: psycopg.Connection, broker: BrokerAuth, old_id: str,
                   new: Replacement, actor: str, iterations: int) -> DeviceCredentials:
    """Swap a device for a new unit in one transaction: the new id takes the old one's kind,
    building, floor, room, gateway and heartbeat and names it in `replaces` (the history
    link); the old one is retired (hash dropped, broker account deleted, session kicked);
    devices behind a replaced gateway move to the new one; a quarantine entry of the new
    id (it was already talking) is claimed. Returns the new credentials, shown once.

    The broker takes the new account and loses the old one just before COMMIT, as in
    provision(): a refusal, or a COMMIT that is refused, takes the new account back off."""
    password = new.password or new_password()
    digest, salt = hash_password(password, iterations)
    added = False
    try:
        with changes(conn, actor):
            kind = _live_device(conn, old_id)
            # One INSERT, so the history's row for the new unit names what it replaces.
            conn.execute(
                "INSERT INTO devices (id, kind, model, firmware, building_id, floor, location,"
                " gateway_id, heartbeat_s, password_hash, password_salt, replaces)"
                " SELECT %(new)s, kind, coalesce(nullif(%(model)s, ''), model),"
                " coalesce(nullif(%(firmware)s, ''), firmware), building_id, floor, location,"
                " gateway_id, heartbeat_s, %(digest)s, %(salt)s, id"
                " FROM devices WHERE id = %(old)s",
                {"new": new.id, "old": old_id, "model": new.model, "firmware": new.firmware,
                 "digest": digest, "salt": salt})
            if kind == "gateway":
                conn.execute("UPDATE devices SET gateway_id = %s WHERE gateway_id = %s"
                             " AND state <> 'retired'", [new.id, old_id])
            conn.execute("UPDATE devices SET state = 'retired', retired_at = now(),"
                         " password_hash = NULL, password_salt = NULL WHERE id = %s", [old_id])
            conn.execute("UPDATE quarantine SET claimed_at = now(), claimed_by = %s"
                         " WHERE device_id = %s AND claimed_at IS NULL", [actor, new.id])
            creds = DeviceCredentials(new.id, kind, password)
            broker.add_devices([creds])
            added = True
            broker.remove_devices([old_id])
    except BaseException as exc:
        if not added:
            raise
        if not isinstance(exc, psycopg.OperationalError):
            # Rolled back for sure (the broker refused, or the database refused the COMMIT).
            broker.remove_devices([new.id])
            raise
        raise Unconfirmed(
            f"the database did not confirm the replacement of {old_id!r} by {new.id!r} "
            f"({exc}); the new broker account was kept. Check with `firegrid broker "
            "reconcile` before trying again") from exc
    return creds


def reconcile(conn: psycopg.Connection, accounts: set[str]) -> tuple[list[str], list[str]]:
    """Compare the broker's device accounts with the registry, after a change whose COMMIT
    went unconfirmed. Returns (stale, missing): accounts whose device is retired or not
    registered (remove them), and live devices without an account (rotate their
    credentials: that recreates the account)."""
    states: dict[str, str] = dict(conn.execute("SELECT id, state FROM devices").fetchall())
    stale = sorted(a for a in accounts if states.get(a, "retired") == "retired")
    missing = sorted(i for i, state in states.items()
                     if state != "retired" and i not in accounts)
    return stale, missing


def _live_device(conn: psycopg.Connection, device_id: str) -> str:
    # NO KEY UPDATE: enough to serialise changes to this device, without blocking the
    # liveness flush's foreign-key lock on it while the broker works.
    row = conn.execute("SELECT kind, state FROM devices WHERE id = %s FOR NO KEY UPDATE",
                       [device_id]).fetchone()
    if row is None:
        raise NotFound("device", device_id)
    if row[1] == "retired":
        raise Conflict(f"device {device_id!r} is retired")
    kind: str = row[0]
    return kind


# --- errors -------------------------------------------------------------------------------

_KEY = re.compile(r"Key \((?P<cols>[^)]*)\)=\((?P<vals>.*)\)")
_TABLE_NOUN = {"buildings": "building", "grids": "grid", "communities": "community",
               "street_offices": "street office", "devices": "device", "workers": "worker"}


def translate(exc: psycopg.errors.IntegrityError) -> NotFound | Conflict | Invalid:
    """Turn a constraint violation into NotFound/Conflict/Invalid naming the field."""
    detail = exc.diag.message_detail or ""
    match = _KEY.search(detail)
    column = match.group("cols").split(", ")[-1] if match else None
    value = match.group("vals") if match else "?"
    if isinstance(exc, psycopg.errors.ForeignKeyViolation) and column:
        table = re.search(r'table "([^"]+)"', detail)
        noun = _TABLE_NOUN.get(table.group(1), "row") if table else "row"
        if "is still referenced" in detail:
            return Conflict(f"{noun} {value!r} is still in use", field=column)
        return NotFound(noun, value, field=column)
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return Conflict(f"{column or 'key'} {value!r} already exists", field=column)
    constraint = exc.diag.constraint_name or ""
    field = constraint.split("_", 1)[1].rsplit("_", 1)[0] if constraint.count("_") >= 2 else "value"
    return Invalid(field, exc.diag.message_primary or str(exc))
