-- A daily summary of readings per grid and device kind, for trends over months (the device
-- health dashboard's battery and signal panel). readings_hourly has one row per device and
-- hour, and devices report about hourly, so it is as big as the raw readings; this table
-- has one row per day, grid and kind: ~380 a day for a whole street (214 grids; detectors
-- and cameras), ~140,000 a year.
--
-- A plain table on both paths. devices/rollup.py (run by `firegrid devices monitor`) fills
-- it from readings_hourly, which on TimescaleDB is the continuous aggregate, and recomputes
-- the days that can still change. A day is the street's calendar day, 00:00 Asia/Shanghai,
-- as the dashboards' "today" and weeks are; UTC+8 has whole hours and no DST, so every
-- hourly bucket falls inside exactly one day.

CREATE TABLE readings_daily (
    day                 timestamptz NOT NULL,  -- 00:00 Asia/Shanghai
    -- The device's grid when the day was last computed (no foreign key: the history stays
    -- when the registry changes). kind is devices.kind.
    grid_id             fg_id       NOT NULL,
    kind                text        NOT NULL,
    devices             integer     NOT NULL,  -- devices with a reading that day
    samples             bigint      NOT NULL,  -- readings
    -- Battery: per device, its lowest level that day; then the lowest and the mean of those
    -- over the battery_devices that reported one. A mean over several rows is
    -- sum(avg_battery_pct * battery_devices) / sum(battery_devices).
    battery_devices     integer     NOT NULL,
    min_battery_pct     smallint,
    avg_battery_pct     real,
    -- Signal: means over the readings that carried it (rsrp_samples, sinr_samples), so rows
    -- combine the same way, weighted by those counts.
    rsrp_samples        bigint      NOT NULL,
    avg_rsrp_dbm        real,
    min_rsrp_dbm        real,                  -- the weakest hourly mean of any device
    sinr_samples        bigint      NOT NULL,
    avg_sinr_db         real,
    max_temperature_c   real,
    min_storage_free_mb bigint,                -- cameras
    computed_at         timestamptz NOT NULL,
    PRIMARY KEY (day, grid_id, kind)
);
-- The dashboard reads a range of days for some grids; the key's leading day serves it.

-- The rollup's own progress, one row. filled_through: every day up to it has been computed
-- (the backfill of history, then each day as it leaves the live window of today and
-- yesterday). settled_on: the day of the last pass over the older days that late readings
-- (ingest.max_age_days) can still change.
CREATE TABLE readings_daily_state (
    id             boolean     PRIMARY KEY DEFAULT true CHECK (id),
    filled_through date        NOT NULL,
    settled_on     date,
    refreshed_at   timestamptz NOT NULL
);

-- Reading a day's readings on plain PostgreSQL needs an index on ts (the key leads with
-- device_id). TimescaleDB creates this very index (name and all) when readings becomes a
-- hypertable, so there IF NOT EXISTS leaves it be.
CREATE INDEX IF NOT EXISTS readings_ts_idx ON readings (ts DESC);
