"""`firegrid devices import` against a real database: all rows or none, every problem named."""

from __future__ import annotations

import codecs
import csv
import os
import stat
from pathlib import Path

import pytest

from devices import importer
from devices.broker import NoBrokerAuth
from devices.credentials import verify_password
from devices.errors import BrokerAuthError, ImportRejected
from firegrid.cli import main
from tests.helpers import on_a_terminal

ITER = 10  # hashing cost is not what these tests are about

HIERARCHY = [
    ["street_id", "street_name", "community_id", "community_name", "grid_id", "grid_name",
     "grid_households", "building_id", "address", "lat", "lon", "floors", "households", "use"],
    ["S1", "福田街道", "C1", "水围社区", "G1", "一网格", "420", "B1", "水围村1栋",
     "22.52", "114.05", "7", "28", "rental"],
    ["S1", "福田街道", "C1", "水围社区", "G1", "一网格", "420", "B2", "水围村2栋",
     "22.521", "114.051", "6", "24", "shop"],
    ["S1", "福田街道", "C1", "水围社区", "G2", "二网格", "380", "B3", "水围村3栋",
     "22.522", "114.052", "8", "30", "residential"],
]
WORKERS = [
    ["worker_id", "name", "role", "phone", "areas", "wecom", "sms"],
    ["W1", "张三", "grid_worker", "+8613800000001", "G1", "zhangsan", "+8613800000001"],
    ["W2", "李四", "grid_leader", "+8613800000002", "G1;G2", "", ""],
    ["W3", "王五", "community_duty", "", "C1", "", ""],
    ["W4", "赵六", "field_technician", "", "G1 G2", "", ""],
]
ROSTER = [
    ["worker_id", "starts_at", "ends_at"],
    ["W1", "2026-11-21 08:00", "2026-11-21 20:00"],
    ["W2", "2026-11-21T08:00:00+08:00", "2026-11-22T08:00:00+08:00"],
]
DEVICES = [
    ["device_id", "kind", "building_id", "floor", "location", "model", "heartbeat_s"],
    ["SD-0001", "smoke_detector", "B1", "3", "3F corridor", "JTY-GD-01", "3600"],
    ["SD-0002", "smoke_detector", "B1", "5", "501", "JTY-GD-01", ""],
    ["CAM-0001", "camera", "B2", "1", "shop front", "DS-2CD", ""],
    ["GW-0001", "gateway", "B3", "1", "stairwell", "GW-4G", ""],
]


def write(tmp: Path, name: str, rows: list[list[str]], encoding: str = "utf-8") -> Path:
    path = tmp / name
    with path.open("w", newline="", encoding=encoding) as out:
        csv.writer(out).writerows(rows)
    return path


def files(tmp: Path) -> list[Path]:
    return [write(tmp, "hierarchy.csv", HIERARCHY), write(tmp, "workers.csv", WORKERS),
            write(tmp, "roster.csv", ROSTER), write(tmp, "devices.csv", DEVICES)]


def count(db, table: str) -> int:
    return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_import_writes_everything_with_history_and_hashed_credentials(db, tmp_path):
    creds_file = tmp_path / "creds.csv"
    result = importer.run_import(db, NoBrokerAuth(), files(tmp_path), actor="cli:tech7",
                                 iterations=ITER, credentials_out=creds_file)
    assert result.written
    assert [count(db, t) for t in ("street_offices", "communities", "grids", "buildings",
                                   "workers", "roster", "devices")] == [1, 1, 2, 3, 4, 2, 4]
    assert db.execute("SELECT array_agg(coalesce(grid_id, community_id)::text"
                      " ORDER BY coalesce(grid_id, community_id)::text)"
                      " FROM worker_areas WHERE worker_id IN ('W2', 'W3')").fetchone()[0] \
        == ["C1", "G1", "G2"]
    # A local time without an offset is read in the site's zone (Asia/Shanghai, +08:00).
    assert db.execute("SELECT starts_at = '2026-11-21T00:00:00Z' FROM roster"
                      " WHERE worker_id = 'W1'").fetchone()[0]
    # Defaults by kind; state starts as provisioned.
    assert dict(db.execute("SELECT id, heartbeat_s FROM devices")) == {
        "SD-0001": 3600, "SD-0002": 3600, "CAM-0001": 60, "GW-0001": 300}
    assert {r[0] for r in db.execute("SELECT DISTINCT state FROM devices")} == {"provisioned"}

    # Passwords: written once to a private file, only a hash in the database; the file
    # starts with a byte-order mark, so Excel opens it as UTF-8.
    assert stat.S_IMODE(os.stat(creds_file).st_mode) == 0o600
    assert creds_file.read_bytes().startswith(codecs.BOM_UTF8)
    with creds_file.open(encoding="utf-8-sig") as handle:
        creds = {r["device_id"]: r["mqtt_password"] for r in csv.DictReader(handle)}
    assert set(creds) == {"SD-0001", "SD-0002", "CAM-0001", "GW-0001"}
    for device_id, password in creds.items():
        digest, salt = db.execute("SELECT password_hash, password_salt FROM devices"
                                  " WHERE id = %s", [device_id]).fetchone()
        assert verify_password(password, digest, salt, ITER)
        assert password not in digest
    history = db.execute("SELECT actor, action, new FROM registry_history"
                         " WHERE entity = 'devices' AND entity_id = 'SD-0001'").fetchall()
    assert [(a, act) for a, act, _ in history] == [("cli:tech7", "insert")]
    assert "password_hash" not in history[0][2]


def test_bad_csv_changes_nothing_and_names_every_bad_row(db, tmp_path):
    importer.run_import(db, NoBrokerAuth(), [write(tmp_path, "h.csv", HIERARCHY)],
                        actor="t", iterations=ITER)
    before = {t: count(db, t) for t in ("buildings", "devices", "workers", "registry_history")}
    c1 = ["S1", "福田街道", "C1", "水围社区"]
    bad_hierarchy = HIERARCHY[:1] + [
        c1 + ["G1", "一网格", "420", "B9", "x", "95", "114", "3", "", "rental"],
        c1 + ["G1", "一网格", "420", "B8", "y", "0", "0", "3", "", "rental"],
        c1 + ["G7", "七网格", "", "B7", "z", "22.5", "114", "3", "", "castle"],
        c1 + ["G1", "一网格", "420", "B6", "w", "22.5", "114", "3", "", "shop"],
        c1 + ["G1", "一网格", "420", "B6", "w", "22.5", "114", "3", "", "shop"],
    ]
    bad_devices = DEVICES[:1] + [
        ["SD-0100", "smoke_detector", "B1", "3", "", "", ""],        # fine
        ["SD-0101", "smoke_detector", "NOPE", "3", "", "", ""],      # unknown building
        ["SD-0100", "smoke_detector", "B1", "4", "", "", ""],        # duplicate id
        ["SD-0102", "toaster", "B1", "", "", "", ""],                # bad kind
        ["SD-0103", "smoke_detector", "B1", "12", "", "", ""],       # B1 has 7 floors
        ["bad id!", "camera", "B2", "", "", "", "5"],                # bad id, heartbeat too short
    ]
    paths = [write(tmp_path, "hierarchy.csv", bad_hierarchy),
             write(tmp_path, "devices.csv", bad_devices)]
    with pytest.raises(ImportRejected) as caught:
        importer.run_import(db, NoBrokerAuth(), paths, actor="t", iterations=ITER,
                            credentials_out=tmp_path / "c.csv")
    found = {(p.file, p.line, p.column) for p in caught.value.problems}
    assert found == {
        ("hierarchy.csv", 2, "lat"),            # latitude 95
        ("hierarchy.csv", 3, "lon"),            # 0,0: coordinates missing
        ("hierarchy.csv", 4, "use"),            # castle
        ("hierarchy.csv", 6, "building_id"),    # B6 twice, even with the same values
        ("devices.csv", 3, "building_id"),
        ("devices.csv", 4, "device_id"),
        ("devices.csv", 5, "kind"),
        ("devices.csv", 6, "floor"),
        ("devices.csv", 7, "device_id"),
        ("devices.csv", 7, "heartbeat_s"),
    }, caught.value.problems
    assert {t: count(db, t) for t in before} == before
    assert not (tmp_path / "c.csv").exists()


def test_dry_run_reports_and_writes_nothing(db, tmp_path):
    result = importer.run_import(db, NoBrokerAuth(), files(tmp_path), actor="t",
                                 iterations=ITER, dry_run=True)
    assert not result.written
    assert result.plan.counts()["devices"] == 4
    assert count(db, "devices") == 0 and count(db, "buildings") == 0


def test_reimport_of_unchanged_files_writes_nothing_and_counts_them(db, tmp_path):
    importer.run_import(db, NoBrokerAuth(), files(tmp_path), actor="t", iterations=ITER,
                        credentials_out=tmp_path / "c.csv")
    history = count(db, "registry_history")
    # The same four files again: no problem per registered device, no new passwords (so no
    # --credentials-out), no history; every row counted as unchanged.
    result = importer.run_import(db, NoBrokerAuth(), files(tmp_path), actor="t",
                                 iterations=ITER)
    assert result.plan.summary() == ""
    assert result.plan.unchanged == 1 + 1 + 2 + 3 + 4 + 2 + 4   # every row of HIERARCHY ...
    assert result.credentials_file is None
    assert count(db, "registry_history") == history
    # One device moved on paper and one retired: those are problems, named; the rest not.
    db.execute("UPDATE devices SET state = 'retired', retired_at = now(), password_hash = NULL,"
               " password_salt = NULL WHERE id = 'GW-0001'")
    moved = DEVICES[:2] + [["SD-0002", "smoke_detector", "B1", "6", "601", "JTY-GD-01", ""]] \
        + DEVICES[3:]
    with pytest.raises(ImportRejected) as caught:
        importer.run_import(db, NoBrokerAuth(), [write(tmp_path, "d.csv", moved)],
                            actor="t", iterations=ITER)
    problems = {(p.line, p.column): p.message for p in caught.value.problems}
    assert set(problems) == {(3, "device_id"), (5, "device_id")}
    assert "floor 5 → 6" in problems[(3, "device_id")] and "move" in problems[(3, "device_id")]
    assert "(retired)" in problems[(5, "device_id")]
    # A changed worker or shift is written; the others still count as unchanged.
    workers = WORKERS[:2] + [["W2", "李四", "grid_leader", "+8613800000009", "G1;G2", "", ""]] \
        + WORKERS[3:]
    result = importer.run_import(db, NoBrokerAuth(), [write(tmp_path, "w.csv", workers)],
                                 actor="t", iterations=ITER)
    assert (result.plan.summary(), result.plan.unchanged) == ("1 workers", 3)


def test_a_password_column_must_match_for_a_device_to_be_unchanged(db, tmp_path):
    rows = [DEVICES[0] + ["password"]] + [r + [f"pw-{r[0]}-0123456789abcdef"] for r in DEVICES[1:]]
    paths = [write(tmp_path, "h.csv", HIERARCHY), write(tmp_path, "d.csv", rows)]
    importer.run_import(db, NoBrokerAuth(), paths, actor="t", iterations=ITER)
    assert importer.run_import(db, NoBrokerAuth(), paths, actor="t",
                               iterations=ITER).plan.unchanged == 7 + 4
    rows[2][-1] = "another-password-0123456789"
    with pytest.raises(ImportRejected) as caught:
        importer.run_import(db, NoBrokerAuth(), [write(tmp_path, "d.csv", rows)], actor="t",
                            iterations=ITER)
    assert [(p.line, p.column) for p in caught.value.problems] == [(3, "password")]
    assert "rotate" in caught.value.problems[0].message


# A street office's spreadsheets as Chinese Excel saves them: GBK, Chinese headers, Chinese
# words for kinds, roles and uses.
HIERARCHY_ZH = [
    ["街道编号", "街道", "社区编号", "社区", "网格编号", "网格", "楼栋编号", "地址", "纬度", "经度",
     "层数", "户数", "用途"],
    ["S1", "福田街道", "C1", "水围社区", "G1", "一网格", "B1", "水围村1栋", "22.52", "114.05", "7",
     "28", "出租屋"],
    ["S1", "福田街道", "C1", "水围社区", "G1", "一网格", "B2", "水围村2栋", "22.521", "114.051",
     "6", "24", "商铺"],
]
WORKERS_ZH = [["人员编号", "姓名", "角色", "手机号", "负责区域", "企业微信"],
              ["W1", "张三", "网格员", "+8613800000001", "G1", "zhangsan"],
              ["W2", "李四", "网格长", "", "G1", ""]]
ROSTER_ZH = [["人员编号", "开始时间", "结束时间"], ["W1", "2026-11-21 08:00", "2026-11-21 20:00"]]
DEVICES_ZH = [["设备编号", "类型", "楼栋", "楼层", "房间", "型号", "心跳（秒）"],
              ["SD-0001", "烟感", "B1", "3", "301室", "JTY-GD-01", "3600"],
              ["CAM-0001", "摄像头", "B2", "1", "门口", "DS-2CD", ""]]


def zh_files(tmp: Path, encoding: str) -> list[Path]:
    return [write(tmp, "楼栋.csv", HIERARCHY_ZH, encoding),
            write(tmp, "人员.csv", WORKERS_ZH, encoding),
            write(tmp, "排班.csv", ROSTER_ZH, encoding),
            write(tmp, "设备.csv", DEVICES_ZH, encoding)]


@pytest.mark.parametrize("encoding", ["gbk", "gb18030", "utf-8-sig", "utf-8"])
def test_chinese_excel_files_import_in_any_of_its_encodings(db, tmp_path, encoding):
    importer.run_import(db, NoBrokerAuth(), zh_files(tmp_path, encoding), actor="t",
                        iterations=ITER, credentials_out=tmp_path / "c.csv")
    assert db.execute("SELECT id, kind, building_id, floor, location, heartbeat_s FROM devices"
                      " ORDER BY id").fetchall() == [
        ("CAM-0001", "camera", "B2", 1, "门口", 60),
        ("SD-0001", "smoke_detector", "B1", 3, "301室", 3600)]
    assert db.execute("SELECT id, address, use FROM buildings ORDER BY id").fetchall() == [
        ("B1", "水围村1栋", "rental"), ("B2", "水围村2栋", "shop")]
    assert db.execute("SELECT name FROM grids").fetchone() == ("一网格",)
    assert db.execute("SELECT id, name, role, channels->>'wecom' FROM workers ORDER BY id"
                      ).fetchall() == [("W1", "张三", "grid_worker", "zhangsan"),
                                       ("W2", "李四", "grid_leader", None)]
    assert count(db, "roster") == 1


def test_chinese_headers_are_named_in_problems_and_may_not_say_one_thing_twice(db, tmp_path):
    bad = [DEVICES_ZH[0], ["SD-0009", "烟感", "B404", "3", "301", "", ""]]
    twice = [["设备编号", "类型", "楼栋", "位置", "房间"], ["SD-1", "烟感", "B1", "3F", "301"]]
    paths = [write(tmp_path, "h.csv", HIERARCHY_ZH, "gbk"), write(tmp_path, "d.csv", bad, "gbk"),
             write(tmp_path, "d2.csv", twice, "gbk")]
    with pytest.raises(ImportRejected) as caught:
        importer.run_import(db, NoBrokerAuth(), paths, actor="t", iterations=ITER,
                            dry_run=True)
    found = {(p.file, p.line, p.column): p.message for p in caught.value.problems}
    assert set(found) == {("d.csv", 2, "楼栋 (building_id)"), ("d2.csv", 1, "location")}
    assert "位置 and 房间 both mean location" in found[("d2.csv", 1, "location")]


def test_a_file_in_neither_utf8_nor_gbk_is_one_clear_problem(db, tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"device_id,kind\n" + b"\xff\xfe\x80\x81,camera\n")
    with pytest.raises(ImportRejected) as caught:
        importer.run_import(db, NoBrokerAuth(), [path], actor="t", iterations=ITER)
    [problem] = caught.value.problems
    assert (problem.line, problem.column) == (0, "(file)") and "CSV UTF-8" in problem.message


def test_given_passwords_are_used_and_need_no_credentials_file(db, tmp_path):
    rows = [DEVICES[0] + ["password"]] + [r + [f"pw-{r[0]}-0123456789abcdef"] for r in DEVICES[1:]]
    paths = [write(tmp_path, "h.csv", HIERARCHY), write(tmp_path, "d.csv", rows)]
    importer.run_import(db, NoBrokerAuth(), paths, actor="t", iterations=ITER)
    digest, salt = db.execute("SELECT password_hash, password_salt FROM devices"
                              " WHERE id = 'CAM-0001'").fetchone()
    assert verify_password("pw-CAM-0001-0123456789abcdef", digest, salt, ITER)


class RefusingBroker(NoBrokerAuth):
    """Stands in for a broker that refuses: what is tested is the registry's rollback."""

    def add_devices(self, creds) -> None:
        raise BrokerAuthError("broker refused createClient")


def test_broker_refusal_rolls_the_whole_import_back(db, tmp_path):
    with pytest.raises(BrokerAuthError):
        importer.run_import(db, RefusingBroker(), files(tmp_path), actor="t", iterations=ITER,
                            credentials_out=tmp_path / "c.csv")
    assert count(db, "devices") == 0 and count(db, "buildings") == 0
    assert count(db, "registry_history") == 0
    assert not list(tmp_path.glob("c.csv*"))


def test_cli_import_exit_codes_and_report(db_url, tmp_path, capsys, monkeypatch):
    bad = write(tmp_path, "devices.csv", DEVICES[:1] + [["X1", "smoke_detector", "B404", "", "",
                                                          "", ""]])
    monkeypatch.setenv("FIREGRID_DATABASE__URL", db_url)
    if True:
        assert main(["devices", "import", "--dry-run", str(bad)]) == 2
        err = capsys.readouterr().err
        assert "devices.csv:2: building_id: unknown building 'B404'" in err
        assert "nothing was written" in err
        paths = [str(p) for p in files(tmp_path)]
        assert main(["devices", "import", *paths]) == 2  # generated passwords need a file
        assert "--credentials-out" in capsys.readouterr().err
        assert main(["devices", "import", *paths, "--credentials-out",
                     str(tmp_path / "creds.csv")]) == 0
        assert "4 devices" in capsys.readouterr().out
        # Again, unchanged: one line, Chinese first, no line per row and no password file.
        assert main(["devices", "import", *paths]) == 0
        out = capsys.readouterr()
        assert out.out == "已写入 wrote 无 nothing; 未变 17 unchanged\n" and not out.err


def test_the_report_csv_opens_in_excel(db_url, tmp_path, monkeypatch):
    monkeypatch.setenv("FIREGRID_DATABASE__URL", db_url)
    out = tmp_path / "week.csv"
    assert main(["alerts", "report", "--date", "2026-11-18", "--csv", str(out)]) == 0
    data = out.read_bytes()
    assert data.startswith(codecs.BOM_UTF8) and data[3:].startswith(b"period,")


class ConnectionDroppingBroker(NoBrokerAuth):
    """Takes the accounts, then the database connection drops before COMMIT: the outcome of
    the registration is unknown to the importer."""

    def __init__(self, db_url: str, conn) -> None:
        self.db_url, self.conn, self.removed = db_url, conn, []

    def add_devices(self, creds) -> None:
        import psycopg
        with psycopg.connect(self.db_url, autocommit=True) as other:
            other.execute("SELECT pg_terminate_backend(%s)", [self.conn.info.backend_pid])

    def remove_devices(self, device_ids) -> None:
        self.removed += device_ids


def test_an_unconfirmed_commit_keeps_broker_accounts_and_passwords(db_url, tmp_path):
    import psycopg

    from devices.errors import Unconfirmed
    conn = psycopg.connect(db_url, autocommit=True)
    broker = ConnectionDroppingBroker(db_url, conn)
    creds = tmp_path / "c.csv"
    with pytest.raises(Unconfirmed):
        importer.run_import(conn, broker, files(tmp_path), actor="t", iterations=ITER,
                            credentials_out=creds)
    assert broker.removed == []          # the devices might be registered: keep accounts
    with creds.open() as handle:         # ... and the passwords nobody else has
        assert len(list(csv.DictReader(handle))) == 4


def test_broken_exports_are_reported_by_row_not_crashed_on(db, tmp_path):
    rows = DEVICES[:2] + [["SD-0009", "smoke_detector", "B1", "3", "3F\x00corridor", "", ""],
                          ["SD-0010", "smoke_detector", "B1", "3", "x" * 200_000, "", ""]]
    paths = [write(tmp_path, "h.csv", HIERARCHY), write(tmp_path, "d.csv", rows),
             write(tmp_path, "w.csv", [["worker_id", "name", "role", "role"],
                                       ["W1", "a", "grid_worker", "grid_leader"]])]
    (tmp_path / "c.csv").write_text("earlier passwords\n")
    with pytest.raises(ImportRejected) as caught:
        importer.run_import(db, NoBrokerAuth(), paths, actor="t", iterations=ITER,
                            credentials_out=tmp_path / "c.csv")
    assert {(p.file, p.line, p.column) for p in caught.value.problems} == {
        ("d.csv", 3, "location"), ("d.csv", 4, "location"), ("w.csv", 1, "role"),
        ("(command line)", 0, "--credentials-out")}
    assert (tmp_path / "c.csv").read_text() == "earlier passwords\n"
    assert count(db, "devices") == 0


def test_a_file_without_optional_columns_leaves_them_alone(db, tmp_path):
    importer.run_import(db, NoBrokerAuth(), files(tmp_path)[:2], actor="t", iterations=ITER)
    db.execute("UPDATE workers SET active = false WHERE id = 'W4'")
    # The same people and places, from files without names, households, areas or channels.
    lean_hierarchy = [["street_id", "community_id", "grid_id", "building_id", "address", "lat",
                       "lon", "floors", "use"]] + [
        [r[0], r[2], r[4], r[7], r[8], r[9], r[10], r[11], r[13]] for r in HIERARCHY[1:]]
    lean_workers = [["worker_id", "name", "role"]] + [r[:3] for r in WORKERS[1:]]
    importer.run_import(db, NoBrokerAuth(), [write(tmp_path, "h2.csv", lean_hierarchy),
                                             write(tmp_path, "w2.csv", lean_workers)],
                        actor="t", iterations=ITER)
    assert db.execute("SELECT name, households FROM grids WHERE id = 'G1'").fetchone() == (
        "一网格", 420)
    assert db.execute("SELECT name FROM street_offices").fetchone() == ("福田街道",)
    assert db.execute("SELECT households FROM buildings WHERE id = 'B1'").fetchone() == (28,)
    assert db.execute("SELECT channels->>'wecom', active FROM workers WHERE id = 'W1'"
                      ).fetchone() == ("zhangsan", True)
    assert db.execute("SELECT active FROM workers WHERE id = 'W4'").fetchone() == (False,)
    assert count(db, "worker_areas") == 6


def test_building_contacts_import_with_chinese_headers_and_stay_when_left_out(db, tmp_path):
    # The landlord or 楼长 the console offers to call (致电楼栋联系人), from the street
    # office's own spreadsheet headers; a bad number is refused by row like any value.
    header = [*HIERARCHY[0], "楼栋联系人", "联系人电话"]
    rows = [header, [*HIERARCHY[1], "陈伯", "+86 138 0000 0457"], [*HIERARCHY[2], "", ""],
            [*HIERARCHY[3], "黄姐", "tel:123"]]
    with pytest.raises(ImportRejected) as refused:
        importer.run_import(db, NoBrokerAuth(), [write(tmp_path, "h.csv", rows)], actor="t",
                            iterations=ITER)
    assert [(p.line, p.column) for p in refused.value.problems] == [
        (4, "联系人电话 (contact_phone)")]
    rows[3][-1] = "0755-8888-0003"
    importer.run_import(db, NoBrokerAuth(), [write(tmp_path, "h.csv", rows)], actor="cli:t",
                        iterations=ITER)
    contacts = ("SELECT id, contact_name, contact_phone FROM buildings ORDER BY id")
    expected = [("B1", "陈伯", "+86 138 0000 0457"), ("B2", None, None),
                ("B3", "黄姐", "0755-8888-0003")]
    assert db.execute(contacts).fetchall() == expected
    assert db.execute("SELECT new->>'contact_name' FROM registry_history WHERE entity ="
                      " 'buildings' AND entity_id = 'B1'").fetchall() == [("陈伯",)]
    # The plain hierarchy file, without the columns, leaves them as they are.
    importer.run_import(db, NoBrokerAuth(), [write(tmp_path, "h2.csv", HIERARCHY)], actor="t",
                        iterations=ITER)
    assert db.execute(contacts).fetchall() == expected


def test_the_import_reports_each_steps_progress(db, tmp_path):
    seen: dict[str, list[tuple[int, int]]] = {}
    importer.run_import(db, NoBrokerAuth(), files(tmp_path), actor="t", iterations=ITER,
                        credentials_out=tmp_path / "c.csv",
                        progress=lambda step, done, total: seen.setdefault(step, []).append(
                            (done, total)))
    assert list(seen) == ["读取 reading hierarchy.csv", "读取 reading workers.csv",
                          "读取 reading roster.csv", "读取 reading devices.csv",
                          "生成密码 hashing passwords", "写入 writing"]
    for step, calls in seen.items():
        done, total = calls[-1]
        assert done == total > 0, step
    assert seen["生成密码 hashing passwords"][-1] == (4, 4)


def test_progress_bars_on_a_terminal_only(db_url, tmp_path):
    """Under a pseudo-terminal the import draws rich's bars; the summary stays the last
    line. (Without a terminal the output is the summary alone:
    test_cli_import_exit_codes_and_report.)"""
    paths = [str(p) for p in files(tmp_path)]
    env = {**os.environ, "FIREGRID_DATABASE__URL": db_url, "TERM": "xterm-256color",
           "COLUMNS": "100"}
    text = on_a_terminal(["devices", "import", *paths, "--credentials-out",
                          str(tmp_path / "c.csv")], env, stderr=False)
    assert "读取 reading devices.csv" in text and "生成密码 hashing passwords" in text
    assert text.index("已写入 wrote") > text.rindex("生成密码 hashing passwords")  # after
