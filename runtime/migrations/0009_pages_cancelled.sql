-- A page whose incident was resolved before it went out is not sent and becomes
-- 'cancelled' (alerts/dispatch.py), with the reason in last_error. Not 'failed': nothing
-- failed to deliver, and firegrid_pages_total{outcome="failed"} wakes the operators'
-- FiregridPagesFailing alert. The constraint is 0006's, named by PostgreSQL's default.

ALTER TABLE pages DROP CONSTRAINT pages_status_check;
ALTER TABLE pages ADD CONSTRAINT pages_status_check
    CHECK (status IN ('pending', 'sent', 'failed', 'muted', 'cancelled'));
