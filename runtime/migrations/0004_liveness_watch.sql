-- Liveness, second step: what 0003 lacked to stay right with several ingest processes and
-- through outages of ingest itself.

-- Device clock of the newest status report. Status fields (battery, reported heartbeat ...)
-- are replaced only by a newer report, so processes flushing in any order agree; last_ts
-- cannot serve, since an event newer than the status would hold the status back.
ALTER TABLE device_status ADD COLUMN status_ts timestamptz;

-- One row per ingest process (its MQTT client id), written by every liveness flush while
-- that process is subscribed to the broker. When no ingest is watching (ingest, broker or
-- flush down), every device looks silent; the monitor then opens no offline tickets rather
-- than one for every camera in the city. `since` is when the current unbroken run of
-- flushes began, so a backlog replayed after an outage gets time to land first.
CREATE TABLE ingest_heartbeats (
    client_id  text        PRIMARY KEY,
    since      timestamptz NOT NULL,
    flushed_at timestamptz NOT NULL
);

-- A device's ticket history, and the monitor's "was this closed by hand during the same
-- episode" look-up.
CREATE INDEX maintenance_tickets_device ON maintenance_tickets (device_id, condition, closed_at);
