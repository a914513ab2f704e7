"""`firegrid devices import`: bulk registration from CSV, all rows or none.

Four kinds of file, told apart by their header (docs/field-guide.md has the columns):

    hierarchy  street_id, community_id, grid_id, building_id, address, lat, lon, ...
    workers    worker_id, name, role, areas, phone, sms, wecom, ...
    roster     worker_id, starts_at, ends_at
    devices    device_id, kind, building_id, floor, location, ... [password]

Several files go into one import and one transaction, so a devices file may use buildings
that the hierarchy file beside it creates. First every row of every file is checked — field
values, duplicates inside the import, references to the registry or to the other files —
and every problem is reported by file, line and column. Only an import without problems
writes anything; `--dry-run` stops after the report.

Files come from spreadsheets saved in a street office: UTF-8 with or without Excel's
byte-order mark, or GBK/GB18030 (what Chinese Excel writes for "CSV"), with English or
Chinese column headers (COLUMN_ALIASES: 设备编号 is device_id, 楼栋 building_id, ...) and
Chinese values for kinds, roles and building uses (烟感, 网格员, 出租屋, ...).

Importing the same files again is safe and quiet: a row that matches the registry is
counted as unchanged and written nowhere (no history, no new password); a registered device
whose row differs is a problem, since moving, rotating and retiring are their own commands.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Generic, TypeVar
from zoneinfo import ZoneInfo

import psycopg
from pydantic import BaseModel, ValidationError

from devices import registry
from devices.broker import BrokerAuth
from devices.credentials import new_password, verify_password
from devices.errors import ImportRejected, Unconfirmed
from devices.models import (
    CHANNELS,
    ROLE_AREA,
    Building,
    Community,
    Grid,
    NewDevice,
    Shift,
    Street,
    Worker,
)

_KINDS = {
    # kind: (columns that identify it, all columns it may have)
    "devices": ({"device_id", "kind"},
                {"device_id", "kind", "building_id", "floor", "location", "model", "firmware",
                 "gateway_id", "installed_at", "heartbeat_s", "password"}),
    "roster": ({"worker_id", "starts_at"}, {"worker_id", "starts_at", "ends_at"}),
    "workers": ({"worker_id", "role"},
                {"worker_id", "name", "role", "phone", "areas", "active", *CHANNELS}),
    "hierarchy": ({"street_id", "community_id", "grid_id"},
                  {"street_id", "street_name", "community_id", "community_name", "grid_id",
                   "grid_name", "grid_households", "building_id", "address", "lat", "lon",
                   "floors", "households", "use", "contact_name", "contact_phone"}),
}


# Chinese column headers, as street offices name them, for the columns above. Matched after
# removing spaces and with full-width brackets read as ASCII ones, so "心跳（秒）" works too.
# Bare 街道 / 社区 / 网格 are names: ids are codes in letters and digits.
COLUMN_ALIASES: dict[str, str] = {
    # devices
    "设备编号": "device_id", "设备ID": "device_id", "设备id": "device_id", "设备号": "device_id",
    "类型": "kind", "设备类型": "kind",
    "楼栋": "building_id", "楼栋编号": "building_id", "楼栋ID": "building_id",
    "建筑编号": "building_id",
    "楼层": "floor", "所在楼层": "floor",
    "位置": "location", "安装位置": "location", "房间": "location", "房间号": "location",
    "型号": "model", "设备型号": "model", "固件": "firmware", "固件版本": "firmware",
    "网关": "gateway_id", "网关编号": "gateway_id",
    "安装时间": "installed_at", "安装日期": "installed_at",
    "心跳": "heartbeat_s", "心跳间隔": "heartbeat_s", "心跳(秒)": "heartbeat_s",
    "心跳间隔(秒)": "heartbeat_s", "密码": "password",
    # workers and roster
    "人员编号": "worker_id", "人员ID": "worker_id", "工号": "worker_id",
    "姓名": "name", "角色": "role", "岗位": "role",
    "电话": "phone", "手机": "phone", "手机号": "phone", "联系电话": "phone",
    "负责区域": "areas", "区域": "areas", "在岗": "active", "是否在岗": "active",
    "启用": "active", "短信": "sms", "企业微信": "wecom", "钉钉": "dingtalk", "飞书": "feishu",
    "邮箱": "email", "电子邮件": "email",
    "开始时间": "starts_at", "上班时间": "starts_at", "结束时间": "ends_at",
    "下班时间": "ends_at",
    # hierarchy
    "街道编号": "street_id", "街道ID": "street_id", "街道": "street_name",
    "街道名称": "street_name", "街道办": "street_name",
    "社区编号": "community_id", "社区ID": "community_id", "社区": "community_name",
    "社区名称": "community_name",
    "网格编号": "grid_id", "网格ID": "grid_id", "网格": "grid_name", "网格名称": "grid_name",
    "网格户数": "grid_households",
    "地址": "address", "详细地址": "address", "纬度": "lat", "经度": "lon",
    "层数": "floors", "总层数": "floors", "楼层数": "floors", "户数": "households",
    "用途": "use", "建筑用途": "use",
    "楼栋联系人": "contact_name", "联系人": "contact_name", "房东": "contact_name",
    "楼长": "contact_name", "楼栋联系人电话": "contact_phone", "联系人电话": "contact_phone",
    "房东电话": "contact_phone", "楼长电话": "contact_phone",
}

# Chinese values of the columns that take a fixed word.
VALUE_ALIASES: dict[str, dict[str, str]] = {
    "kind": {"烟感": "smoke_detector", "烟感探测器": "smoke_detector",
             "烟雾探测器": "smoke_detector", "摄像头": "camera", "摄像机": "camera",
             "网关": "gateway"},
    "role": {"网格员": "grid_worker", "网格长": "grid_leader", "社区值班": "community_duty",
             "社区值班员": "community_duty", "街道值班": "street_duty",
             "街道值班员": "street_duty", "技术员": "field_technician",
             "维保人员": "field_technician", "运维人员": "field_technician"},
    "use": {"住宅": "residential", "出租屋": "rental", "出租房": "rental", "商铺": "shop",
            "门店": "shop", "作坊": "workshop", "厂房": "workshop", "混合": "mixed",
            "商住混合": "mixed", "公共": "public", "公共建筑": "public", "其他": "other"},
}

_FULL_WIDTH = str.maketrans({"（": "(", "）": ")", "\u3000": ""})


def canonical_column(header: str) -> str:
    """The column a header names: itself, or the English column of a Chinese alias."""
    key = header.strip().translate(_FULL_WIDTH).replace(" ", "")
    return COLUMN_ALIASES.get(key, header.strip())


@dataclass(frozen=True)
class Problem:
    file: str
    line: int       # line in the file; the header is line 1
    column: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.column}: {self.message}"


_M = TypeVar("_M", bound=BaseModel)
# Covariant, so that a table of streets is a table of hierarchy records.
_R_co = TypeVar("_R_co", bound=BaseModel, covariant=True)
# The records that have an id: one row per id in their table.
_Rec = TypeVar("_Rec", Street, Community, Grid, Building, Worker, NewDevice)


@dataclass(frozen=True)
class _Row(Generic[_R_co]):
    file: str
    line: int
    record: _R_co
    # The optional fields whose column the file has: only those update an existing row, so
    # a file without a names or an areas column leaves names and areas as they are.
    given: frozenset[str] | None = None


@dataclass
class Plan:
    """What an import would write, and what is wrong with it."""
    streets: dict[str, _Row[Street]] = field(default_factory=dict)
    communities: dict[str, _Row[Community]] = field(default_factory=dict)
    grids: dict[str, _Row[Grid]] = field(default_factory=dict)
    buildings: dict[str, _Row[Building]] = field(default_factory=dict)
    workers: dict[str, _Row[Worker]] = field(default_factory=dict)
    shifts: list[_Row[Shift]] = field(default_factory=list)
    devices: dict[str, _Row[NewDevice]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    # Rows that match the registry already: counted, not written.
    unchanged: int = 0
    # Per file, the header a column had when it was a Chinese alias, to name it in problems.
    headers: dict[str, dict[str, str]] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {"streets": len(self.streets), "communities": len(self.communities),
                "grids": len(self.grids), "buildings": len(self.buildings),
                "workers": len(self.workers), "shifts": len(self.shifts),
                "devices": len(self.devices)}

    def summary(self) -> str:
        return ", ".join(f"{n} {name}" for name, n in self.counts().items() if n)


# What a long import is doing, for a progress display: (step, done, total). The steps are
# labelled for people: "读取 reading devices.csv", "核对密码 verifying passwords",
# "生成密码 hashing passwords", "写入 writing".
Progress = Callable[[str, int, int], None]


def _quiet(step: str, done: int, total: int) -> None:
    pass


@dataclass
class ImportResult:
    plan: Plan
    written: bool
    credentials_file: Path | None = None


def run_import(conn: psycopg.Connection, broker: BrokerAuth, files: Iterable[Path], *,
               actor: str, iterations: int, dry_run: bool = False,
               credentials_out: Path | None = None, tz: str = "Asia/Shanghai",
               progress: Progress = _quiet) -> ImportResult:
    """Check every file; then write everything in one transaction, or raise ImportRejected
    with every problem and write nothing. `progress` hears how far each step is."""
    plan = Plan()
    zone = ZoneInfo(tz)
    for path in files:
        _read(Path(path), plan, zone, progress)
    _check_references(conn, plan)
    _drop_unchanged(conn, plan, iterations, progress)
    needs_password = [r for r in plan.devices.values() if not r.record.password]
    if needs_password and not dry_run and credentials_out is None:
        plan.problems.append(Problem("(command line)", 0, "--credentials-out",
                                     f"{len(needs_password)} devices have no password column; "
                                     "give --credentials-out FILE to receive the generated ones"))
    if needs_password and credentials_out is not None and credentials_out.exists():
        plan.problems.append(Problem("(command line)", 0, "--credentials-out",
                                     f"{credentials_out} exists; it may hold the only copy of "
                                     "earlier passwords: give a new file"))
    if plan.problems:
        raise ImportRejected(sorted(_as_headed(plan), key=lambda p: (p.file, p.line, p.column)))
    if dry_run:
        return ImportResult(plan, written=False)

    devices = [r.record for r in plan.devices.values()]

    def hashing(done: int, total: int) -> None:
        progress("生成密码 hashing passwords", done, total)

    def write(conn: psycopg.Connection) -> None:
        # The broker's accounts follow, in the same step: one transaction, no inner count.
        progress("写入 writing", 0, 1)
        _write_registry(conn, plan)

    if not needs_password:
        registry.provision(conn, broker, devices, actor, iterations, before=write,
                           progress=hashing)
        progress("写入 writing", 1, 1)
        return ImportResult(plan, written=True)
    assert credentials_out is not None  # without it the import was refused above
    # The generated passwords go to disk before COMMIT, so a crash between the two can
    # never leave registered devices whose passwords nobody has.
    devices = [d if d.password else d.model_copy(update={"password": new_password()})
               for d in devices]
    pending = _write_credentials(credentials_out.with_name(credentials_out.name + ".partial"),
                                 devices)
    try:
        registry.provision(conn, broker, devices, actor, iterations, before=write,
                           progress=hashing)
        progress("写入 writing", 1, 1)
    except Unconfirmed:
        # The devices may be registered: their passwords must stay.
        pending.replace(credentials_out)
        raise
    except BaseException:
        pending.unlink(missing_ok=True)
        raise
    pending.replace(credentials_out)
    return ImportResult(plan, written=True, credentials_file=credentials_out)


def _write_credentials(path: Path, devices: list[NewDevice]) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # utf-8-sig: the byte-order mark tells Excel the file is UTF-8.
    with os.fdopen(fd, "w", newline="", encoding="utf-8-sig") as out:
        writer = csv.writer(out)
        writer.writerow(["device_id", "mqtt_username", "mqtt_password"])
        for d in devices:
            writer.writerow([d.id, d.id, d.password])
    return path


def _write_registry(conn: psycopg.Connection, plan: Plan) -> None:
    hierarchy: tuple[tuple[str, Mapping[str, _Row[registry.HierarchyRecord]]], ...] = (
        ("street_offices", plan.streets), ("communities", plan.communities),
        ("grids", plan.grids), ("buildings", plan.buildings))
    for table, rows in hierarchy:
        for given, records in _by_given(rows.values()):
            registry.upsert(conn, table, records, update=given)
    for given, workers in _by_given(plan.workers.values()):
        registry.upsert_workers(conn, workers, update=given)
    registry.add_shifts(conn, [r.record for r in plan.shifts])


def _by_given(rows: Iterable[_Row[_M]]) -> list[tuple[frozenset[str] | None, list[_M]]]:
    groups: dict[frozenset[str] | None, list[_M]] = defaultdict(list)
    for row in rows:
        groups[row.given].append(row.record)
    return list(groups.items())


# --- reading and checking rows ------------------------------------------------------------

# Longer fields than any model accepts still get a row-and-column report, not a file error.
csv.field_size_limit(16 * 1024 * 1024)


def decode(data: bytes) -> str:
    """A spreadsheet's CSV as text: UTF-8 with or without Excel's byte-order mark, else
    GB18030 (a superset of GBK, what Chinese Excel writes when saving as plain "CSV").
    UTF-8 is tried first: Chinese text in GBK is almost never valid UTF-8."""
    if data.startswith(codecs.BOM_UTF8):
        return data[len(codecs.BOM_UTF8):].decode("utf-8")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as utf8:
        try:
            return data.decode("gb18030")
        except UnicodeDecodeError:
            raise utf8 from None


def _read(path: Path, plan: Plan, zone: ZoneInfo, progress: Progress = _quiet) -> None:
    name = path.name
    try:
        text = decode(path.read_bytes())
    except UnicodeDecodeError as exc:
        plan.problems.append(Problem(name, 0, "(file)", (
            f"不是 UTF-8 或 GBK 文本，请另存为“CSV UTF-8” / not UTF-8 or GBK text ({exc}); "
            "save it as \"CSV UTF-8\"")))
        return
    except OSError as exc:
        plan.problems.append(Problem(name, 0, "(file)", f"cannot read: {exc}"))
        return
    step, lines = f"读取 reading {name}", max(text.count("\n"), 1)
    progress(step, 0, lines)
    try:
        with io.StringIO(text, newline="") as handle:
            reader = csv.DictReader(handle)
            given = [h.strip() for h in (reader.fieldnames or [])]
            header = [canonical_column(h) for h in given]
            plan.headers[name] = {c: h for c, h in zip(header, given, strict=True) if c != h}
            repeated = sorted({h for h in header if header.count(h) > 1})
            for column in repeated:
                spelt = sorted({g for g, h in zip(given, header, strict=True) if h == column})
                plan.problems.append(Problem(name, 1, column, (
                    "column appears more than once" if len(spelt) == 1 else
                    f"{' and '.join(spelt)} both mean {column}: keep one")))
            if repeated:
                plan.headers[name] = {}
                return
            kind = _kind_of(header)
            if kind is None:
                plan.problems.append(Problem(name, 1, "(header)", _header_help(header)))
                return
            unknown = set(header) - _KINDS[kind][1]
            for column in sorted(unknown):
                plan.problems.append(Problem(name, 1, column, f"unknown column for a {kind} file"))
            reader.fieldnames = header
            for row in reader:
                line = reader.line_num
                if line % 1000 == 0:
                    progress(step, line, lines)
                if None in row:
                    plan.problems.append(Problem(name, line, "(row)",
                                                 "more fields than the header"))
                    continue
                values = {k: (v or "").strip() for k, v in row.items() if k not in unknown}
                if not any(values.values()):
                    continue  # blank lines at the end of a spreadsheet export
                for column, words in VALUE_ALIASES.items():
                    if column in values:
                        values[column] = words.get(values[column], values[column])
                _READERS[kind](plan, name, line, values, zone)
    except csv.Error as exc:
        plan.problems.append(Problem(name, 0, "(file)", f"cannot read: {exc}"))
    progress(step, lines, lines)


def _kind_of(header: list[str]) -> str | None:
    present = set(header)
    for kind, (needed, _) in _KINDS.items():
        if needed <= present:
            return kind
    return None


def _header_help(header: list[str]) -> str:
    kinds = "; ".join(f"{k}: {', '.join(sorted(need))}" for k, (need, _) in _KINDS.items())
    return f"not a firegrid import file (header {header}); each kind needs — {kinds}"


def _validate(plan: Plan, model: type[_M], data: Mapping[str, object], file: str, line: int,
              columns: dict[str, str]) -> _M | None:
    """Build a record; on failure add one problem per bad field, named by its CSV column."""
    try:
        return model.model_validate({k: v for k, v in data.items() if v not in ("", None)})
    except ValidationError as exc:
        for err in exc.errors():
            field_name = str(err["loc"][0]) if err["loc"] else "(row)"
            column = columns.get(field_name, field_name)
            msg = err["msg"].removeprefix("Value error, ")
            plan.problems.append(Problem(file, line, column, msg))
        return None


def _add_unique(plan: Plan, table: dict[str, _Row[_Rec]], row: _Row[_Rec], column: str,
                what: str) -> None:
    key = row.record.id
    seen = table.get(key)
    if seen is None:
        table[key] = row
    elif seen.record != row.record:
        plan.problems.append(Problem(row.file, row.line, column,
                                     f"{what} {key!r} is defined differently on "
                                     f"{seen.file}:{seen.line}"))


def _read_hierarchy(plan: Plan, file: str, line: int, v: dict[str, str],
                    zone: ZoneInfo) -> None:
    def given(*fields: tuple[str, str]) -> frozenset[str]:  # (field, column)
        return frozenset(f for f, column in fields if column in v)

    def part(model: type[_Rec], data: dict[str, str | None], columns: dict[str, str],
             table: dict[str, _Row[_Rec]], what: str, present: frozenset[str]) -> None:
        record = _validate(plan, model, data, file, line, columns)
        if record is not None:
            column = columns["id"]
            row = _Row(file, line, record, present)
            # A building has one row; the street, community and grid repeat on each of theirs.
            add = _keep_first if what == "building" else _add_unique
            add(plan, table, row, column, what)

    part(Street, {"id": v.get("street_id"), "name": v.get("street_name") or v.get("street_id")},
         {"id": "street_id", "name": "street_name"}, plan.streets, "street",
         given(("name", "street_name")))
    part(Community, {"id": v.get("community_id"), "street_id": v.get("street_id"),
                     "name": v.get("community_name") or v.get("community_id")},
         {"id": "community_id", "name": "community_name"}, plan.communities, "community",
         given(("street_id", "street_id"), ("name", "community_name")))
    part(Grid, {"id": v.get("grid_id"), "community_id": v.get("community_id"),
                "name": v.get("grid_name") or v.get("grid_id"),
                "households": v.get("grid_households")},
         {"id": "grid_id", "households": "grid_households"}, plan.grids, "grid",
         given(("community_id", "community_id"), ("name", "grid_name"),
               ("households", "grid_households")))
    if v.get("building_id"):
        fields = ("grid_id", "address", "lat", "lon", "floors", "households", "use",
                  "contact_name", "contact_phone")
        part(Building, {"id": v["building_id"], **{k: v.get(k) for k in fields}},
             {"id": "building_id"}, plan.buildings, "building",
             given(*((f, f) for f in fields)))


def _read_devices(plan: Plan, file: str, line: int, v: dict[str, str], zone: ZoneInfo) -> None:
    data: dict[str, str | datetime | None] = {**v, "id": v.get("device_id")}
    data.pop("device_id", None)
    if v.get("installed_at"):
        data["installed_at"] = _local_time(v["installed_at"], zone)
    record = _validate(plan, NewDevice, data, file, line, {"id": "device_id"})
    if record is not None:
        _keep_first(plan, plan.devices, _Row(file, line, record), "device_id", "device")


def _read_workers(plan: Plan, file: str, line: int, v: dict[str, str], zone: ZoneInfo) -> None:
    data: dict[str, object] = {
        "id": v.get("worker_id"), "name": v.get("name"), "role": v.get("role"),
        "phone": v.get("phone"),
        "channels": {c: v[c] for c in CHANNELS if v.get(c)},
        "areas": v.get("areas", "").replace(";", " ").split()}
    if v.get("active"):
        data["active"] = v["active"].lower() not in ("0", "false", "no", "n", "否")
    present: set[str] = {f for f in ("phone", "areas", "active") if f in v}
    if any(c in v for c in CHANNELS):
        present.add("channels")
    record = _validate(plan, Worker, data, file, line, {"id": "worker_id"})
    if record is not None:
        _keep_first(plan, plan.workers, _Row(file, line, record, frozenset(present)),
                    "worker_id", "worker")


def _keep_first(plan: Plan, table: dict[str, _Row[_Rec]], row: _Row[_Rec], column: str,
                what: str) -> None:
    """Add a valid record; a second row with the same id is a problem, whatever it says."""
    seen = table.get(row.record.id)
    if seen is not None:
        plan.problems.append(Problem(row.file, row.line, column, f"duplicate {what} id "
                                     f"{row.record.id!r} (first on {seen.file}:{seen.line})"))
        return
    table[row.record.id] = row


def _read_roster(plan: Plan, file: str, line: int, v: dict[str, str], zone: ZoneInfo) -> None:
    data = {k: (_local_time(v[k], zone) if k != "worker_id" and v.get(k) else v.get(k))
            for k in ("worker_id", "starts_at", "ends_at")}
    record = _validate(plan, Shift, data, file, line, {})
    if record is not None:
        plan.shifts.append(_Row(file, line, record))


_READERS = {"hierarchy": _read_hierarchy, "devices": _read_devices, "workers": _read_workers,
            "roster": _read_roster}


def _local_time(text: str, zone: ZoneInfo) -> str | datetime:
    """Spreadsheets write local times without an offset; read those in the site's zone."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return text  # the model reports it, naming the column
    return value if value.tzinfo else value.replace(tzinfo=zone)


# --- references ---------------------------------------------------------------------------

def _check_references(conn: psycopg.Connection, plan: Plan) -> None:
    def known(table: str, extra: Iterable[str]) -> set[str]:
        rows = conn.execute(f"SELECT id FROM {table}").fetchall()
        return {r[0] for r in rows} | set(extra)

    streets = known("street_offices", plan.streets)
    communities = known("communities", plan.communities)
    grids = known("grids", plan.grids)
    buildings = known("buildings", plan.buildings)
    workers = known("workers", plan.workers)
    add = plan.problems.append

    for community in plan.communities.values():
        if community.record.street_id not in streets:
            add(Problem(community.file, community.line, "street_id",
                        f"unknown street {community.record.street_id!r}"))
    for grid in plan.grids.values():
        if grid.record.community_id not in communities:
            add(Problem(grid.file, grid.line, "community_id",
                        f"unknown community {grid.record.community_id!r}"))
    for building in plan.buildings.values():
        if building.record.grid_id not in grids:
            add(Problem(building.file, building.line, "grid_id",
                        f"unknown grid {building.record.grid_id!r}"))

    areas = {"grid": grids, "community": communities, "street": streets}
    for worker in plan.workers.values():
        level = ROLE_AREA[worker.record.role]
        for area in worker.record.areas:
            if area not in areas[level]:
                add(Problem(worker.file, worker.line, "areas",
                            f"unknown {level} {area!r} (a {worker.record.role} covers {level}s)"))
    starts: dict[tuple[str, datetime], _Row[Shift]] = {}
    for shift in plan.shifts:
        if shift.record.worker_id not in workers:
            add(Problem(shift.file, shift.line, "worker_id",
                        f"unknown worker {shift.record.worker_id!r}"))
        key = (shift.record.worker_id, shift.record.starts_at)
        if key in starts:
            add(Problem(shift.file, shift.line, "starts_at",
                        f"duplicate shift (first on line {starts[key].line})"))
        starts[key] = shift

    _check_devices(conn, plan, buildings)


def _check_devices(conn: psycopg.Connection, plan: Plan, buildings: set[str]) -> None:
    if not plan.devices:
        return
    gateways = {r[0] for r in conn.execute(
        "SELECT id FROM devices WHERE kind = 'gateway' AND state <> 'retired'")}
    gateways |= {i for i, r in plan.devices.items() if r.record.kind == "gateway"}
    floors: dict[str, int] = dict(conn.execute("SELECT id, floors FROM buildings").fetchall())
    floors.update({i: r.record.floors for i, r in plan.buildings.items()})
    add = plan.problems.append
    for row in plan.devices.values():
        d = row.record
        if d.building_id not in buildings:
            add(Problem(row.file, row.line, "building_id", f"unknown building {d.building_id!r}"))
        elif d.floor is not None and d.floor > floors.get(d.building_id, 200):
            add(Problem(row.file, row.line, "floor", f"floor {d.floor} but building "
                        f"{d.building_id!r} has {floors[d.building_id]} floors"))
        if d.gateway_id is not None and d.gateway_id not in gateways:
            add(Problem(row.file, row.line, "gateway_id", f"{d.gateway_id!r} is not a gateway"))


# --- what the registry holds already -------------------------------------------------------

# The columns a re-imported device row is compared on; installed_at only when the file has it.
_DEVICE_FIELDS = ("kind", "building_id", "floor", "location", "model", "firmware", "gateway_id",
                  "heartbeat_s", "installed_at")


def _drop_unchanged(conn: psycopg.Connection, plan: Plan, iterations: int,
                    progress: Progress = _quiet) -> None:
    """Take out of the plan every row the registry holds as it is, counting it in
    plan.unchanged; a registered device whose row differs becomes a problem. Each row is
    compared on what writing it would change (registry.upsert's `update` columns)."""
    plan.unchanged += (_drop_same(conn, "street_offices", plan.streets)
                       + _drop_same(conn, "communities", plan.communities)
                       + _drop_same(conn, "grids", plan.grids)
                       + _drop_same(conn, "buildings", plan.buildings))
    _drop_unchanged_workers(conn, plan)
    if plan.shifts:
        ends = {(w, s): e for w, s, e in conn.execute(
            "SELECT worker_id, starts_at, ends_at FROM roster WHERE worker_id = ANY(%s)",
            [list({r.record.worker_id for r in plan.shifts})])}
        kept = [r for r in plan.shifts
                if ends.get((r.record.worker_id, r.record.starts_at)) != r.record.ends_at]
        plan.unchanged += len(plan.shifts) - len(kept)
        plan.shifts = kept
    _drop_unchanged_devices(conn, plan, iterations, progress)


def _drop_same(conn: psycopg.Connection, table: str, rows: dict[str, _Row[_Rec]]) -> int:
    """Drop the hierarchy rows `table` holds as they are; return how many."""
    if not rows:
        return 0
    columns = registry.HIERARCHY_COLUMNS[table][1:]
    stored = {r[0]: dict(zip(columns, r[1:], strict=True)) for r in conn.execute(
        f"SELECT id, {', '.join(columns)} FROM {table} WHERE id = ANY(%s)", [list(rows)])}
    same = [key for key, row in rows.items() if key in stored and all(
        getattr(row.record, c) == stored[key][c] for c in columns
        if row.given is None or c in row.given)]
    for key in same:
        del rows[key]
    return len(same)


def _drop_unchanged_workers(conn: psycopg.Connection, plan: Plan) -> None:
    if not plan.workers:
        return
    stored = {r[0]: r[1:] for r in conn.execute(
        "SELECT w.id, w.name, w.role, w.phone, w.channels, w.active,"
        " array_remove(array_agg(coalesce(a.grid_id, a.community_id, a.street_id)::text),"
        " NULL) FROM workers w LEFT JOIN worker_areas a ON a.worker_id = w.id"
        " WHERE w.id = ANY(%s) GROUP BY w.id", [list(plan.workers)])}
    for key, row in list(plan.workers.items()):
        if key not in stored:
            continue
        name, role, phone, channels, active, areas = stored[key]
        w, given = row.record, row.given
        same = {"phone": w.phone == phone, "channels": w.channels == channels,
                "active": w.active == active, "areas": set(w.areas) == set(areas)}
        if (w.name, w.role) == (name, role) and all(
                ok for f, ok in same.items() if given is None or f in given):
            del plan.workers[key]
            plan.unchanged += 1


def _drop_unchanged_devices(conn: psycopg.Connection, plan: Plan, iterations: int,
                            progress: Progress) -> None:
    if not plan.devices:
        return
    stored = {r[0]: r[1:] for r in conn.execute(
        f"SELECT id, state, password_hash, password_salt, {', '.join(_DEVICE_FIELDS)}"
        " FROM devices WHERE id = ANY(%s)", [list(plan.devices)])}
    same: list[tuple[_Row[NewDevice], str, str]] = []   # with the stored hash and salt
    for device_id, (state, digest, salt, *values) in stored.items():
        row = plan.devices[device_id]
        d = row.record
        old = dict(zip(_DEVICE_FIELDS, values, strict=True))
        differ = [f"{f} {old[f]!r} → {getattr(d, f)!r}" for f in _DEVICE_FIELDS
                  if getattr(d, f) != old[f] and not (f == "installed_at" and d.installed_at
                                                      is None)]
        if state == "retired" or differ:
            plan.problems.append(Problem(row.file, row.line, "device_id", (
                f"device {device_id!r} is already registered ({state})"
                + (f" with other values: {'; '.join(differ)}" if differ else "")
                + "; move, rotate or retire it instead")))
            del plan.devices[device_id]   # not to be registered: it needs no password
        else:
            same.append((row, digest, salt))
    # A password in the file must be the one the device has: otherwise it is a rotation.
    with_password = [t for t in same if t[0].record.password]
    verified: list[bool] = []
    # As many PBKDF2s as the first import made: threads (PBKDF2 releases the GIL), each
    # taking 256 at a time (a thread pool's map has no chunks of its own).
    chunks = [with_password[i:i + 256] for i in range(0, len(with_password), 256)]
    with ThreadPoolExecutor() as pool:
        for oks in pool.map(lambda chunk: [_verifies(t, iterations) for t in chunk], chunks):
            verified += oks
            progress("核对密码 verifying passwords", len(verified), len(with_password))
    wrong = {t[0].record.id for t, ok in zip(with_password, verified, strict=True) if not ok}
    for row, _, _ in same:
        if row.record.id in wrong:
            plan.problems.append(Problem(row.file, row.line, "password", (
                f"device {row.record.id!r} is registered with another password; "
                "rotate its credentials instead")))
        else:
            plan.unchanged += 1
        del plan.devices[row.record.id]


def _verifies(item: tuple[_Row[NewDevice], str, str], iterations: int) -> bool:
    row, digest, salt = item
    assert row.record.password is not None
    return verify_password(row.record.password, digest, salt, iterations)


def _as_headed(plan: Plan) -> list[Problem]:
    """The problems, each column named as its file's header named it: "楼栋 (building_id)"."""
    out = []
    for p in plan.problems:
        header = plan.headers.get(p.file, {}).get(p.column)
        out.append(replace(p, column=f"{header} ({p.column})") if header else p)
    return out


def describe(exc: ImportRejected) -> list[str]:
    """The report lines for a rejected import, grouped the way they were found."""
    by_file: dict[str, int] = defaultdict(int)
    for p in exc.problems:
        by_file[p.file] += 1
    return [str(p) for p in exc.problems] + [
        f"{len(exc.problems)} problem(s) in {len(by_file)} file(s); nothing was written"]
