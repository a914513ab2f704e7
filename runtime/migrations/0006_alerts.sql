-- The alert core: alerts, incidents, their audit trail, silences and the notification log.
-- Everything the alert core knows lives here, so a restarted or second alert-core process
-- picks up exactly where another left off (alerts/README in docs/alerts.md).

-- Mute pages for a device, a building or a grid for a while (renovation, a device under
-- test). The record is never muted: alerts and incidents are kept as usual, only the pages
-- are written with status 'muted' instead of being sent.
CREATE TABLE silences (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id   fg_id       REFERENCES devices,
    building_id fg_id       REFERENCES buildings,
    grid_id     fg_id       REFERENCES grids,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    reason      text        NOT NULL CHECK (reason <> ''),
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(device_id, building_id, grid_id) = 1),
    CHECK (ends_at > starts_at)
);
CREATE INDEX silences_until ON silences (ends_at);

-- One row per open or closed incident: a building and a hazard. The partial unique index
-- is the grouping rule: at most one open incident per building and hazard, whatever the
-- number of alert-core processes racing to open it.
CREATE TABLE incidents (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    building_id     fg_id       NOT NULL REFERENCES buildings,
    hazard          text        NOT NULL CHECK (hazard IN ('fire')),
    severity        text        NOT NULL CHECK (severity IN ('warning', 'confirmed')),
    state           text        NOT NULL CHECK (state IN ('raised', 'notified', 'acknowledged',
                                                          'on_site', 'resolved')),
    opened_at       timestamptz NOT NULL,
    last_alert_at   timestamptz NOT NULL,
    alert_count     integer     NOT NULL DEFAULT 0,
    muted           boolean     NOT NULL DEFAULT false,  -- every alert so far came muted
    confirmed_at    timestamptz,
    notified_at     timestamptz,            -- first page written (not muted)
    acknowledged_at timestamptz,
    acknowledged_by text,
    on_site_at      timestamptz,
    on_site_by      text,
    resolved_at     timestamptz,
    resolved_by     text,
    cause           text CHECK (cause IN ('real_fire', 'cooking_steam', 'dust_insects',
                                          'device_fault', 'test_drill')),
    note            text,
    reopened        integer     NOT NULL DEFAULT 0,
    -- The escalation ladder: which ladder (by severity), the last rung fired (-1: none),
    -- the page step counter (pages are unique per step and person), and the timer.
    ladder          text        NOT NULL,
    rung            integer     NOT NULL DEFAULT -1,
    step            integer     NOT NULL DEFAULT 0,
    escalate_at     timestamptz,            -- NULL: no timer running
    CHECK ((state = 'resolved') = (resolved_at IS NOT NULL)),
    CHECK (state <> 'resolved' OR cause IS NOT NULL)
);
CREATE UNIQUE INDEX incidents_one_open ON incidents (building_id, hazard) WHERE state <> 'resolved';
CREATE INDEX incidents_due ON incidents (escalate_at) WHERE escalate_at IS NOT NULL;
CREATE INDEX incidents_opened ON incidents (opened_at);

-- Every message a rule fired on. The key is the message's identity plus the rule, so a
-- redelivered message (the alert core crashed before acknowledging) adds nothing.
-- building_id and incident_id are NULL for a device the registry does not know: the alert
-- is kept, and counted, but cannot be routed.
CREATE TABLE alerts (
    device_id   text        NOT NULL,
    ts          timestamptz NOT NULL,           -- device clock
    seq         bigint      NOT NULL,
    rule        text        NOT NULL,
    device_kind text,
    building_id fg_id       REFERENCES buildings,
    incident_id bigint      REFERENCES incidents,
    received_at timestamptz NOT NULL,           -- alert core receive time
    muted       boolean     NOT NULL DEFAULT false,
    detail      jsonb       NOT NULL DEFAULT '{}',
    PRIMARY KEY (device_id, ts, seq, rule)
);
CREATE INDEX alerts_incident ON alerts (incident_id, received_at);
CREATE INDEX alerts_unroutable ON alerts (received_at) WHERE incident_id IS NULL;

-- The audit trail: every transition and ladder step, with actor and time.
CREATE TABLE incident_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id bigint      NOT NULL REFERENCES incidents,
    at          timestamptz NOT NULL,
    actor       text        NOT NULL,
    action      text        NOT NULL CHECK (action IN (
                    'raised', 'confirmed', 'notified', 'skipped', 'exhausted', 'forwarded',
                    'acknowledged', 'on_site', 'resolved', 'reopened')),
    from_state  text,
    to_state    text,
    detail      jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX incident_log_incident ON incident_log (incident_id, at);

-- The notification log, also the outbox: a page is written in the same transaction as the
-- step that calls for it, then sent. Unique per incident (or ticket), step, person and
-- channel, so no step pages anyone twice, whichever process fires it.
CREATE TABLE pages (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id bigint      REFERENCES incidents,
    ticket_id   bigint      REFERENCES maintenance_tickets,
    step        integer     NOT NULL,
    worker_id   fg_id       REFERENCES workers,  -- NULL for the fire-service (119) hook
    channel     text        NOT NULL CHECK (channel IN ('mqtt', 'webhook', 'sms', 'wecom',
                                                        'dingtalk', 'feishu', 'email',
                                                        'fire_service')),
    status      text        NOT NULL CHECK (status IN ('pending', 'sent', 'failed', 'muted')),
    created_at  timestamptz NOT NULL,
    due_at      timestamptz NOT NULL,            -- next attempt
    attempts    integer     NOT NULL DEFAULT 0,
    sent_at     timestamptz,
    last_error  text,
    payload     jsonb       NOT NULL,
    CHECK (num_nonnulls(incident_id, ticket_id) = 1),
    UNIQUE NULLS NOT DISTINCT (incident_id, ticket_id, step, worker_id, channel)
);
CREATE INDEX pages_pending ON pages (due_at) WHERE status = 'pending';
CREATE INDEX pages_worker ON pages (worker_id, created_at);
CREATE INDEX pages_ticket ON pages (ticket_id) WHERE ticket_id IS NOT NULL;

-- False alarms feed back into maintenance: a detector that keeps raising false alarms gets
-- a ticket for a technician (alerts.feedback).
ALTER TABLE maintenance_tickets DROP CONSTRAINT maintenance_tickets_condition_check;
ALTER TABLE maintenance_tickets ADD CONSTRAINT maintenance_tickets_condition_check
    CHECK (condition IN ('offline', 'low_battery', 'tamper', 'fault', 'occlusion', 'video_loss',
                         'false_alarms'));
