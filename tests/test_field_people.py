"""Simulated people answer real pages (issue 15): the grid team is paged at once, so a
silent grid worker delays nobody; a grid where nobody answers goes to the community's duty
desk; a hushed cooking alarm stays in the grid; a worker on site confirms a fire and the
119 hook is called once. Real Mosquitto, PostgreSQL, ingest and alert core; the people
(simulators.people) get their pages on the page topics and act through the HTTP API with
their own tokens. The shipped ladder's shape, with its rungs shortened to seconds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.app import create_app
from devices import registry
from devices.broker import NoBrokerAuth
from devices.importer import run_import
from devices.models import Shift, Worker
from simulators import messages as m
from simulators import topology
from simulators.people import Crowd, Habits, PeopleConfig, enlist
from simulators.run import run_simulation
from simulators.truth import read
from tests.alert_live import ThreadedAlerts, alert_settings, send_alarm, shipped_rules
from tests.alert_support import build_ward
from tests.api_support import TestClient
from tests.helpers import Publisher, ThreadedIngest, await_subscribed, wait_for_count
from tests.test_alert_channels import Receiver
from tests.test_console_api import LiveApi

QUICK = Habits(silent=0, acknowledge_s=(0.1, 0.3), arrive_s=(0.1, 0.3), confirm_s=(0.1, 0.3),
               resolve_s=(0.1, 0.3))


@pytest.fixture
def field(make_settings, uid, db, db_url, tmp_path):
    """The ward, ingest, the alert core, the API and a crowd; yields a starter."""
    build_ward(db, around=datetime.now(UTC))
    fire_service = Receiver()
    settings = alert_settings(make_settings, uid, rules_file=shipped_rules(
        tmp_path, 3), fire_service_url=f"{fire_service.url}/119", webhook_secret="s3cret")
    ingest = ThreadedIngest(settings).start()
    core = ThreadedAlerts(settings).start()
    device = Publisher(settings.mqtt.host, settings.mqtt.port, f"dev-{uid}")
    await_subscribed(device, settings.mqtt.topic_prefix, db_url)
    api = TestClient(create_app(settings, broker=NoBrokerAuth())).__enter__()
    crowds = []

    def start(silent: set[str], truth: dict[str, str], habits: Habits = QUICK) -> Crowd:
        crowd = Crowd(enlist(db), PeopleConfig(field=habits, desk=habits), api=api,
                      mqtt_host=settings.mqtt.host, mqtt_port=settings.mqtt.port,
                      page_prefix=settings.alerts.page_topic_prefix,
                      cause_of=lambda building: truth.get(building, "dust_insects"),
                      silent=silent, client_id=f"people-{uid}").start()
        crowds.append(crowd)
        return crowd

    yield settings, device, start, fire_service
    for crowd in crowds:
        crowd.stop()
    api.__exit__(None, None, None)
    device.close()
    core.stop()
    ingest.stop()
    fire_service.server.shutdown()


def incident_row(db, building: str = "B1"):
    return db.execute("SELECT id, state, severity, acknowledged_by, cause FROM incidents"
                      " WHERE building_id = %s", [building]).fetchone()


def paged(db, incident: int) -> set[str]:
    return {w for (w,) in db.execute("SELECT worker_id FROM pages WHERE incident_id = %s"
                                     " AND worker_id IS NOT NULL", [incident])}


def test_a_silent_grid_worker_delays_nobody_the_leader_takes_it(field, db):
    settings, device, start, _ = field
    start(silent={"gw1"}, truth={"B1": "cooking_steam"})
    send_alarm(device, settings, "SD-1")
    url = settings.database.url
    wait_for_count(url, "SELECT count(*) FROM incidents WHERE state = 'resolved'", 1)
    incident, _, _, by, cause = incident_row(db)
    assert (by, cause) == ("api:sim-gl1", "cooking_steam")
    # Both were paged at once; nobody beyond the grid was needed.
    assert paged(db, incident) == {"gw1", "gl1"}


def test_a_grid_where_nobody_answers_goes_to_the_community_desk(field, db):
    settings, device, start, _ = field
    start(silent={"gw1", "gl1"}, truth={"B1": "dust_insects"})
    send_alarm(device, settings, "SD-1")
    wait_for_count(settings.database.url,
                   "SELECT count(*) FROM incidents WHERE state = 'resolved'", 1)
    incident, _, _, by, cause = incident_row(db)
    assert (by, cause) == ("api:sim-cd1", "dust_insects")
    assert paged(db, incident) == {"gw1", "gl1", "cd1"}


def test_a_hushed_cooking_alarm_stays_in_the_grid_when_nobody_there_answers(field, db):
    settings, device, start, _ = field
    start(silent={"gw1", "gl1"}, truth={"B1": "cooking_steam"})
    send_alarm(device, settings, "SD-1")
    # The resident presses the detector's hush button; the device keeps publishing.
    device.publish_all([(m.topic("SD-1", "event", settings.mqtt.topic_prefix),
                         m.encode(m.event("mute", 2, duration_s=600)))])
    url = settings.database.url
    # Two looks by the escalator, each holding it in the grid.
    wait_for_count(url, "SELECT count(*) FROM incident_log WHERE action = 'held'", 2)
    incident, state, *_ = incident_row(db)
    assert state == "notified"
    assert paged(db, incident) == {"gw1", "gl1"}


def test_a_worker_on_site_confirms_the_fire_every_level_is_paged_119_called_once(field, db):
    settings, device, start, fire_service = field
    # Resolved a few seconds after confirming, not at once: a page to a resolved incident is
    # cancelled, the 119 hook's too, and a fire is not put out in 0.3 s.
    crowd = start(silent={"gl1", "cd1", "sd1"}, truth={"B1": "real_fire"},
                  habits=QUICK.model_copy(update={"resolve_s": (5.0, 5.0)}))
    send_alarm(device, settings, "SD-1")            # one detector sees it: a warning
    url = settings.database.url
    wait_for_count(url, "SELECT count(*) FROM incidents WHERE state = 'resolved'", 1)
    incident, _, severity, by, cause = incident_row(db)
    assert (severity, by, cause) == ("confirmed", "api:sim-gw1", "real_fire")
    assert db.execute("SELECT actor FROM incident_log WHERE incident_id = %s"
                      " AND action = 'confirmed'", [incident]).fetchall() == [("api:sim-gw1",)]
    assert paged(db, incident) == {"gw1", "gl1", "cd1", "sd1"}
    call = fire_service.next()
    assert call.path == "/119"
    # Marked sent at the COMMIT after the hook answered: wait for it, then once only.
    assert wait_for_count(url, "SELECT count(*) FROM pages WHERE channel = 'fire_service'"
                          " AND status = 'sent'", 1) == 1
    assert db.execute("SELECT count(*) FROM pages WHERE channel = 'fire_service'"
                      ).fetchone()[0] == 1
    assert [a for (a,) in db.execute("SELECT action FROM incident_log WHERE incident_id = %s"
                                     " AND actor = 'api:sim-gw1' ORDER BY id", [incident])
            ] == ["acknowledged", "on_site", "confirmed", "resolved"]
    assert crowd.repeats == 0



def test_a_shift_change_during_an_open_incident_pages_the_incoming_worker(field, db):
    """gw1's shift ends a few seconds after the alarm and gw3's begins; nobody answers.
    The alert core pages gw3 at the current rung without anybody asking it to."""
    settings, device, start, _ = field
    change = datetime.now(UTC) + timedelta(seconds=4)
    with registry.changes(db, "test"):
        registry.upsert_workers(db, [Worker(id="gw3", name="gw3", role="grid_worker",
                                            areas=["G1"])])
        db.execute("UPDATE roster SET ends_at = %s WHERE worker_id = 'gw1'", [change])
        registry.add_shifts(db, [Shift(worker_id="gw3", starts_at=change,
                                       ends_at=change + timedelta(hours=8))])
    start(silent={"gw1", "gl1", "gw3", "cd1", "sd1"}, truth={})
    send_alarm(device, settings, "SD-1")
    url = settings.database.url
    assert wait_for_count(url, "SELECT count(*) FROM incident_log"
                          " WHERE action = 'handed_over'", 1) == 1
    incident, *_ = incident_row(db)
    # At whatever rung it is by then (the test's rungs are 3 s), gw3 is paged once.
    assert db.execute("SELECT count(*) FROM pages WHERE incident_id = %s"
                      " AND worker_id = 'gw3'", [incident]).fetchone()[0] == 1
    assert db.execute("SELECT detail->'from', detail->'to' FROM incident_log WHERE"
                      " action = 'handed_over'").fetchone() == (["gw1"], ["gw3"])


def test_a_scenario_with_people_runs_them_and_the_truth_says_what_each_did(
        make_settings, uid, db, tmp_path):
    """`firegrid simulate --people-api URL` with a scenario's [people] table: the fire of
    the scenario is answered by the registry's people through the real HTTP API, resolved
    as a real fire (the truth's cause), and every person's step is in the truth file."""
    files = topology.generate(tmp_path / "street", "tiny", seed=3)
    run_import(db, NoBrokerAuth(), [files[k] for k in ("hierarchy", "workers", "roster",
                                                       "devices")], actor="test", iterations=1)
    settings = alert_settings(make_settings, uid)
    scenario = tmp_path / "fire-with-people.toml"
    scenario.write_text(
        'name = "fire with people"\n[[fire]]\nat = "10s"\nduration = "2m"\n'
        '[people.field]\nsilent = 0\nacknowledge_s = [0.2, 0.5]\narrive_s = [0.2, 0.5]\n'
        'confirm_s = [0.2, 0.5]\nresolve_s = [1, 1]\n'
        '[people.desk]\nsilent = 0\nacknowledge_s = [0.2, 0.5]\n', encoding="utf-8")
    ingest = ThreadedIngest(settings).start()
    core = ThreadedAlerts(settings).start()
    api = LiveApi(settings).start()
    probe = Publisher(settings.mqtt.host, settings.mqtt.port, f"probe-{uid}")
    truth = tmp_path / "truth.jsonl"
    try:
        await_subscribed(probe, settings.mqtt.topic_prefix, db.info.dsn)
        run_simulation(settings, preset="tiny", scenarios=[scenario], speed=10, seed=3,
                       truth_path=truth, duration_s=120, street=topology.load(tmp_path / "street"),
                       people_api=api.url)
    finally:
        probe.close()
        api.stop()
        core.stop()
        ingest.stop()
    records = read(truth)
    fire = next(r for r in records if r["kind"] == "incident" and r["what"] == "fire")
    row = db.execute("SELECT state, cause, severity FROM incidents WHERE building_id = %s"
                     " ORDER BY id LIMIT 1", [fire["building"]]).fetchone()
    assert row == ("resolved", "real_fire", "confirmed")
    steps = {r["action"] for r in records if r["kind"] == "person"}
    assert {"paged", "acknowledge", "arrive", "resolve"} <= steps
