"""The `firegrid` command. Thin: parse arguments, load settings, call one function, map the
error tree to exit codes. Everything else lives in the packages."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from runtime.errors import FiregridError
from runtime.settings import Settings, load_settings

EPILOG = """\
exit codes:
  0  done (or stopped cleanly by SIGTERM / Ctrl-C)
  1  failed while running (see the log)
  2  bad command line, bad setting or bad config file (the message names it)
  3  the broker or database cannot be reached

settings come from FIREGRID_* environment variables (nested with __, e.g.
FIREGRID_MQTT__HOST, FIREGRID_DATABASE__URL), over an optional TOML file given with
--config or FIREGRID_CONFIG; deploy/firegrid.example.toml lists every setting.
"""


def _version() -> str:
    """The installed distribution's version (pyproject.toml); a source tree that was never
    installed says so instead of guessing."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("firegrid")
    except PackageNotFoundError:
        return "(not installed: pip install -e .)"


def _parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="firegrid",
        description="firegrid: telemetry and fire alerting for smoke detectors and cameras.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    top.add_argument("--config", metavar="FILE", default=os.environ.get("FIREGRID_CONFIG"),
                     help="TOML settings file (environment variables override it)")
    top.add_argument("--version", action="version", version=f"firegrid {_version()}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ing = sub.add_parser("ingest", help="consume device messages from MQTT into the database",
                         description="Run the ingest service until SIGTERM/Ctrl-C, then drain.")
    ing.add_argument("--workers", type=int, default=1, metavar="N",
                     help="run N processes on the shared subscription, each with client id "
                          "<client_id>-<i> and metrics port <metrics_port>+<i> (default 1)")

    db = sub.add_parser("db", help="database schema").add_subparsers(
        dest="db_command", required=True, metavar="ACTION")
    mig = db.add_parser("migrate", help="create or upgrade the schema (idempotent)")
    mig.add_argument("--create-db", action="store_true",
                     help="create the database first if it does not exist")
    db.add_parser("status", help="show the schema version and whether TimescaleDB is used")

    cfg = sub.add_parser("config", help="settings").add_subparsers(dest="config_command",
                                                                   required=True, metavar="ACTION")
    cfg.add_parser("check", help="validate settings and print them (secrets hidden)")

    proto = sub.add_parser("protocol", help="wire protocol").add_subparsers(
        dest="protocol_command", required=True, metavar="ACTION")
    schemas = proto.add_parser("schemas", help="write the JSON Schema files")
    schemas.add_argument("--out", type=Path, default=Path("docs/schemas"))

    dev = sub.add_parser("devices", help="the device registry").add_subparsers(
        dest="devices_command", required=True, metavar="ACTION")
    imp = dev.add_parser(
        "import", help="register hierarchy, workers, roster and devices from CSV files",
        description="Check every row of every file, then write all of them in one "
                    "transaction, or nothing. Problems are listed as FILE:LINE: COLUMN: "
                    "message. docs/field-guide.md describes the four kinds of file.")
    imp.add_argument("files", nargs="+", type=Path, metavar="FILE.csv")
    imp.add_argument("--dry-run", action="store_true", help="check and report; write nothing")
    imp.add_argument("--credentials-out", type=Path, metavar="FILE",
                     help="where to write generated device passwords (mode 0600); needed "
                          "when a devices file has no password column")
    imp.add_argument("--actor", default=f"cli:{os.environ.get('USER', 'unknown')}",
                     help="who the history records as making the change (default cli:$USER)")
    imp.add_argument("--dynsec-file", type=Path, metavar="FILE",
                     help="first load of a large site: write the device accounts straight into "
                          "Mosquitto's dynamic-security file (Mosquitto must be stopped; "
                          "docs/broker-auth.md) instead of using the control topic")
    imp.add_argument("--tz", default="Asia/Shanghai",
                     help="time zone of times written without an offset (default Asia/Shanghai)")

    dev.add_parser("monitor", help="open and close maintenance tickets (offline, battery, "
                   "tamper, fault) until SIGTERM",
                   description="Every devices.monitor_interval_s: offline detection per kind "
                               "and one ticket per device and condition. Several monitors "
                               "may run; the database keeps one open ticket per condition.")

    brk = sub.add_parser("broker", help="broker accounts").add_subparsers(
        dest="broker_command", required=True, metavar="ACTION")
    brk.add_parser("setup", help="prepare Mosquitto's dynamic-security plugin: deny by "
                   "default, firegrid's roles, and the service account mqtt.username",
                   description="Safe to run again. Needs broker_auth.mode = mosquitto-dynsec "
                               "and the plugin's admin (broker_auth.admin_username/password).")
    rec = brk.add_parser("reconcile", help="compare the broker's device accounts with the "
                         "registry; --apply removes accounts of retired or unknown devices")
    rec.add_argument("--apply", action="store_true", help="remove the stale accounts")

    api = sub.add_parser("api", help="the provisioning HTTP API").add_subparsers(
        dest="api_command", required=True, metavar="ACTION")
    api.add_parser("serve", help="serve the API on api.host:api.port until SIGTERM "
                   "(OpenAPI at /docs)")
    token = api.add_parser("token", help="API tokens").add_subparsers(
        dest="token_command", required=True, metavar="ACTION")
    create = token.add_parser("create", help="create a token and print it (shown only once)")
    create.add_argument("--name", required=True, help="who or what holds it, e.g. tech-zhang")
    create.add_argument("--role", required=True,
                        choices=["admin", "field_technician", "street_duty", "community_duty",
                                 "grid_leader", "grid_worker"])
    create.add_argument("--worker", metavar="WORKER_ID",
                        help="the worker it belongs to; required for grid_worker and "
                             "grid_leader, and needed by every role but admin to log in to "
                             "the duty console")
    revoke = token.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id", type=int)

    _alerts_parser(sub)

    sim = sub.add_parser(
        "simulate", help="run a street of simulated devices and scenarios against the broker",
        description="Every device on its own MQTT connection with its own credentials, "
                    "scenarios on a compressed clock, and a ground-truth file of what was "
                    "published and which incidents happened (docs/simulators.md).")
    sim.add_argument("--preset", default="small", help="street to simulate: tiny, small or "
                     "street (default small; `street` is the full deployment)")
    sim.add_argument("--scenario", action="append", default=[], metavar="NAME|FILE.toml",
                     help="built-in scenario (fire, cooking, outage, hostile, tamper, "
                          "battery, flapping, flood) or a scenario file; repeat to combine")
    sim.add_argument("--speed", type=float, default=60.0,
                     help="simulated seconds per real second (default 60)")
    sim.add_argument("--seed", type=int, default=1, help="the street and the randomness")
    sim.add_argument("--truth", type=Path, metavar="FILE.jsonl",
                     help="write the ground truth (published messages, incidents) here")
    sim.add_argument("--people-api", metavar="URL",
                     help="with a scenario's [people] table: the registry's grid workers and"
                          " duty officers get their pages and act through the API at URL, in"
                          " real time (use --speed 1); what each did goes into the truth")
    sim.add_argument("--seconds", type=float, metavar="S",
                     help="simulated seconds to run (default: until the scenarios end); "
                          "at --speed 600, 3600 takes 6 s")
    sim.add_argument("--mode", choices=["per-device", "multiplexed"], default="per-device",
                     help="per-device: every device its own connection and credentials "
                          "(realism, ACLs exercised); multiplexed: all devices over a few "
                          "connections with the mqtt.username account (raw load)")
    sim.add_argument("--connections", type=int, default=4,
                     help="shared connections in multiplexed mode (default 4)")
    sim.add_argument("--source-addr", action="append", default=[], metavar="ADDR",
                     help="bind device connections to these local addresses, e.g. 127.0.0.2 "
                          "(repeat; one source address gives ~28,000 connections to a port)")
    sim.add_argument("--keepalive", type=int, metavar="S",
                     help="the devices' MQTT keepalive (default mqtt.keepalive_s)")

    demo = sub.add_parser(
        "demo", help="run broker, database, ingest, alerts, console and simulated devices locally",
        description="Everything on this machine, private: starts its own Mosquitto and "
        "PostgreSQL under --state-dir (kept between runs, on the same ports when free) and never "
        "uses a broker or database already answering on the default ports unless told to "
        "(--use-services). Migrates, registers the demo street (`firegrid simulate --preset "
        "small --seed 7`), runs ingest, the alert core, the API and console and a calm fleet "
        "of simulated devices, and prints rows as they arrive. It writes <state-dir>/demo.env: "
        "`. .local/demo.env` in another terminal points firegrid, mosquitto_sub -p "
        "\"$FIREGRID_MQTT__PORT\" and psql at the running demo.")
    demo.add_argument("--devices", type=int, default=300,
                      help="simulate at most this many of the registered devices (default 300;"
                           " 0: none, the demo only waits for `firegrid simulate`)")
    demo.add_argument("--rate", type=float, default=100.0, help="messages per second (default 100)")
    demo.add_argument("--seconds", type=float, default=0, help="stop after this long (0 = Ctrl-C)")
    demo.add_argument("--state-dir", type=Path, default=Path(".local"),
                      help="where the private broker and database live, with demo.json and "
                           "demo.env (default .local)")
    demo.add_argument("--use-services", action="store_true",
                      help="use the configured broker and database (FIREGRID_MQTT__*, "
                           "FIREGRID_DATABASE__URL or --config) instead of private ones; "
                           "exit 3 when they do not answer")
    demo.add_argument("--false-alarms", type=_fraction, default=0.0, metavar="FRACTION",
                      help="fraction of the fleet's messages that are random alarms (default 0:"
                           " calm, alarms come from `firegrid simulate --scenario`)")
    demo.add_argument("--malformed", type=_fraction, default=0.0, metavar="FRACTION",
                      help="fraction of the fleet's messages that are malformed on purpose, "
                           "for dead_letters (default 0)")
    return top


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction between 0 and 1")
    return value


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings(args.config)
        logging.basicConfig(
            level=settings.log_level, stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        return _dispatch(args, settings)
    except FiregridError as exc:
        print(f"firegrid: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 0


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "ingest":
        if args.workers > 1:
            from ingest.workers import run_workers
            return run_workers(settings, args.workers, args.config)
        return _run_ingest(settings)
    if args.command == "db":
        from runtime import db, migrate
        if args.db_command == "migrate":
            if args.create_db and db.ensure_database(settings.database):
                print("created database")
            with _progress() as progress:
                report = migrate.migrate(settings.database,
                                         max_age_days=settings.ingest.max_age_days,
                                         progress=progress)
            print(f"schema up to date ({len(report.applied)} applied; path: {report.flavour})")
            for change in report.changes:
                print(f"policy changed: {change}")
            return 0
        from runtime import timescale
        with db.connect(settings.database) as conn:
            print(f"schema version {migrate.current_version(conn)}")
            version = timescale.installed_version(conn)
            if version is None:
                print("flavour: PostgreSQL (plain tables and views; no TimescaleDB here)")
                return 0
            print(f"flavour: TimescaleDB {version}")
            for job, proc, table, status, runs, failures in timescale.job_health(conn):
                print(f"  job {job} {proc} {table or '-'}: last run {status or 'never'},"
                      f" {runs} runs, {failures} failures")
        return 0
    if args.command == "config":
        # The rules file is a path in the settings: it must exist and parse, checked by the
        # alert core's own loader (ConfigError naming the file or the bad rule).
        from alerts.rules import load_policy
        from runtime.errors import ConfigError
        try:
            load_policy(settings.alerts.rules_file)
        except ConfigError as exc:
            raise ConfigError(f"告警规则文件有误 alerts.rules_file (FIREGRID_ALERTS__RULES_FILE):"
                              f" {exc}") from exc
        print(json.dumps(settings.model_dump(mode="json"), indent=2))
        return 0
    if args.command == "protocol":
        from protocol.schema import write_schemas
        for path in write_schemas(args.out):
            print(path)
        return 0
    if args.command == "devices":
        return _devices(args, settings)
    if args.command == "broker":
        return _broker(args, settings)
    if args.command == "api":
        return _api(args, settings)
    if args.command == "simulate":
        return _simulate(args, settings)
    if args.command == "alerts":
        return _alerts(args, settings)
    if args.command == "demo":
        from firegrid.demo import Noise, run_demo
        return run_demo(settings, devices=args.devices, rate=args.rate, seconds=args.seconds,
                        state_dir=args.state_dir, use_services=args.use_services,
                        noise=Noise(args.false_alarms, args.malformed))
    raise AssertionError(args.command)


def _devices(args: argparse.Namespace, settings: Settings) -> int:
    from devices import importer
    from devices.broker import BrokerAuth, broker_auth
    from devices.errors import ImportRejected
    from runtime import db
    if args.devices_command == "import":
        broker: BrokerAuth
        if args.dynsec_file and not args.dry_run:
            from devices.dynsec import DynsecFile
            broker = DynsecFile(args.dynsec_file, settings.mqtt)
        else:
            broker = broker_auth(settings)
        try:
            with db.connect(settings.database, autocommit=True) as conn, \
                    _progress() as progress:
                result = importer.run_import(
                    conn, broker, args.files, actor=args.actor,
                    iterations=settings.broker_auth.hash_iterations, dry_run=args.dry_run,
                    credentials_out=args.credentials_out, tz=args.tz, progress=progress)
        except ImportRejected as exc:
            for line in importer.describe(exc):
                print(line, file=sys.stderr)
            return exc.exit_code
        finally:
            broker.close()
        verb = "将写入 would write" if args.dry_run else "已写入 wrote"
        print(f"{verb} {result.plan.summary() or '无 nothing'}"
              + (f"; 未变 {result.plan.unchanged} unchanged" if result.plan.unchanged else "")
              + ("; 演练，未写入 nothing written (dry run)" if args.dry_run else ""))
        if result.credentials_file:
            print(f"设备密码 device passwords: {result.credentials_file} (请妥善保管，别处没有 "
                  "keep it safe; they are not stored anywhere else)")
        return 0
    if args.devices_command == "monitor":
        import threading

        from prometheus_client import start_http_server

        from devices.monitor import run_monitor
        if settings.devices.metrics_port:
            start_http_server(settings.devices.metrics_port, addr=settings.ingest.metrics_host)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        run_monitor(settings, stop)
        return 0
    raise AssertionError(args.devices_command)


class _Bars(Protocol):
    """What _progress yields: the library's progress callbacks, with or without a detail
    (devices.importer's take three arguments; runtime.migrate's and alerts.reports' four)."""

    def __call__(self, step: str, done: int, total: int, detail: str = "") -> None: ...


def _no_bars(step: str, done: int, total: int, detail: str = "") -> None:
    pass


@contextmanager
def _progress() -> Iterator[_Bars]:
    """Progress bars, one per step, while a long command works (a street's import takes
    half a minute, a migration that makes a large readings table a hypertable longer): on a
    terminal only, so logs, pipes and files get the summary alone. A step's detail (the
    migration being applied, the report's query) follows its name. The bars go away when
    the command is done; the command's own lines stay. While they are drawn, log lines
    bound for the terminal are printed above them, not through them."""
    if not sys.stdout.isatty():
        yield _no_bars
        return
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskID,
        TextColumn,
        TimeElapsedColumn,
    )
    terminal = sys.stderr
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), transient=True) as bars:
        # rich swapped sys.stderr for a proxy that prints above the bars; the log handlers
        # still hold the terminal itself.
        moved = [h for h in logging.getLogger().handlers
                 if isinstance(h, logging.StreamHandler) and h.stream is terminal
                 and terminal.isatty() and sys.stderr is not terminal]
        for handler in moved:
            handler.setStream(sys.stderr)
        tasks: dict[str, TaskID] = {}

        def update(step: str, done: int, total: int, detail: str = "") -> None:
            text = escape(f"{step} · {detail}" if detail else step)
            if step not in tasks:
                tasks[step] = bars.add_task(text, total=total)
            bars.update(tasks[step], completed=done, total=total, description=text)
        try:
            yield update
        finally:
            for handler in moved:
                handler.setStream(terminal)


def _broker(args: argparse.Namespace, settings: Settings) -> int:
    from devices.dynsec import (
        INGEST_ROLE,
        SERVICE_ROLE,
        MosquittoDynsec,
        ServiceAccount,
        setup_broker,
    )
    from runtime.errors import ConfigError
    if settings.broker_auth.mode != "mosquitto-dynsec":
        raise ConfigError(f"broker {args.broker_command} manages Mosquitto's dynamic-security "
                          "plugin: set FIREGRID_BROKER_AUTH__MODE=mosquitto-dynsec")
    if args.broker_command == "reconcile":
        from devices import registry
        from runtime import db
        broker = MosquittoDynsec(settings.mqtt, settings.broker_auth)
        try:
            with db.connect(settings.database, autocommit=True) as conn:
                stale, missing = registry.reconcile(conn, broker.device_accounts())
            for device_id in stale:
                print(f"stale account (device retired or not registered): {device_id}")
            for device_id in missing:
                print(f"no broker account: {device_id} (rotate its credentials)")
            if stale and args.apply:
                broker.remove_devices(stale)
                print(f"removed {len(stale)} stale account(s)")
        finally:
            broker.close()
        return 1 if missing or (stale and not args.apply) else 0
    services = []
    if settings.mqtt.username and settings.mqtt.password:
        services.append(ServiceAccount(settings.mqtt.username,
                                       settings.mqtt.password.get_secret_value(),
                                       (INGEST_ROLE, SERVICE_ROLE)))
    for line in setup_broker(settings.mqtt, settings.broker_auth, services):
        print(line)
    return 0


def _api(args: argparse.Namespace, settings: Settings) -> int:
    from api.app import serve
    from api.auth import create_token, require_worker, revoke_token
    from runtime import db
    if args.api_command == "serve":
        serve(settings)
        return 0
    if args.token_command == "create":
        require_worker(args.role, args.worker, "--worker")  # before anything is connected
        if args.role != "admin" and not args.worker:
            print(f"注意：没有 --worker 的令牌不能登录值班台 / note: without --worker this "
                  f"{args.role} token works for the API but cannot log in to the duty console",
                  file=sys.stderr)
    actor = f"cli:{os.environ.get('USER', 'unknown')}"
    with db.connect(settings.database, autocommit=True) as conn:
        if args.token_command == "create":
            print(create_token(conn, args.name, args.role, args.worker, actor=actor))
        else:
            revoke_token(conn, args.token_id, actor=actor)
            print(f"revoked token {args.token_id}")
    return 0


def _simulate(args: argparse.Namespace, settings: Settings) -> int:
    import resource
    import threading

    from runtime.errors import UnavailableError
    from runtime.localsvc import reachable
    from simulators.run import run_simulation
    if not reachable(settings.mqtt.host, settings.mqtt.port, timeout=2):
        # Not a street of devices failing to connect one by one and a run that "succeeds"
        # with nothing published: the broker is not there at all.
        raise UnavailableError(
            f"无法连接消息服务器 no broker at {settings.mqtt.host}:{settings.mqtt.port}: for the "
            "demo's, run `. .local/demo.env` in this shell while `./dev up` runs; otherwise "
            "set FIREGRID_MQTT__HOST / FIREGRID_MQTT__PORT")
    # One connection per device: the full street needs more descriptors than the default.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    summary = run_simulation(
        settings, preset=args.preset, scenarios=args.scenario, speed=args.speed, seed=args.seed,
        truth_path=args.truth, stop_event=stop, duration_s=args.seconds, mode=args.mode,
        connections=args.connections, source_addrs=args.source_addr, keepalive_s=args.keepalive,
        progress_cb=lambda p: print(p.line(), flush=True), people_api=args.people_api)
    st = summary.stats
    print(f"done{' (interrupted)' if summary.interrupted else ''}: {st.published} published, "
          f"{st.acked} acknowledged, {st.resent} resent, {st.dropped} dropped, {st.bad} bad "
          f"on purpose"
          + (f"; ground truth in {summary.truth_path}" if summary.truth_path else ""))
    return 0


def _alerts_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    alerts = sub.add_parser("alerts", help="the alert core: fire warnings, incidents, pages")
    act = alerts.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    act.add_parser("run", help="run the alert core until SIGTERM: evaluate alarms, open "
                   "incidents, page and escalate (several may run side by side)")
    check = act.add_parser("check-rules", help="validate a rules file and print it")
    check.add_argument("file", nargs="?", help="default: alerts.rules_file or the built-in")
    rep = act.add_parser("report", help="daily/weekly/monthly report per grid or community")
    rep.add_argument("--period", choices=["day", "week", "month"], default="week")
    rep.add_argument("--date", help="a day inside the period, YYYY-MM-DD (default: today; "
                     "the last complete period is --date of a day in it)")
    rep.add_argument("--by", choices=["grid", "community"], default="grid")
    rep.add_argument("--community", metavar="ID", help="only this community")
    rep.add_argument("--street", metavar="ID", help="only this street office")
    rep.add_argument("--tz", default="Asia/Shanghai", help="time zone of the calendar")
    rep.add_argument("--csv", type=Path, metavar="FILE", help="also write the figures as CSV")
    try:
        from firegrid import alerts_cli as people
    except ImportError:  # the people's commands land in their own module
        return
    if hasattr(people, "add_actions"):
        people.add_actions(act)


def _alerts(args: argparse.Namespace, settings: Settings) -> int:
    if args.alerts_command == "run":
        from alerts.service import AlertService
        service = AlertService(settings)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: service.stop())
        service.run()
        return 0
    if args.alerts_command == "check-rules":
        from alerts.rules import load_policy
        policy = load_policy(args.file or settings.alerts.rules_file)
        print(json.dumps(policy.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return 0
    if args.alerts_command == "report":
        return _report(args, settings)
    from firegrid import alerts_cli as people
    return people.run(args, settings)


def _report(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import date

    from alerts import reports
    from runtime.db import connect
    day = date.fromisoformat(args.date) if args.date else date.today()
    with connect(settings.database, autocommit=True) as conn, _progress() as progress:
        report = reports.build_report(conn, args.period, day, by=args.by, tz=args.tz,
                                      community_id=args.community, street_id=args.street,
                                      progress=progress)
    print(reports.to_text(report))
    if args.csv:
        # utf-8-sig: the byte-order mark makes Excel read the Chinese names as UTF-8.
        with open(args.csv, "w", encoding="utf-8-sig", newline="") as out:
            reports.to_csv(report, out)
    return 0


def _run_ingest(settings: Settings) -> int:
    from ingest.service import IngestService
    from runtime.collector import tune_for_batches
    service = IngestService(settings)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: service.stop())
    tune_for_batches()   # process-wide, so here and not in the service (tests run it in threads)
    service.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
