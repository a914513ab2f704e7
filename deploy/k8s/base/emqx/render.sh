#!/bin/sh
# Runs in EMQX's init container: writes emqx.conf with the database password, the ACL, and
# the bootstrap file of firegrid's service accounts into /opt/emqx/etc/firegrid (an
# emptyDir), so no secret is ever in a ConfigMap. Passwords are taken literally (awk, no
# regular expressions); they must not contain a double quote or a backslash (HOCON
# strings) or a comma or newline (CSV): generate them with `openssl rand -hex 24`.
set -eu
out=/opt/emqx/etc/firegrid
for v in EMQX_DB_PASSWORD INGEST_MQTT_PASSWORD ALERTS_MQTT_PASSWORD; do
    eval "val=\${$v:-}"
    [ -n "$val" ] || { echo "render.sh: $v is empty" >&2; exit 1; }
    case "$val" in *[\"\\,]*) echo "render.sh: $v has a quote, backslash or comma" >&2; exit 1;; esac
    [ "$val" != CHANGE_ME ] || { echo "render.sh: $v is still the placeholder CHANGE_ME" >&2; exit 1; }
done
awk '{
    v = ENVIRON["EMQX_DB_PASSWORD"]; m = "@EMQX_DB_PASSWORD@"
    while ((i = index($0, m)) > 0) $0 = substr($0, 1, i - 1) v substr($0, i + length(m))
    print
}' /config/emqx.conf.template > "$out/emqx.conf"
cp /config/firegrid-acl.conf "$out/firegrid-acl.conf"
umask 077
{
    echo "user_id,password,is_superuser"
    echo "firegrid-ingest,${INGEST_MQTT_PASSWORD},false"
    echo "firegrid-alerts,${ALERTS_MQTT_PASSWORD},false"
} > "$out/services.csv"
