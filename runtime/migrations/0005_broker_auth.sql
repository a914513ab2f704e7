-- What a broker that reads firegrid's database needs to admit and confine devices: EMQX's
-- PostgreSQL authentication and authorisation run the queries in docs/broker-auth.md
-- against these two views. (Mosquitto keeps its own copy instead: devices/dynsec.py.)
--
-- Views, not tables fed by the registry: they are the registry, so a rotation or a
-- retirement is what the broker reads from the moment its transaction commits, and there is
-- no second copy to drift or to repair after a crash. Both are one primary-key look-up per
-- CONNECT or per authorisation check (username = devices.id).
--
-- Give the broker's database login SELECT on these views and nothing else: a view reads the
-- devices table with its owner's rights, so that login never sees the table itself.
-- Columns are plain text (not the fg_id domain) so any PostgreSQL client decodes them.

-- One row per device that may log in: not retired and holding a password hash. The hash is
-- hex PBKDF2-SHA256 over the salt's text (devices/credentials.py), which is what EMQX's
-- pbkdf2 algorithm computes with mac_fun = sha256.
CREATE VIEW broker_authn AS
SELECT d.id::text        AS username,
       d.password_hash   AS password_hash,
       d.password_salt   AS salt,
       false             AS is_superuser
FROM devices d
WHERE d.state <> 'retired' AND d.password_hash IS NOT NULL;

-- What each such device may do: publish on its own telemetry and event channels (gateways
-- also on their gateway channel) and subscribe to its own command channel. The topic prefix
-- (mqtt.topic_prefix) is the broker's business, so the query puts it in front:
--     <prefix>/<username>/<channel>
-- Anything without a row is denied by the broker's `no_match = deny`.
CREATE VIEW broker_acl AS
SELECT d.id::text  AS username,
       'allow'     AS permission,
       c.action    AS action,
       c.channel   AS channel
FROM devices d
JOIN (VALUES ('publish', 'telemetry'), ('publish', 'event'), ('publish', 'gateway'),
             ('subscribe', 'cmd')) AS c (action, channel)
  ON c.channel <> 'gateway' OR d.kind = 'gateway'
WHERE d.state <> 'retired' AND d.password_hash IS NOT NULL;
