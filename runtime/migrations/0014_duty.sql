-- Duty as people run it (issue 16).
--
-- The incident log gains the ladder's and people's new steps: 'repeating' (past the last
-- rung with nobody acknowledging, the ladder starts again after a pause), 'escalated' (a
-- person sent it up now), 'responder_added' and 'reassigned' (a person paged somebody
-- else), 'handed_over' (a shift changed while it was open: the incoming people paged).
ALTER TABLE incident_log DROP CONSTRAINT incident_log_action_check;
ALTER TABLE incident_log ADD CONSTRAINT incident_log_action_check
    CHECK (action IN ('raised', 'confirmed', 'notified', 'skipped', 'exhausted', 'forwarded',
                      'held', 'acknowledged', 'on_site', 'resolved', 'reopened',
                      'repeating', 'escalated', 'responder_added', 'reassigned',
                      'handed_over'));

-- Leave: a worker is off duty from starts_at to ends_at whatever the roster says; with a
-- substitute, the substitute gets every page the worker would have got in that time (the
-- worker's role and areas, the substitute's phone). Cancelling keeps the row (history).
CREATE TABLE leave (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    worker_id     fg_id       NOT NULL REFERENCES workers ON DELETE CASCADE,
    starts_at     timestamptz NOT NULL,
    ends_at       timestamptz NOT NULL,
    substitute_id fg_id       REFERENCES workers ON DELETE SET NULL,
    reason        text        CHECK (length(reason) <= 500),
    created_by    text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    cancelled_at  timestamptz,
    CHECK (ends_at > starts_at),
    CHECK (substitute_id IS DISTINCT FROM worker_id)
);
CREATE INDEX leave_when ON leave (starts_at, ends_at) WHERE cancelled_at IS NULL;
CREATE TRIGGER history AFTER INSERT OR UPDATE OR DELETE ON leave
    FOR EACH ROW EXECUTE FUNCTION fg_record_history();
