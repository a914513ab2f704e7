-- A fire warning whose only device cleared its alarm or was hushed is held in the grid
-- instead of climbing to the community and the street (alerts/ladder.py); the escalator
-- logs it as 'held'. The constraint is 0006's, named by PostgreSQL's default. (The hold's
-- lookup, a device's clear after its alarm, uses the events primary key.)

ALTER TABLE incident_log DROP CONSTRAINT incident_log_action_check;
ALTER TABLE incident_log ADD CONSTRAINT incident_log_action_check
    CHECK (action IN ('raised', 'confirmed', 'notified', 'skipped', 'exhausted', 'forwarded',
                      'held', 'acknowledged', 'on_site', 'resolved', 'reopened'));

