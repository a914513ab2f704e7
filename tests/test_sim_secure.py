"""The simulators against a broker that enforces per-device credentials (Mosquitto with the
dynamic-security plugin, the `secure_broker` fixture): a street registered with
`firegrid devices import`, exactly as an operator would, then run in per-device mode. Every
device must log in with its own id and password, and what the service account receives must
be exactly what the ground truth says was sent (so no publish was silently refused by an ACL).

The broker is shared by the test session: the street's device ids carry this test's uid, and
its accounts are deleted at the end."""

from __future__ import annotations

import asyncio

import psycopg

from devices.dynsec import MosquittoDynsec
from devices.importer import run_import
from simulators import topology
from simulators.mqtt import CONNACK, connect_packet, read_packet
from simulators.run import run_simulation
from simulators.truth import read
from tests.test_sim_broker import Subscriber, _published_keys, _unacked_keys


def _broker_said(secure_broker, uid: str, keep: int = 40) -> str:
    """The secure broker's log lines about this test's clients, other than their logins,
    their accounts being made and their clean DISCONNECTs: how it closed a session, and any
    change to their accounts meanwhile."""
    log = secure_broker.server.base / "mosquitto.log"
    routine = ("New client connected", "createClient", "createRole")
    lines = [line for line in log.read_text(errors="replace").splitlines()
             if uid in line and not line.endswith(" disconnected.")
             and not any(word in line for word in routine)]
    return "broker log:\n" + "\n".join(lines[-keep:])


# Short, and busy on the wire: a false alarm, a detector taken off its base, a detector whose
# connection drops every minute or so (each reconnect is a fresh login), a small flood.
SCENARIO = """
name = "secure"
[devices]
smoke_heartbeat_s = 60    # so every detector speaks in a few simulated minutes
[[cooking]]
at = "30s"
duration = "2m"
[[tamper]]
at = "1m"
duration = "3m"
[[flapping]]
at = "20s"
duration = "4m"
up = "70s"
down = "15s"
[[flood]]
at = "2m"
duration = "20s"
rate = 5
"""


def _refused(host: str, port: int, device_id: str, password: str) -> bool:
    async def attempt() -> bool:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(connect_packet(device_id, device_id, password, 30))
            first, body = await asyncio.wait_for(read_packet(reader), 10)
            return first == CONNACK and body[1] != 0
        finally:
            writer.close()
    return asyncio.run(attempt())


def test_every_device_logs_in_with_its_own_credentials(secure_settings, secure_broker, db_url,
                                                       uid, tmp_path):
    street_dir = tmp_path / "street"
    files = topology.generate(street_dir, "tiny", seed=5, id_prefix=f"{uid}-")
    street = topology.load(street_dir)
    ids = [d.id for d in street.devices]
    assert all(i.startswith(f"{uid}-") for i in ids)
    own = [d for d in street.devices if d.gateway_id is None]
    scenario = tmp_path / "secure.toml"
    scenario.write_text(SCENARIO)

    broker = MosquittoDynsec(secure_settings.mqtt, secure_settings.broker_auth)
    try:
        with psycopg.connect(db_url, autocommit=True) as conn:
            result = run_import(conn, broker, [files[k] for k in
                                               ("hierarchy", "workers", "roster", "devices")],
                                actor="test:sim-secure",
                                iterations=secure_settings.broker_auth.hash_iterations)
        assert result.written and result.plan.counts()["devices"] == len(ids)
        assert set(ids) <= broker.device_accounts()
        # The broker really checks: a device with someone else's password is refused.
        assert _refused(secure_broker.host, secure_broker.port, own[0].id, own[1].password)

        prefix = secure_broker.topic_prefix
        sub = Subscriber(secure_broker.host, secure_broker.port, prefix, f"sub-{uid}",
                         auth=secure_broker.service)
        truth_path = tmp_path / "truth.jsonl"
        try:
            summary = run_simulation(secure_settings, topology_dir=street_dir,
                                     scenarios=[scenario], speed=400, seed=5,
                                     truth_path=truth_path)
            said = _broker_said(secure_broker, uid)   # before the accounts go
            records = read(truth_path)
            sent = _published_keys(records)
            maybe = _unacked_keys(records)
            # The secure broker is shared by the session: only this test's devices count.
            got = sub.wait_for(sent - maybe, 10,
                               keep=lambda k: k[0].split("/")[-2].startswith(f"{uid}-"))
        finally:
            sub.close()
    finally:
        try:
            broker.remove_devices(ids)      # keep the shared plugin small for other tests
        finally:
            broker.close()

    assert summary.counters.connect_errors == 0, summary.counters.last_error
    # No session was thrown off by the broker (once in a CI run it threw off ten: its own
    # words on them, from its log, which goes with its state directory at the end).
    assert summary.counters.lost == 0, said
    flap = next(r for r in records if r["kind"] == "incident" and r["what"] == "flapping")
    # every device with a connection logged in, the flapping one once per drop again
    assert summary.stats.connected == len(own)
    assert summary.stats.connections_lost == len(flap["flaps"]) >= 2
    whats = {r["what"] for r in records if r["kind"] == "incident"}
    assert whats == {"cooking", "tamper", "flapping", "flood"}
    publishers = {r["device"] for r in records if r["kind"] == "published"}
    assert publishers == {d.id for d in own}     # everyone spoke, on their own account
    assert not maybe, "the broker left publishes unacknowledged"
    assert got <= sent, f"invented: {sorted(got - sent)[:5]}"
    assert sent <= got, f"missing (refused by an ACL?): {sorted(sent - got)[:5]}"
