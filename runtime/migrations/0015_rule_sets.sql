-- Rules changed at run time (issue 16): each PUT /v1/rules saves the whole rules file as a
-- new version; the newest wins over alerts.rules_file in every alert-core process and in
-- the API, from the next rung on (alerts/ruleset.py). Versions are never changed or
-- deleted: the table is the history.
CREATE TABLE rule_sets (
    version    integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    body       text        NOT NULL CHECK (length(body) <= 100000),
    note       text        CHECK (length(note) <= 2000),
    created_by text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
