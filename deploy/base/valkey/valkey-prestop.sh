#!/bin/sh
# preStop of a Valkey node: if it is the primary, hand the role over before it stops.
#
# Asks the Sentinels for a failover and waits (at most WAIT_SECONDS) until this node reports
# itself a replica, so a rolling update or a drain costs the API a second of 503s instead of
# the Sentinels' down-after period plus an election. Without Sentinels it just returns.
set -u

SECRETS_DIR=${SECRETS_DIR:-/etc/valkey-users}
PORT=${PORT:-6379}
SENTINEL_HOST=${SENTINEL_HOST:-valkey-sentinel}
SENTINEL_PORT=${SENTINEL_PORT:-26379}
MASTER_NAME=${MASTER_NAME:-weather}
WAIT_SECONDS=${WAIT_SECONDS:-15}

password=$(cat "$SECRETS_DIR/VALKEY_REPLICA_PASSWORD" 2>/dev/null || printf '%s' "${VALKEY_REPLICA_PASSWORD:-}")
role() {
    VALKEYCLI_AUTH=$password REDISCLI_AUTH=$password timeout 2 valkey-cli --user replica \
        -p "$PORT" --raw ROLE 2>/dev/null | sed -n 1p
}

[ "$(role)" = master ] || exit 0
echo "valkey-prestop: primary is stopping, asking the Sentinels for a failover"
timeout 3 valkey-cli -h "$SENTINEL_HOST" -p "$SENTINEL_PORT" SENTINEL FAILOVER "$MASTER_NAME" || exit 0
waited=0
while [ "$waited" -lt "$WAIT_SECONDS" ] && [ "$(role)" = master ]; do
    sleep 1
    waited=$((waited + 1))
done
exit 0
