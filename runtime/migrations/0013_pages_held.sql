-- Inhibition (alerts/dispatch.py ticket_pages): a maintenance ticket opened while its
-- building has an open fire incident is not paged to the technician (the detector is
-- offline because it is burning); its page waits as 'held' and goes out, or is cancelled
-- if the ticket closed meanwhile, when the incident is resolved (alerts/loop.py).

ALTER TABLE pages DROP CONSTRAINT pages_status_check;
ALTER TABLE pages ADD CONSTRAINT pages_status_check
    CHECK (status IN ('pending', 'sent', 'failed', 'muted', 'cancelled', 'held'));
