-- The duty console's look back lists what was resolved in the last 24 hours
-- (GET /v1/incidents?resolved_since=...): an index on the resolution time, for resolved
-- incidents only, so that list stays one index range however many years of incidents pile up.

CREATE INDEX incidents_resolved ON incidents (resolved_at) WHERE resolved_at IS NOT NULL;
