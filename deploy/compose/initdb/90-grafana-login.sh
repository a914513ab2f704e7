#!/bin/sh
# Runs once, when the timescaledb container initialises an empty data volume
# (/docker-entrypoint-initdb.d). Grafana's read-only login: SELECT on every table and view
# the firegrid role creates from now on (the migrations run later, as that role), nothing
# else. It can read no table firegrid has not created and write none.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v grafana_password="$GRAFANA_DB_PASSWORD" -v owner="$POSTGRES_USER" -v db="$POSTGRES_DB" <<'SQL'
CREATE ROLE firegrid_grafana LOGIN PASSWORD :'grafana_password';
GRANT CONNECT ON DATABASE :"db" TO firegrid_grafana;
GRANT USAGE ON SCHEMA public TO firegrid_grafana;
ALTER DEFAULT PRIVILEGES FOR ROLE :"owner" IN SCHEMA public GRANT SELECT ON TABLES TO firegrid_grafana;
SQL
