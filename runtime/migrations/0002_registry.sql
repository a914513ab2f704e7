-- The registry: the grid hierarchy, buildings, devices, people and their duty roster,
-- API tokens, and the history of every change. Liveness, maintenance tickets and the
-- quarantine of unknown device ids follow in 0003.
--
-- Ids are short text codes chosen by the street office (e.g. "SZ-FT-03-G12-B0457"), so
-- field teams can read them off a label; they share the device-id alphabet of the protocol.

CREATE DOMAIN fg_id AS text CHECK (VALUE ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$');

CREATE TABLE street_offices (
    id   fg_id PRIMARY KEY,
    name text  NOT NULL CHECK (name <> '')
);

CREATE TABLE communities (
    id        fg_id PRIMARY KEY,
    street_id fg_id NOT NULL REFERENCES street_offices,
    name      text  NOT NULL CHECK (name <> '')
);

-- A grid (网格): roughly 300-500 households, with its grid workers and a grid leader.
CREATE TABLE grids (
    id           fg_id   PRIMARY KEY,
    community_id fg_id   NOT NULL REFERENCES communities,
    name         text    NOT NULL CHECK (name <> ''),
    households   integer CHECK (households >= 0)
);
CREATE INDEX grids_community ON grids (community_id);

CREATE TABLE buildings (
    id         fg_id            PRIMARY KEY,
    grid_id    fg_id            NOT NULL REFERENCES grids,
    address    text             NOT NULL CHECK (address <> ''),
    lat        double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon        double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    floors     smallint         NOT NULL CHECK (floors BETWEEN 1 AND 200),
    households integer          CHECK (households >= 0),
    use        text             NOT NULL
               CHECK (use IN ('residential', 'rental', 'shop', 'workshop', 'mixed', 'public', 'other'))
);
CREATE INDEX buildings_grid ON buildings (grid_id);

-- Device credentials: the MQTT username is the device id; only a salted PBKDF2-SHA256 hash
-- of the password is kept (hex, the format EMQX's PostgreSQL authenticator reads, see
-- docs/broker-auth.md). A retired device keeps its row and history but loses its hash.
CREATE TABLE devices (
    id            fg_id       PRIMARY KEY,
    kind          text        NOT NULL CHECK (kind IN ('smoke_detector', 'camera', 'gateway')),
    model         text        NOT NULL DEFAULT '',
    firmware      text        NOT NULL DEFAULT '',
    building_id   fg_id       NOT NULL REFERENCES buildings,
    floor         smallint    CHECK (floor BETWEEN -10 AND 200),
    location      text        NOT NULL DEFAULT '',   -- room or spot inside the building
    gateway_id    fg_id       REFERENCES devices,    -- set when it reports through a gateway
    installed_at  timestamptz NOT NULL DEFAULT now(),
    state         text        NOT NULL DEFAULT 'provisioned'
                  CHECK (state IN ('provisioned', 'active', 'maintenance', 'retired')),
    heartbeat_s   integer     NOT NULL CHECK (heartbeat_s BETWEEN 10 AND 604800),
    password_hash text,                               -- hex PBKDF2-SHA256; NULL once retired
    password_salt text,
    credentials_rotated_at timestamptz,
    retired_at    timestamptz,
    CHECK ((state = 'retired') = (retired_at IS NOT NULL)),
    CHECK (state = 'retired' OR password_hash IS NOT NULL)
);
CREATE INDEX devices_building ON devices (building_id);

CREATE TABLE workers (
    id       fg_id   PRIMARY KEY,
    name     text    NOT NULL CHECK (name <> ''),
    role     text    NOT NULL CHECK (role IN ('grid_worker', 'grid_leader', 'community_duty',
                                              'street_duty', 'field_technician')),
    phone    text,
    -- Where to reach them, by channel: {"mqtt": true, "wecom": "...", "sms": "+86..."}.
    channels jsonb   NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(channels) = 'object'),
    active   boolean NOT NULL DEFAULT true
);

-- The areas a worker covers: grids for grid workers, leaders and technicians, a community
-- for community duty officers, a street for the street command centre.
CREATE TABLE worker_areas (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    worker_id    fg_id NOT NULL REFERENCES workers ON DELETE CASCADE,
    grid_id      fg_id REFERENCES grids,
    community_id fg_id REFERENCES communities,
    street_id    fg_id REFERENCES street_offices,
    CHECK (num_nonnulls(grid_id, community_id, street_id) = 1),
    UNIQUE NULLS NOT DISTINCT (worker_id, grid_id, community_id, street_id)
);
CREATE INDEX worker_areas_grid ON worker_areas (grid_id) WHERE grid_id IS NOT NULL;

-- The duty roster: concrete shifts. A worker is on duty at t when a shift covers t.
CREATE TABLE roster (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    worker_id fg_id       NOT NULL REFERENCES workers ON DELETE CASCADE,
    starts_at timestamptz NOT NULL,
    ends_at   timestamptz NOT NULL,
    CHECK (ends_at > starts_at),
    UNIQUE (worker_id, starts_at)
);
CREATE INDEX roster_when ON roster (starts_at, ends_at);

-- API tokens: only a SHA-256 of the token is stored (tokens are 256-bit random, so a
-- fast hash is enough to make a stolen table useless).
CREATE TABLE api_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text  NOT NULL,
    role         text  NOT NULL CHECK (role IN ('admin', 'field_technician', 'street_duty',
                                                'community_duty', 'grid_leader', 'grid_worker')),
    worker_id    fg_id REFERENCES workers,
    token_sha256 bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz
);
-- The history names a token's holder as api:<name>, so live names must be unique.
CREATE UNIQUE INDEX api_tokens_live_name ON api_tokens (name) WHERE revoked_at IS NULL;

-- History: who changed what, and when. Written by a trigger, so no code path can forget
-- it. The actor is the transaction's `firegrid.actor` setting (devices.registry sets it);
-- without one it is the database user. Password hashes never enter the history.
CREATE TABLE registry_history (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text        NOT NULL,
    entity    text        NOT NULL,
    entity_id text        NOT NULL,
    action    text        NOT NULL CHECK (action IN ('insert', 'update', 'delete')),
    old       jsonb,
    new       jsonb
);
CREATE INDEX registry_history_entity ON registry_history (entity, entity_id, at);

CREATE FUNCTION fg_record_history() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    old_row jsonb := CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) - 'password_hash' - 'password_salt' - 'token_sha256' END;
    new_row jsonb := CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) - 'password_hash' - 'password_salt' - 'token_sha256' END;
BEGIN
    IF TG_OP = 'UPDATE' AND old_row = new_row THEN
        RETURN NULL;  -- nothing a reader could see changed (a rotation sets credentials_rotated_at)
    END IF;
    INSERT INTO registry_history (actor, entity, entity_id, action, old, new)
    VALUES (coalesce(nullif(current_setting('firegrid.actor', true), ''), session_user),
            TG_TABLE_NAME, coalesce(new_row, old_row) ->> 'id', lower(TG_OP), old_row, new_row);
    RETURN NULL;
END $$;

CREATE TRIGGER history AFTER INSERT OR UPDATE OR DELETE ON street_offices FOR EACH ROW EXECUTE FUNCTION fg_record_history();
CREATE TRIGGER history AFTER INSERT OR UPDATE OR DELETE ON communities    FOR EACH ROW EXECUTE FUNCTION fg_record_history();
CREATE TRIGGER history AFTER INSERT OR UPDATE OR DELETE ON grids          FOR EACH ROW EXECUTE FUNCTION fg_record_history();
CREATE TRIGGER history AFTER INSERT OR UPDATE OR DELETE ON buildings      FOR EACH ROW EXECUTE FUNCTION fg_record_history();
CREATE TRIGGER history AFTER INSERT OR UPDATE OR DELETE ON devices        FOR EACH ROW EXECUTE FUNCTION fg_record_history();
CREATE TRIGGER history AFTER INSERT OR UPDATE OR DELETE ON workers        FOR EACH ROW EXECUTE FUNCTION fg_record_history();
CREATE TRIGGER history AFTER INSERT OR UPDATE OR DELETE ON worker_areas   FOR EACH ROW EXECUTE FUNCTION fg_record_history();
CREATE TRIGGER history AFTER INSERT OR UPDATE OR DELETE ON roster         FOR EACH ROW EXECUTE FUNCTION fg_record_history();
CREATE TRIGGER history AFTER INSERT OR UPDATE OR DELETE ON api_tokens     FOR EACH ROW EXECUTE FUNCTION fg_record_history();
