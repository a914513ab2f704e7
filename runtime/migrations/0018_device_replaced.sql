-- A device replaced by another (a dead detector swapped on site): the new row names the one
-- it replaces, so the new id's history leads back to the old id's (its readings, alarms and
-- tickets stay under the old id, as they happened). One replacement per device. The
-- history trigger of 0002 records the link with the new row.
ALTER TABLE devices ADD COLUMN replaces fg_id UNIQUE REFERENCES devices;
