#!/bin/sh
# Start one Valkey node: write its configuration, then exec the given command (valkey-server).
#
# The configuration is rendered at every container start, not once per pod, because the
# replication role is a fact of the moment: the Sentinels are asked who the primary is, so a
# node that was primary before a failover comes back as a replica of the new primary instead of
# a second primary. With no Sentinel answering (first deployment, compose), the first pod of the
# StatefulSet is the primary and the others replicate it.
#
# Passwords come from the valkey-users Secret: VALKEY_<USER>_PASSWORD for each user of
# users.acl.in, read from the file of that name in SECRETS_DIR (Kubernetes mounts the Secret
# there) or else from the environment variable (compose's env_file). They must be URL-safe
# (letters, digits, '-', '_') because the API's WEATHER_VALKEY_URL carries its password.
#
# Every path and name can be overridden, so tests run this very script on loopback.
set -eu

CONFIG_DIR=${CONFIG_DIR:-/etc/valkey}
SECRETS_DIR=${SECRETS_DIR:-/etc/valkey-users}
RUN_DIR=${RUN_DIR:-/run/valkey}
DATA_DIR=${DATA_DIR:-/data}
PORT=${PORT:-6379}
HEADLESS_SERVICE=${HEADLESS_SERVICE:-valkey-headless}
SELF=${SELF:-${POD_NAME:-$(hostname)}.$HEADLESS_SERVICE}
FIRST=${FIRST:-$(printf '%s' "${POD_NAME:-$(hostname)}" | sed 's/-[0-9]*$//')-0.$HEADLESS_SERVICE}
PRIMARY_PORT=${PRIMARY_PORT:-6379}
SENTINEL_HOST=${SENTINEL_HOST:-valkey-sentinel}
SENTINEL_PORT=${SENTINEL_PORT:-26379}
MASTER_NAME=${MASTER_NAME:-weather}
# 1: a primary refuses writes unless a replica is connected and at most MIN_REPLICAS_MAX_LAG
# seconds behind (see deploy/README.md); compose's single node sets 0.
MIN_REPLICAS_TO_WRITE=${MIN_REPLICAS_TO_WRITE:-1}
MIN_REPLICAS_MAX_LAG=${MIN_REPLICAS_MAX_LAG:-10}

password_of() {
    # The password of ACL user $1, from VALKEY_<USER>_PASSWORD; empty when unset.
    var=VALKEY_$(printf '%s' "$1" | tr '[:lower:]-' '[:upper:]_')_PASSWORD
    if [ -f "$SECRETS_DIR/$var" ]; then
        value=$(cat "$SECRETS_DIR/$var")
    else
        eval "value=\${$var:-}"
    fi
    case $value in
        *[!A-Za-z0-9_-]*)
            echo "valkey-start: $var must hold only letters, digits, '-' and '_'" >&2
            exit 1
            ;;
    esac
    printf '%s' "$value"
}

render_users() {
    # users.acl.in lines `<name> <rules>` become ACL file lines with the user's password.
    while read -r name rules; do
        case $name in '' | '#'*) continue ;; esac
        password=$(password_of "$name")
        if [ -n "$password" ]; then
            printf 'user %s %s on >%s\n' "$name" "$rules" "$password"
        else
            printf 'user %s %s off\n' "$name" "$rules"
        fi
    done <"$CONFIG_DIR/users.acl.in"
}

current_primary() {
    # The primary's host as the Sentinels know it, or nothing when none answers.
    timeout 5 valkey-cli -h "$SENTINEL_HOST" -p "$SENTINEL_PORT" --raw \
        SENTINEL get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | sed -n 1p || true
}

mkdir -p "$RUN_DIR"
umask 077
render_users >"$RUN_DIR/users.acl.tmp"
mv "$RUN_DIR/users.acl.tmp" "$RUN_DIR/users.acl"

primary=$(current_primary)
if [ -z "$primary" ]; then
    primary=$FIRST
fi

{
    echo "include $CONFIG_DIR/valkey.conf"
    echo "port $PORT"
    echo "dir $DATA_DIR"
    echo "aclfile $RUN_DIR/users.acl"
    echo "replica-announce-ip $SELF"
    echo "replica-announce-port $PORT"
    echo "min-replicas-to-write $MIN_REPLICAS_TO_WRITE"
    echo "min-replicas-max-lag $MIN_REPLICAS_MAX_LAG"
    echo "masteruser replica"
    echo "masterauth $(password_of replica)"
    if [ "$primary" != "$SELF" ]; then
        echo "replicaof $primary $PRIMARY_PORT"
    fi
} >"$RUN_DIR/valkey.conf.tmp"
mv "$RUN_DIR/valkey.conf.tmp" "$RUN_DIR/valkey.conf"

if [ "$primary" = "$SELF" ]; then
    echo "valkey-start: $SELF starts as the primary"
else
    echo "valkey-start: $SELF starts as a replica of $primary"
fi

if [ "$#" -gt 0 ]; then
    exec "$@"
fi
