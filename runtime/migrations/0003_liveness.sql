-- Liveness, device conditions, maintenance tickets and the quarantine of unknown ids.
-- These tables change all the time and are derived from ingest, so they carry no history
-- trigger; tickets keep their own open/close record.

-- One row per registered device that has been heard from. Ingest writes it once per device
-- per flush interval (ingest.liveness), never once per message. last_seen is ingest's
-- receive time, not the device clock: a device that flushes an hour of buffered readings
-- after an outage is online now.
CREATE TABLE device_status (
    device_id           fg_id       PRIMARY KEY REFERENCES devices ON DELETE CASCADE,
    last_seen           timestamptz NOT NULL,
    last_ts             timestamptz,           -- device clock of the newest message
    reported_heartbeat_s integer,              -- the period the detector says it uses
    battery_pct         smallint,
    rsrp_dbm            smallint,
    stream_online       boolean,
    messages            bigint      NOT NULL DEFAULT 0
);
CREATE INDEX device_status_last_seen ON device_status (last_seen);

-- The latest state of each maintenance condition a device has reported. The newest device
-- timestamp wins, so several ingest processes can write in any order. reported_at is when
-- ingest received that message (server clock): what the monitor compares with a ticket's
-- closed_at, since a device clock running behind must not hide a report made after a
-- manual close. A manual close sets active = false and leaves both times alone.
CREATE TABLE device_conditions (
    device_id   fg_id       NOT NULL REFERENCES devices ON DELETE CASCADE,
    condition   text        NOT NULL CHECK (condition IN ('low_battery', 'tamper', 'fault',
                                                          'occlusion', 'video_loss')),
    active      boolean     NOT NULL,
    changed_ts  timestamptz NOT NULL,         -- device clock of the message that set it
    detail      text        NOT NULL DEFAULT '',
    reported_at timestamptz NOT NULL DEFAULT now(),  -- receive time of that message
    PRIMARY KEY (device_id, condition)
);

-- Tickets for field technicians. At most one open ticket per device and condition: the
-- database enforces the deduplication, so concurrent monitors cannot open two.
CREATE TABLE maintenance_tickets (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id    fg_id       NOT NULL REFERENCES devices ON DELETE CASCADE,
    condition    text        NOT NULL CHECK (condition IN ('offline', 'low_battery', 'tamper',
                                                           'fault', 'occlusion', 'video_loss')),
    opened_at    timestamptz NOT NULL,
    detail       text        NOT NULL DEFAULT '',
    assigned_to  fg_id       REFERENCES workers,
    closed_at    timestamptz,
    close_reason text        CHECK (close_reason IN ('cleared', 'retired', 'manual')),
    closed_by    text,
    close_note   text,                         -- what the technician did, for a manual close
    CHECK ((closed_at IS NULL) = (close_reason IS NULL))
);
CREATE UNIQUE INDEX maintenance_tickets_one_open
    ON maintenance_tickets (device_id, condition) WHERE closed_at IS NULL;
CREATE INDEX maintenance_tickets_open ON maintenance_tickets (opened_at) WHERE closed_at IS NULL;

-- Device ids that sent valid messages but are not registered. Their readings are stored as
-- usual (nothing is dropped); this list is where field teams find and claim them.
CREATE TABLE quarantine (
    device_id      text        PRIMARY KEY,
    first_seen     timestamptz NOT NULL,
    last_seen      timestamptz NOT NULL,
    messages       bigint      NOT NULL,
    last_topic     text        NOT NULL,
    claimed_at     timestamptz,
    claimed_by     text
);
CREATE INDEX quarantine_unclaimed ON quarantine (last_seen DESC) WHERE claimed_at IS NULL;
