#!/bin/sh
# preStop of a Valkey node: if it is the primary, hand the role over before it stops.
#
# Asks the Sentinels for a failover and waits (at most WAIT_SECONDS) until this node reports
# itself a replica, so a rolling update or a drain costs the API a second of 503s instead of
# the Sentinels' down-after period plus an election. Without Sentinels it just returns.
# Both questions are asked as the ACL user `sentinel` (ROLE here, SENTINEL FAILOVER there).
# tests/deploy/test_valkey_ha.py runs it against a real primary and three Sentinels.
set -u

SECRETS_DIR=${SECRETS_DIR:-/etc/valkey-users}
PORT=${PORT:-6379}
LOCAL_HOST=${LOCAL_HOST:-127.0.0.1}
SENTINELS=${SENTINELS-valkey-sentinel-0.valkey-sentinel-headless valkey-sentinel-1.valkey-sentinel-headless valkey-sentinel-2.valkey-sentinel-headless}
MASTER_NAME=${MASTER_NAME:-weather}
WAIT_SECONDS=${WAIT_SECONDS:-15}
VALKEY_CLI=${VALKEY_CLI:-valkey-cli}

password=$(cat "$SECRETS_DIR/VALKEY_SENTINEL_PASSWORD" 2>/dev/null || printf '%s' "${VALKEY_SENTINEL_PASSWORD:-}")
ask() {
    # valkey-cli as `sentinel` against host $1, port $2, the rest being the command.
    host=$1 port=$2
    shift 2
    VALKEYCLI_AUTH=$password REDISCLI_AUTH=$password timeout 3 "$VALKEY_CLI" --no-auth-warning --user sentinel \
        -h "$host" -p "$port" --raw "$@" 2>/dev/null | tr -d '\r'
}
role() { ask "$LOCAL_HOST" "$PORT" ROLE | sed -n 1p; }

[ "$(role)" = master ] || exit 0
echo "valkey-prestop: primary is stopping, asking the Sentinels for a failover"
asked=""
for sentinel in $SENTINELS; do
    case $sentinel in *:*) port=${sentinel##*:} ;; *) port=26379 ;; esac
    if [ "$(ask "${sentinel%:*}" "$port" SENTINEL FAILOVER "$MASTER_NAME")" = OK ]; then
        asked=$sentinel
        break
    fi
done
[ -n "$asked" ] || exit 0
# Once the Sentinels name the new primary, follow it at once instead of at the Sentinels' next
# look (up to 10 s): until then this node would still accept writes that the new primary never
# sees.
me=$LOCAL_HOST:$PORT
waited=0
while [ "$waited" -lt "$WAIT_SECONDS" ] && [ "$(role)" = master ]; do
    new=$(ask "${asked%:*}" "$port" SENTINEL get-master-addr-by-name "$MASTER_NAME" | paste -sd: -)
    case $new in
        "$me" | '') ;;
        *) ask "$LOCAL_HOST" "$PORT" REPLICAOF "${new%:*}" "${new##*:}" >/dev/null ;;
    esac
    sleep 1
    waited=$((waited + 1))
done
echo "valkey-prestop: role after ${waited} s: $(role)"
exit 0
