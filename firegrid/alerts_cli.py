"""`firegrid alerts ...` for people at a terminal: list and show incidents, acknowledge,
arrive, resolve, reopen, and silences. firegrid/cli.py builds the `alerts` group with the
service's own actions (run, report, check-rules), calls add_actions() on it, and run() for
the actions listed in ACTIONS. add_parser() builds a group with these actions only.

The command line acts as an operator with the database's password: it sees every area.
Errors propagate as FiregridError, so the exit code is the error's (firegrid/cli.py).
"""

from __future__ import annotations

import argparse
import os
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeAlias

from alerts import loop, queries, silences
from alerts.errors import Invalid, NotFound
from alerts.queries import Scope
from alerts.rules import load_policy
from runtime import db
from runtime.settings import Settings

ACTIONS = frozenset({"incidents", "show", "ack", "arrive", "confirm", "resolve", "reopen",
                     "silence"})
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

if TYPE_CHECKING:
    # What add_subparsers() returns: argparse has no public name for it, and the class is
    # generic in typeshed only (not subscriptable at run time).
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


def add_parser(sub: Subparsers) -> Subparsers:
    """Add the `alerts` group to the top-level subparsers; return its action subparsers."""
    group = sub.add_parser("alerts", help="fire incidents and silences (and the alert core)")
    actions = group.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    add_actions(actions)
    return actions


def add_actions(actions: Subparsers) -> None:
    """Add the people's actions to the `alerts` group's subparsers (dest alerts_command)."""

    def action(name: str, help: str, under: Subparsers = actions) -> argparse.ArgumentParser:
        parser = under.add_parser(name, help=help)
        parser.add_argument("--actor", default=f"cli:{os.environ.get('USER', 'unknown')}",
                            help="who the audit log records (default cli:$USER)")
        return parser

    lst = action("incidents", "list incidents, newest first")
    lst.add_argument("--state", choices=["open", "resolved", "all"], default="open")
    lst.add_argument("--grid", metavar="GRID_ID")
    lst.add_argument("--community", metavar="COMMUNITY_ID")
    lst.add_argument("--limit", type=int, default=100)
    action("show", "one incident with its alerts, log and pages").add_argument("id", type=int)
    action("ack", "acknowledge: stops the escalation").add_argument("id", type=int)
    action("arrive", "on site (acknowledges too)").add_argument("id", type=int)
    action("confirm", "人工确认 it is a fire: page every level and the fire service now"
           ).add_argument("id", type=int)
    for name in ("ack", "arrive", "confirm"):
        actions.choices[name].add_argument("--note")
    res = action("resolve", "close an incident with its cause and a note")
    res.add_argument("id", type=int)
    res.add_argument("--cause", required=True, choices=loop.CAUSES)
    res.add_argument("--note", required=True, help="what was found and done")
    rop = action("reopen", "reopen a resolved incident; the escalation starts again")
    rop.add_argument("id", type=int)
    rop.add_argument("--note", required=True, help="why it is not over")

    sil = actions.add_parser("silence", help="mute pages for a device, building or grid"
                             ).add_subparsers(dest="silence_command", required=True,
                                              metavar="ACTION")
    add = action("add", "mute pages until --until or for --for", sil)
    target = add.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", metavar="DEVICE_ID")
    target.add_argument("--building", metavar="BUILDING_ID")
    target.add_argument("--grid", metavar="GRID_ID")
    until = add.add_mutually_exclusive_group(required=True)
    until.add_argument("--until", metavar="ISO", help="e.g. 2026-03-02T18:00+08:00 (without "
                                                      "an offset: this machine's time zone)")
    until.add_argument("--for", dest="duration", metavar="DURATION",
                       help="e.g. 90m, 2h, 3d")
    add.add_argument("--reason", required=True)
    action("list", "silences not over yet (--all: every one)", sil).add_argument(
        "--all", action="store_true")
    action("end", "end a silence now", sil).add_argument("id", type=int)


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Carry out one of ACTIONS (firegrid/cli.py handles the service's own actions)."""
    command = args.alerts_command
    if command not in ACTIONS:
        raise AssertionError(f"alerts {command} is not one of firegrid.alerts_cli's actions")
    with db.connect(settings.database, autocommit=True) as conn:
        if command == "incidents":
            rows = queries.list_incidents(conn, scope=Scope.all(), state=args.state,
                                          grid_id=args.grid, community_id=args.community,
                                          limit=args.limit)
            _table(rows)
            return 0
        if command == "silence":
            return _silence(conn, args)
        if command == "ack":
            loop.acknowledge(conn, args.id, args.actor, args.note)
        elif command == "arrive":
            loop.arrive(conn, args.id, args.actor, args.note)
        elif command == "confirm":
            loop.confirm(conn, args.id, args.actor, args.note)
        elif command == "resolve":
            loop.resolve(conn, args.id, args.actor, args.cause, args.note,
                         load_policy(settings.alerts.rules_file))
        elif command == "reopen":
            loop.reopen(conn, args.id, args.actor, args.note)
        row = queries.incident(conn, args.id, Scope.all())
        if row is None:
            raise NotFound("incident", str(args.id))
        _show(row, full=command == "show")
        return 0


def _silence(conn: Any, args: argparse.Namespace) -> int:
    if args.silence_command == "add":
        now = datetime.now(UTC)
        ends = _instant(args.until) if args.until else now + _duration(args.duration)
        row = silences.create(conn, args.actor, device_id=args.device,
                              building_id=args.building, grid_id=args.grid, ends_at=ends,
                              reason=args.reason, now=now)
        print(f"silence {row['id']}: {_target(row)} muted until {_local(row['ends_at'])}")
    elif args.silence_command == "end":
        row = silences.end(conn, args.id, args.actor)
        print(f"silence {row['id']}: {_target(row)} ended {_local(row['ends_at'])}")
    else:
        rows = silences.list_silences(conn, active_only=not args.all, limit=1000)
        print(f"{'ID':>6}  {'TARGET':<28} {'FROM':<16}  {'UNTIL':<16}  {'BY':<16} REASON")
        for r in rows:
            print(f"{r['id']:>6}  {_target(r):<28} {_local(r['starts_at']):<16}  "
                  f"{_local(r['ends_at']):<16}  {r['created_by']:<16} {r['reason']}")
    return 0


# --- parsing and printing -------------------------------------------------------------------

def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise Invalid("until", f"{text!r} is not an ISO date and time") from None
    return value if value.tzinfo else value.astimezone()


def _duration(text: str) -> timedelta:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", text.strip())
    if not match:
        raise Invalid("for", f"{text!r}: use a number and s, m, h or d, e.g. 2h")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def _local(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M") if value else "-"


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def _target(row: dict[str, Any]) -> str:
    for column, noun in (("device_id", "device"), ("building_id", "building"),
                         ("grid_id", "grid")):
        if row[column]:
            return f"{noun} {row[column]}"
    return "?"


def _escalation(row: dict[str, Any]) -> str:
    esc = row["escalation"]
    if row["state"] not in ("raised", "notified"):
        return "-"
    if esc["exhausted"]:
        return "ladder exhausted"
    step = f"{esc['ladder']} rung {esc['rung']}"
    return f"{step}, next {_local(esc['escalate_at'])}" if esc["escalate_at"] else step


def _table(rows: list[dict[str, Any]]) -> None:
    print(f"{'ID':>6}  {'STATE':<12} {'SEVERITY':<9} {'OPENED':<16}  {'GRID':<10} "
          f"{'ACK':>7} {'ARRIVE':>7} {'RESOLVE':>7}  {'ESCALATION':<34} ADDRESS")
    for r in rows:
        print(f"{r['id']:>6}  {r['state']:<12} {r['severity']:<9} {_local(r['opened_at']):<16}"
              f"  {r['grid_id']:<10} {_secs(r['ack_s']):>7} {_secs(r['arrive_s']):>7} "
              f"{_secs(r['resolve_s']):>7}  {_escalation(r):<34} {r['address']}")


def _show(row: dict[str, Any], full: bool) -> None:
    print(f"incident {row['id']}: {row['hazard']} {row['severity']}, {row['state']}"
          + (f" (reopened {row['reopened']}x)" if row["reopened"] else ""))
    print(f"  building   {row['building_id']}, {row['address']}")
    print(f"  area       grid {row['grid_id']} {row['grid_name']}, community "
          f"{row['community_id']} {row['community_name']}")
    print(f"  opened     {_local(row['opened_at'])}; {row['alert_count']} alert(s) from "
          f"{', '.join(row['devices']) or '-'}")
    print(f"  timers     acknowledge {_secs(row['ack_s'])}, arrive {_secs(row['arrive_s'])},"
          f" resolve {_secs(row['resolve_s'])}")
    print(f"  escalation {_escalation(row)}")
    if row["cause"]:
        print(f"  resolved   {row['cause']} by {row['resolved_by']}: {row['note']}")
    if not full:
        return
    print("log:")
    for entry in row["log"]:
        note = entry["detail"].get("note")
        print(f"  {_local(entry['at'])}  {entry['action']:<12} {entry['actor']:<20}"
              f" {entry['from_state'] or '':>12} -> {entry['to_state'] or ''}"
              + (f"  {note}" if note else ""))
    print("pages:")
    for p in row["pages"]:
        print(f"  step {p['step']:<3} {p['channel']:<12} {p['worker_id'] or '-':<12} "
              f"{p['status']:<8} attempts {p['attempts']}"
              + (f"  {p['last_error']}" if p["last_error"] else ""))
    print("alerts:")
    for a in row["alerts"]:
        print(f"  {_local(a['received_at'])}  {a['device_id']:<16} {a['rule']:<16}"
              + ("  muted" if a["muted"] else ""))
