-- The alert core's sign of life, for the duty console: each running alert core's escalator
-- writes its row every few seconds (alerts/heartbeat.py) and deletes it when it stops. No
-- fresh row means nothing escalates: the console then says 告警服务未运行 instead of a
-- countdown that will never fire. Times are the database's, so hosts' clocks do not matter.
CREATE TABLE alert_core_beats (
    instance   text        PRIMARY KEY,   -- <client id>@<host>:<pid>
    started_at timestamptz NOT NULL,
    beat_at    timestamptz NOT NULL
);
