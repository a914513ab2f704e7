"""alerts.reports against a real database: incidents, their log and maintenance tickets are
written with known timestamps, and every figure of the report is checked exactly.

The week under test is Mon 2024-06-03 .. Sun 2024-06-09 in Asia/Shanghai (UTC+8).

    grid G1 第一网格 (community C1 水围社区), buildings B1 B2
      #1 Mon 10:00  ack 30s  arrive 300s  resolve 600s   cooking_steam  rung 0 paged, rung 1 skipped
      #2 Tue 10:00  ack 60s  arrive 600s  resolve 1200s  dust_insects
      #3 Wed 10:00  ack 90s  arrive 900s  resolve 1800s  real_fire, confirmed
      #4 Thu 10:00  ack 120s              resolve 2400s  test_drill
      #5 Sun 23:30  acknowledged Mon 00:05 (next week), still open; rung 1 paged Sun 23:32
    grid G2 第二网格 (C1), building B3
      #6 Sat 20:00  ack 600s, resolved Mon 02:00 (after the week) device_fault; rung 1 paged Mon
    grid G3 (community C2 皇岗社区), building B4
      #8 Mon 00:00  ack 45s  resolve 7205s  device_fault   (the first instant of the week)
      #9 Sun 06-02 23:59 (the week before), #7 Mon 06-10 00:10 (the week after, still open)
    grid G4 (C2), building B5: no incidents, one maintenance ticket
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg.types.json import Jsonb

from alerts import reports
from alerts.errors import Invalid, NotFound
from devices import registry
from devices.models import Building, Community, Grid, Street

SH = ZoneInfo("Asia/Shanghai")
WEEK = date(2024, 6, 5)  # a Wednesday


def local(day: int, hour: int, minute: int = 0, month: int = 6) -> datetime:
    return datetime(2024, month, day, hour, minute, tzinfo=SH)


def incident(db: psycopg.Connection, building: str, opened: datetime, *,
             severity: str = "warning", ack: float | datetime | None = None,
             arrive: float | None = None, resolve: float | datetime | None = None,
             cause: str | None = None) -> int:
    """An incident; ack/arrive/resolve are seconds after opening, or a time."""
    def at(v):
        return opened + timedelta(seconds=v) if isinstance(v, (int, float)) else v
    ack_at, on_site_at, resolved_at = at(ack), at(arrive), at(resolve)
    state = ("resolved" if resolved_at else "on_site" if on_site_at
             else "acknowledged" if ack_at else "notified")
    return db.execute(
        "INSERT INTO incidents (building_id, hazard, severity, state, opened_at, last_alert_at,"
        " confirmed_at, acknowledged_at, on_site_at, resolved_at, cause, ladder)"
        " VALUES (%s, 'fire', %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        [building, severity, state, opened, opened,
         opened if severity == "confirmed" else None, ack_at, on_site_at, resolved_at, cause,
         severity]).fetchone()[0]


def log(db: psycopg.Connection, incident_id: int, at: datetime, action: str, ladder: str,
        rung: int) -> None:
    detail = {"ladder": ladder, "rung": rung, "roles": ["grid_leader"]}
    if action == "notified":
        detail["workers"] = ["W1"]
    db.execute("INSERT INTO incident_log (incident_id, at, actor, action, detail)"
               " VALUES (%s, %s, 'alerts', %s, %s)", [incident_id, at, action, Jsonb(detail)])


def ticket(db: psycopg.Connection, device: str, condition: str, opened: datetime,
           closed: bool = False) -> None:
    db.execute("INSERT INTO maintenance_tickets (device_id, condition, opened_at, closed_at,"
               " close_reason) VALUES (%s, %s, %s, %s, %s)",
               [device, condition, opened, opened + timedelta(hours=1) if closed else None,
                "cleared" if closed else None])


@pytest.fixture
def street(db) -> None:
    with registry.changes(db, "test-setup"):
        registry.upsert(db, "street_offices", [Street(id="S1", name="福田街道 Futian")])
        registry.upsert(db, "communities", [Community(id="C1", street_id="S1", name="水围社区"),
                                            Community(id="C2", street_id="S1", name="皇岗社区")])
        registry.upsert(db, "grids", [Grid(id="G1", community_id="C1", name="第一网格"),
                                      Grid(id="G2", community_id="C1", name="第二网格"),
                                      Grid(id="G3", community_id="C2", name="第三网格"),
                                      Grid(id="G4", community_id="C2", name="第四网格")])
        registry.upsert(db, "buildings", [
            Building(id=b, grid_id=g, address=f"{b} Shuiwei Rd", lat=22.52, lon=114.05,
                     floors=7, use="rental")
            for b, g in (("B1", "G1"), ("B2", "G1"), ("B3", "G2"), ("B4", "G3"), ("B5", "G4"))])
    for device, building in (("SD-1", "B1"), ("SD-3", "B3"), ("SD-5", "B5")):
        db.execute("INSERT INTO devices (id, kind, building_id, heartbeat_s, password_hash,"
                   " password_salt) VALUES (%s, 'smoke_detector', %s, 3600, 'ab12', 'cd34')",
                   [device, building])


@pytest.fixture
def week_data(db, street) -> None:
    i1 = incident(db, "B1", local(3, 10), ack=30, arrive=300, resolve=600, cause="cooking_steam")
    log(db, i1, local(3, 10) + timedelta(seconds=1), "notified", "warning", 0)
    log(db, i1, local(3, 10) + timedelta(seconds=61), "skipped", "warning", 1)
    incident(db, "B1", local(4, 10), ack=60, arrive=600, resolve=1200, cause="dust_insects")
    i3 = incident(db, "B1", local(5, 10), severity="confirmed", ack=90, arrive=900,
                  resolve=1800, cause="real_fire")
    log(db, i3, local(5, 10), "notified", "confirmed", 0)
    incident(db, "B2", local(6, 10), ack=120, resolve=2400, cause="test_drill")
    i5 = incident(db, "B2", local(9, 23, 30), ack=local(10, 0, 5))
    log(db, i5, local(9, 23, 32), "notified", "warning", 1)
    i6 = incident(db, "B3", local(8, 20), ack=600, resolve=local(10, 2), cause="device_fault")
    log(db, i6, local(10, 1), "notified", "warning", 1)
    incident(db, "B4", local(10, 0, 10))                                    # next week
    incident(db, "B4", local(3, 0), ack=45, resolve=7205, cause="device_fault")
    incident(db, "B4", local(2, 23, 59), ack=10, resolve=20, cause="real_fire")  # last week
    ticket(db, "SD-1", "offline", local(4, 8), closed=True)
    ticket(db, "SD-1", "low_battery", local(5, 8))
    ticket(db, "SD-3", "false_alarms", local(7, 8))
    ticket(db, "SD-3", "tamper", local(1, 8))                               # last week
    ticket(db, "SD-5", "offline", local(9, 23, 59))


def by_id(report: reports.Report) -> dict[str, reports.AreaRow]:
    return {row.area_id: row for row in report.rows}


# --- period bounds ------------------------------------------------------------------------

def test_periods_are_local_calendar_periods():
    assert reports.period_bounds("week", date(2024, 6, 9), SH) == (local(3, 0), local(10, 0))
    assert reports.period_bounds("week", date(2024, 6, 10), SH) == (local(10, 0), local(17, 0))
    start, end = reports.period_bounds("week", WEEK, SH)
    assert start == datetime(2024, 6, 2, 16, 0, tzinfo=UTC)  # Monday 00:00 +08:00
    assert reports.period_bounds("day", WEEK, SH) == (local(5, 0), local(6, 0))
    assert reports.period_bounds("month", date(2024, 2, 29), SH) == (
        local(1, 0, month=2), local(1, 0, month=3))
    assert reports.period_bounds("month", date(2024, 12, 31), SH) == (
        local(1, 0, month=12), datetime(2025, 1, 1, tzinfo=SH))
    with pytest.raises(Invalid):
        reports.period_bounds("year", WEEK, SH)


# --- the weekly report, per grid ----------------------------------------------------------

def test_weekly_report_per_grid(db, week_data):
    report = reports.build_report(db, "week", WEEK)
    assert (report.start, report.end) == (local(3, 0), local(10, 0))
    assert [r.area_id for r in report.rows] == ["G1", "G2", "G3", "G4"]
    rows = by_id(report)

    g1 = rows["G1"]
    assert (g1.area_name, g1.community_id, g1.community_name) == ("第一网格", "C1", "水围社区")
    assert (g1.opened, g1.confirmed, g1.resolved, g1.open_at_end) == (5, 1, 4, 1)
    assert g1.causes == {"real_fire": 1, "cooking_steam": 1, "dust_insects": 1,
                         "device_fault": 0, "test_drill": 1}
    # (cooking 1 + dust 1) / (4 resolved - 1 drill); the drill counts in neither.
    assert g1.false_alarm_rate == pytest.approx(2 / 3)
    # #3 confirmed, #5 paged rung 1; #1 only paged rung 0 (rung 1 was skipped).
    assert g1.escalated == 2
    # ack 30, 60, 90, 120 (#5 acknowledged only after the week ended)
    assert g1.times["ack"] == (4, 75.0, pytest.approx(111.0), pytest.approx(119.1))
    assert g1.times["arrive"] == (3, 600.0, pytest.approx(840.0), pytest.approx(894.0))
    assert g1.times["resolve"] == (4, 1500.0, pytest.approx(2220.0), pytest.approx(2382.0))
    assert g1.tickets == {"offline": 1, "low_battery": 1, "tamper": 0, "fault": 0,
                          "occlusion": 0, "video_loss": 0, "false_alarms": 0}

    # #6 was resolved after the week ended: open at the period end, no cause yet, and its
    # rung-1 page came after the end too.
    g2 = rows["G2"]
    assert (g2.opened, g2.resolved, g2.open_at_end, g2.escalated) == (1, 0, 1, 0)
    assert sum(g2.causes.values()) == 0 and g2.false_alarm_rate is None
    assert g2.times["ack"] == (1, 600.0, 600.0, 600.0)
    assert g2.times["resolve"] == (0, None, None, None)
    assert g2.tickets["false_alarms"] == 1 and sum(g2.tickets.values()) == 1

    # #8 opened at the first instant of the week; #9 (the minute before) and #7 are out.
    g3 = rows["G3"]
    assert (g3.opened, g3.resolved, g3.false_alarm_rate) == (1, 1, 1.0)
    assert g3.times["resolve"].p50 == 7205.0
    assert g3.community_name == "皇岗社区"

    # a grid with a maintenance ticket and no incident still gets its row
    g4 = rows["G4"]
    assert (g4.opened, g4.false_alarm_rate, g4.tickets["offline"]) == (0, None, 1)
    assert g4.times["ack"] == (0, None, None, None)

    t = report.total
    assert t.area_id is None
    assert (t.opened, t.confirmed, t.resolved, t.open_at_end, t.escalated) == (7, 1, 5, 2, 2)
    assert t.false_alarm_rate == pytest.approx(3 / 4)
    # ack over the whole scope: 30 45 60 90 120 600, percentiles not averaged per grid
    assert t.times["ack"].n == 6 and t.times["ack"].p50 == 75.0
    assert t.tickets["offline"] == 2 and sum(t.tickets.values()) == 4


def test_sunday_night_and_monday_morning_fall_in_their_own_weeks(db, week_data):
    this_week = reports.build_report(db, "week", date(2024, 6, 9))
    next_week = reports.build_report(db, "week", date(2024, 6, 10))
    last_week = reports.build_report(db, "week", date(2024, 6, 2))
    assert by_id(this_week)["G1"].opened == 5                 # includes Sun 23:30 (#5)
    assert by_id(next_week)["G3"].opened == 1                 # Mon 00:10 (#7)
    assert "G1" not in by_id(next_week) and next_week.total.opened == 1
    assert by_id(last_week)["G3"].opened == 1                 # Sun 06-02 23:59 (#9)
    assert by_id(last_week)["G2"].tickets["tamper"] == 1
    # in UTC, Monday 00:10 local (#7) is still Sunday 16:10
    utc = reports.build_report(db, "day", date(2024, 6, 9), tz="UTC")
    assert [(r.area_id, r.opened) for r in utc.rows] == [("G1", 1), ("G3", 1), ("G4", 0)]


def test_day_and_month(db, week_data):
    day = reports.build_report(db, "day", date(2024, 6, 9))
    assert [r.area_id for r in day.rows] == ["G1", "G4"]
    assert (day.total.opened, day.total.escalated, day.total.tickets["offline"]) == (1, 1, 1)
    month = reports.build_report(db, "month", WEEK)
    assert month.total.opened == 9
    # as of the end of June #6 is resolved, and its Monday rung-1 page counts
    assert by_id(month)["G2"].resolved == 1 and by_id(month)["G2"].escalated == 1
    assert month.total.causes["device_fault"] == 2


def test_per_community_and_scope(db, week_data):
    report = reports.build_report(db, "week", WEEK, by="community")
    assert [r.area_id for r in report.rows] == ["C1", "C2"]
    c1, c2 = report.rows
    assert (c1.area_name, c1.community_id) == ("水围社区", "C1")
    assert (c1.opened, c1.resolved, c1.open_at_end, c1.escalated) == (6, 4, 2, 2)
    assert c1.false_alarm_rate == pytest.approx(2 / 3)
    assert c1.times["ack"] == (5, 90.0, pytest.approx(408.0), pytest.approx(580.8))
    assert (c2.opened, c2.tickets["offline"]) == (1, 1)
    assert report.total.opened == 7

    only_c2 = reports.build_report(db, "week", WEEK, community_id="C2")
    assert [r.area_id for r in only_c2.rows] == ["G3", "G4"]
    assert only_c2.total.opened == 1 and only_c2.total.false_alarm_rate == 1.0
    assert reports.build_report(db, "week", WEEK, street_id="S1").total.opened == 7
    with pytest.raises(NotFound):
        reports.build_report(db, "week", WEEK, street_id="S9")
    with pytest.raises(Invalid):
        reports.build_report(db, "week", WEEK, tz="Mars/Olympus")


def test_empty_period_has_a_zero_total(db, street):
    report = reports.build_report(db, "month", date(2023, 1, 15))
    assert report.rows == []
    assert (report.total.opened, report.total.false_alarm_rate) == (0, None)
    assert report.total.times["resolve"] == (0, None, None, None)
    assert "no incidents" in reports.to_text(report)


# --- output -------------------------------------------------------------------------------

def test_csv(db, week_data):
    out = io.StringIO()
    reports.to_csv(reports.build_report(db, "week", WEEK), out)
    out.seek(0)
    lines = list(csv.reader(out))
    assert lines[0][:12] == ["period", "period_start", "period_end", "level", "area_id",
                             "area_name", "community_id", "community_name", "opened",
                             "confirmed", "resolved", "open_at_end"]
    assert "false_alarm_rate" in lines[0] and "ack_p50_s" in lines[0]
    assert "tickets_false_alarms" in lines[0]
    rows = [dict(zip(lines[0], line, strict=True)) for line in lines[1:]]
    assert [(r["level"], r["area_id"]) for r in rows] == [
        ("grid", "G1"), ("grid", "G2"), ("grid", "G3"), ("grid", "G4"), ("total", "")]
    g1, total = rows[0], rows[-1]
    assert (g1["period"], g1["period_start"], g1["period_end"]) == (
        "week", "2024-06-03T00:00:00+08:00", "2024-06-10T00:00:00+08:00")
    assert (g1["area_name"], g1["community_name"]) == ("第一网格", "水围社区")
    assert (g1["opened"], g1["confirmed"], g1["resolved"], g1["open_at_end"]) == (
        "5", "1", "4", "1")
    assert (g1["cause_cooking_steam"], g1["cause_test_drill"], g1["escalated"]) == ("1", "1", "2")
    assert (g1["false_alarm_rate"], g1["ack_p50_s"], g1["ack_p99_s"]) == ("0.6667", "75", "119.1")
    assert (g1["resolve_p50_s"], g1["tickets_low_battery"]) == ("1500", "1")
    assert rows[1]["resolve_p50_s"] == "" and rows[3]["false_alarm_rate"] == ""
    assert (total["opened"], total["false_alarm_rate"], total["ack_p50_s"]) == ("7", "0.75", "75")


def test_text(db, week_data):
    text = reports.to_text(reports.build_report(db, "week", WEEK))
    assert text.startswith("周报 weekly report · 2024-06-03 – 2024-06-09 (Asia/Shanghai)")
    g1 = text.split("网格 grid G1 第一网格")[1].split("\n\n")[0]
    assert "社区 community C1 水围社区" in g1
    assert "告警事件 incidents 5" in g1 and "确认火情 confirmed 1" in g1
    assert "期末未结 open at period end 1" in g1 and "越级上报 escalated 2" in g1
    assert "误报率 false-alarm rate 66.7% (2/3)" in g1
    assert "响应用时 time to acknowledge (n=4): p50 1m15s" in g1
    assert "办结用时 time to resolve (n=4): p50 25m00s" in g1
    assert "维保工单 maintenance tickets 2: 离线 offline 1 · 低电量 low battery 1" in g1
    assert "p50 2h00m05s" in text.split("网格 grid G3")[1]
    total = text.split("合计 total")[1]
    assert "告警事件 incidents 7" in total and "75.0% (3/4)" in total

    by_community = reports.to_text(reports.build_report(db, "week", WEEK, by="community"))
    assert "社区 community C2 皇岗社区" in by_community and "网格 grid" not in by_community
