-- A building's own contact (the landlord, the manager, the 楼长): the person who opens the
-- doors and knows who lives where. The console offers a call button for them on every
-- incident of the building (致电楼栋联系人). Both optional: many rented buildings have none
-- on file yet. The history trigger of 0002 records changes to them like any other column.
ALTER TABLE buildings
    ADD COLUMN contact_name  text CHECK (contact_name <> ''),
    ADD COLUMN contact_phone text CHECK (contact_phone ~ '^\+?[0-9][0-9 -]{4,20}$');
