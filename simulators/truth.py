"""Ground truth: what a run really published and which incidents really happened, as JSON lines,
so tests and benchmarks can hold the database (and later the alerts) against it: nothing
missing, nothing invented.

One JSON object per line, `kind` first (docs/simulators.md has the full format):

    run          once, first: seed, preset, scenarios, speed, mode, topic prefix, start_ts
    published    a message's first publish: device (the publisher), topic, ts, seq, type,
                 expect ("stored" or "dead_letter"), reason (the dead-letter reason ingest
                 should give), incident, entries (a gateway batch: [device_id, ts, seq, type])
    dropped      a message a device discarded unsent (its offline buffer was full)
    incident     an incident began: id, what (fire, cooking, outage, hostile), ts, building,
                 floor, origin device, devices affected...
    incident_end it ended: id, ts, and what the devices did (first alarm, alarm order)
    unacked      at the end of the run: published but never acknowledged by the broker (it
                 may or may not have arrived), or still waiting in a device's buffer; topic,
                 ts, seq and sent (whether it ever left the device)
    end          once, last: counts

Resends are not repeated: one `published` line per message, identified by (device, ts, seq)
as ingest identifies it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from simulators.uplink import Outgoing

_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class Truth:
    def __init__(self, path: Path | None = None) -> None:
        # In memory when no path is given (tests); on disk, line by line, otherwise, so a
        # long run does not hold every message twice.
        self.path = path
        self.records: list[dict[str, Any]] | None = [] if path is None else None
        self._file: IO[str] | None = path.open("w", encoding="utf-8") if path else None
        self.counts: dict[str, int] = {}
        # What each incident's building really has (fire, cooking, ...): the simulated
        # people resolve with it (simulators.people's cause_of). Read from their threads.
        self.buildings: dict[str, str] = {}

    def write(self, kind: str, **fields: Any) -> None:
        record = {"kind": kind, **fields}
        if kind == "incident" and "building" in fields:
            self.buildings[str(fields["building"])] = str(fields.get("what"))
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if self._file is not None:
            self._file.write(_ENCODE(record))
            self._file.write("\n")
        else:
            # No file means in memory from the start: the file is only dropped by close().
            assert self.records is not None
            self.records.append(record)

    def published(self, msg: Outgoing, topic: str, now_ms: int) -> None:
        self.write("published", **_describe(msg), topic=topic, sent_at=now_ms)

    def dropped(self, msg: Outgoing, now_ms: int) -> None:
        self.write("dropped", **_describe(msg), at=now_ms)

    def unacked(self, msg: Outgoing, topic: str) -> None:
        self.write("unacked", **_describe(msg), topic=topic, sent=msg.attempts > 0)

    def close(self) -> None:
        self.write("end", counts=dict(self.counts))
        if self._file is not None:
            self._file.close()
            self._file = None

    def lines(self) -> list[dict[str, Any]]:
        if self.records is not None:
            return self.records
        assert self.path is not None   # records is None only when writing to a file
        return read(self.path)


def _describe(msg: Outgoing) -> dict[str, Any]:
    d: dict[str, Any] = {"device": msg.device_id, "channel": msg.channel, "type": msg.type,
                         "ts": msg.ts, "seq": msg.seq,
                         "expect": "dead_letter" if msg.expect else "stored"}
    if msg.expect:
        d["reason"] = msg.expect
    if msg.incident:
        d["incident"] = msg.incident
    if msg.entries:
        d["entries"] = [list(e) for e in msg.entries]
    return d


def read(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def expected_rows(records: list[dict[str, Any]]) -> set[tuple[str, int, int]]:
    """(device_id, ts, seq) of every reading or event the database must hold: published,
    meant to be stored, gateway batches unpacked into their entries."""
    rows: set[tuple[str, int, int]] = set()
    for r in records:
        if r["kind"] != "published" or r["expect"] != "stored":
            continue
        if r["channel"] == "gateway":
            rows.update((d, ts, seq) for d, ts, seq, _ in r["entries"])
        else:
            rows.add((r["device"], r["ts"], r["seq"]))
    return rows


def maybe_rows(records: list[dict[str, Any]]) -> set[tuple[str, int, int]]:
    """Rows that may or may not be in the database: unacknowledged at the end of the run."""
    out: set[tuple[str, int, int]] = set()
    for r in records:
        if r["kind"] == "unacked" and r["sent"]:
            if r["channel"] == "gateway":
                out.update((d, ts, seq) for d, ts, seq, _ in r["entries"])
            else:
                out.add((r["device"], r["ts"], r["seq"]))
    return out
