-- The duty console (api/console.py, docs/console.md): live updates and browser
-- sessions.

-- Every change to an incident that people see, whoever writes it (the alert core, the API,
-- the CLI, a person at psql), NOTIFYs its id on 'firegrid_console' at COMMIT; the API's one
-- shared listener reads it back and pushes the incident to the consoles whose area holds it.
-- What is watched: a new incident; every transition and ladder step, which all write an
-- incident_log row (the audit rule); and repeat alerts (alert_count). Not a trigger on
-- every UPDATE of incidents: the log trigger already covers the escalator's UPDATE of
-- 1,000 rows, and a transition table of those rows is work on the hot path of a burst of
-- timers for nothing.
-- Statement-level with transition tables, and the ids go comma-separated, up to 500 in one
-- notification (a payload must stay under 8,000 bytes): a ladder pass over 1,000 timers
-- sends two notifications, not 1,000 (COMMIT takes a global lock to queue each one).
CREATE FUNCTION fg_console_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'incident_log' THEN
        PERFORM pg_notify('firegrid_console', string_agg(id::text, ','))
        FROM (SELECT id, (row_number() OVER (ORDER BY id) - 1) / 500 AS chunk
              FROM (SELECT DISTINCT incident_id AS id FROM changed) d) c
        GROUP BY chunk;
    ELSE
        PERFORM pg_notify('firegrid_console', string_agg(id::text, ','))
        FROM (SELECT id, (row_number() OVER (ORDER BY id) - 1) / 500 AS chunk
              FROM (SELECT DISTINCT id FROM changed) d) c
        GROUP BY chunk;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER console_insert AFTER INSERT ON incidents REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION fg_console_notify();
-- Ladder steps that leave the incident row as it was (a skipped rung) still change what the
-- console shows (the escalation state comes from the log).
CREATE TRIGGER console_log AFTER INSERT ON incident_log REFERENCING NEW TABLE AS changed
    FOR EACH STATEMENT EXECUTE FUNCTION fg_console_notify();
-- Repeat alerts raise alert_count (store.record's upsert); row-level and only when that
-- column is set, so the escalator's UPDATE never runs it.
CREATE FUNCTION fg_console_notify_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('firegrid_console', NEW.id::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER console_repeat AFTER UPDATE OF alert_count ON incidents
    FOR EACH ROW EXECUTE FUNCTION fg_console_notify_row();

-- Browser sessions: a person logs in once with their API token and the browser then holds
-- an HttpOnly cookie naming a session instead of the token (EventSource cannot send an
-- Authorization header). Only the session id's SHA-256 is kept, as for tokens. A session
-- lives no longer than its token: revoking the token, or setting its worker inactive, ends
-- it at once (the lookup joins both).
CREATE TABLE console_sessions (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_sha256 bytea       NOT NULL UNIQUE,
    token_id       bigint      NOT NULL REFERENCES api_tokens ON DELETE CASCADE,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    CHECK (expires_at > created_at)
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
