#!/bin/sh
# Start one Sentinel: write its configuration, then exec the given command (valkey-sentinel).
#
# Sentinel rewrites its configuration file as it learns (replicas, peers, the current epoch),
# so the file lives in a writable emptyDir and is rendered fresh at every start. What to
# monitor is decided in this order:
#   1. the primary that another Sentinel already follows (the group's current view, also after
#      a failover);
#   2. the Valkey node that says it is a primary (ROLE), when no Sentinel answers;
#   3. the first pod of the Valkey StatefulSet (first deployment).
#
# The Sentinels themselves take no password: the NetworkPolicy lets only the API, the Valkey
# pods and the Sentinels reach port 26379 (see deploy/README.md). To Valkey they authenticate
# as the ACL user `sentinel`, whose password is the file VALKEY_SENTINEL_PASSWORD in SECRETS_DIR
# (the mounted valkey-users Secret) or else the environment variable of that name (compose).
#
# Every path and name can be overridden, so tests run this very script on loopback.
set -eu

RUN_DIR=${RUN_DIR:-/run/sentinel}
PORT=${PORT:-26379}
HEADLESS_SERVICE=${HEADLESS_SERVICE:-valkey-sentinel-headless}
SELF=${SELF:-${POD_NAME:-$(hostname)}.$HEADLESS_SERVICE}
# Space-separated host names (host:port where the port differs from the defaults).
PEERS=${PEERS:-valkey-sentinel-0.$HEADLESS_SERVICE valkey-sentinel-1.$HEADLESS_SERVICE valkey-sentinel-2.$HEADLESS_SERVICE}
NODES=${NODES:-valkey-0.valkey-headless valkey-1.valkey-headless valkey-2.valkey-headless}
VALKEY_PORT=${VALKEY_PORT:-6379}
MASTER_NAME=${MASTER_NAME:-weather}
QUORUM=${QUORUM:-2}
DOWN_AFTER_MS=${DOWN_AFTER_MS:-5000}
FAILOVER_TIMEOUT_MS=${FAILOVER_TIMEOUT_MS:-30000}
SECRETS_DIR=${SECRETS_DIR:-/etc/valkey-users}
if [ -f "$SECRETS_DIR/VALKEY_SENTINEL_PASSWORD" ]; then
    PASSWORD=$(cat "$SECRETS_DIR/VALKEY_SENTINEL_PASSWORD")
else
    PASSWORD=${VALKEY_SENTINEL_PASSWORD:?VALKEY_SENTINEL_PASSWORD must be set}
fi

host_of() { printf '%s' "${1%:*}"; }
port_of() {
    case $1 in *:*) printf '%s' "${1##*:}" ;; *) printf '%s' "$2" ;; esac
}

primary_from_peers() {
    for peer in $PEERS; do
        [ "$(host_of "$peer")" = "$SELF" ] && continue
        answer=$(timeout 3 valkey-cli -h "$(host_of "$peer")" -p "$(port_of "$peer" "$PORT")" --raw \
            SENTINEL get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | sed -n 1p || true)
        if [ -n "$answer" ]; then
            printf '%s' "$answer"
            return
        fi
    done
}

primary_from_nodes() {
    for node in $NODES; do
        role=$(VALKEYCLI_AUTH=$PASSWORD REDISCLI_AUTH=$PASSWORD timeout 3 valkey-cli --user sentinel \
            -h "$(host_of "$node")" -p "$(port_of "$node" "$VALKEY_PORT")" --raw ROLE 2>/dev/null | sed -n 1p || true)
        if [ "$role" = master ]; then
            printf '%s' "$node"
            return
        fi
    done
}

primary=$(primary_from_peers)
[ -n "$primary" ] || primary=$(primary_from_nodes)
[ -n "$primary" ] || primary=$(printf '%s' "$NODES" | cut -d' ' -f1)
primary_host=$(host_of "$primary")
primary_port=$(port_of "$primary" "$VALKEY_PORT")

mkdir -p "$RUN_DIR"
umask 077
cat >"$RUN_DIR/sentinel.conf.tmp" <<EOF
port $PORT
dir $RUN_DIR
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $SELF
sentinel announce-port $PORT
sentinel monitor $MASTER_NAME $primary_host $primary_port $QUORUM
sentinel auth-user $MASTER_NAME sentinel
sentinel auth-pass $MASTER_NAME $PASSWORD
sentinel down-after-milliseconds $MASTER_NAME $DOWN_AFTER_MS
sentinel failover-timeout $MASTER_NAME $FAILOVER_TIMEOUT_MS
sentinel parallel-syncs $MASTER_NAME 1
EOF
mv "$RUN_DIR/sentinel.conf.tmp" "$RUN_DIR/sentinel.conf"
echo "sentinel-start: $SELF monitors $MASTER_NAME at $primary_host:$primary_port"

if [ "$#" -gt 0 ]; then
    exec "$@"
fi
