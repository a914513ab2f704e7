-- Run by the firegrid-db-setup Job after `firegrid db migrate`, as the schema's owner
-- (firegrid). The logins themselves are CloudNativePG managed roles (cluster.yaml).
-- EMQX: the two views it authenticates and authorises devices with, nothing else
-- (docs/broker-auth.md, "The database login").
GRANT USAGE ON SCHEMA public TO firegrid_emqx;
GRANT SELECT ON broker_authn, broker_acl TO firegrid_emqx;
-- Grafana (on the replica): read every table and view, now and after later migrations.
GRANT USAGE ON SCHEMA public TO firegrid_grafana;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO firegrid_grafana;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO firegrid_grafana;
