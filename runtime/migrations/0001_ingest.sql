-- Readings and events as devices report them, and the dead-letter table for everything
-- that could not be stored. The idempotency key is (device_id, ts, seq): a redelivered
-- message carries the same device timestamp and sequence number, so it is stored once.
-- ts is part of every unique key because TimescaleDB requires the partitioning column there.

CREATE TABLE readings (
    device_id        text        NOT NULL,
    ts               timestamptz NOT NULL,  -- the device's own clock
    seq              bigint      NOT NULL,  -- per-device sequence number
    kind             text        NOT NULL CHECK (kind IN ('smoke', 'camera')),
    received_at      timestamptz NOT NULL,  -- when ingest took the message from the broker
    gateway_id       text,                  -- set when the reading came through a gateway
    -- smoke detector status
    obscuration_db_m real,
    temperature_c    real,
    battery_pct      smallint,
    battery_v        real,
    rsrp_dbm         smallint,
    sinr_db          real,
    heartbeat_s      integer,
    -- camera channel keepalive
    stream_online    boolean,
    recording        boolean,
    storage_free_mb  bigint,
    PRIMARY KEY (device_id, ts, seq)
);

CREATE TABLE events (
    device_id   text        NOT NULL,
    ts          timestamptz NOT NULL,
    seq         bigint      NOT NULL,
    type        text        NOT NULL,
    received_at timestamptz NOT NULL,
    gateway_id  text,
    attrs       jsonb       NOT NULL DEFAULT '{}',  -- the event's own fields (confidence, result, ...)
    PRIMARY KEY (device_id, ts, seq)
);
CREATE INDEX events_type_ts ON events (type, ts DESC);

-- One row per distinct bad payload on a topic: a flood of identical garbage bumps
-- seen_count instead of growing the table without bound.
CREATE TABLE dead_letters (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic             text        NOT NULL,
    payload           bytea       NOT NULL,  -- raw bytes, cut at max_payload_bytes when oversized
    payload_size      integer     NOT NULL,  -- size as received
    payload_sha256    bytea       NOT NULL,
    reason            text        NOT NULL,
    detail            text        NOT NULL,
    device_id         text,
    first_received_at timestamptz NOT NULL,
    last_received_at  timestamptz NOT NULL,
    seen_count        integer     NOT NULL DEFAULT 1,
    UNIQUE (topic, payload_sha256)
);
CREATE INDEX dead_letters_reason ON dead_letters (reason, last_received_at DESC);

-- The hourly per-device summary `readings_hourly` is created after the migrations by
-- runtime/migrate.py: a plain view here, a continuous aggregate on TimescaleDB.
