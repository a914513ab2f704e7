-- Provider pushes we could not use (api/routes/callbacks.py): a voice receipt naming no
-- voice page, an SMS reply from a number of nobody or with nothing open to acknowledge.
-- The provider is answered "success" all the same (a retry cannot make them usable), so
-- this table is where an operator finds them, with the reason, instead of only a log line.
CREATE TABLE callback_rejects (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    source      text NOT NULL CHECK (source IN ('voice_report', 'sms_reply')),
    reason      text NOT NULL,
    entry       jsonb NOT NULL
);
CREATE INDEX callback_rejects_received_at ON callback_rejects (received_at);
