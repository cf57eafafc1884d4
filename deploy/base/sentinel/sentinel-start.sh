#!/bin/sh
# Start one Sentinel: write its configuration, then exec the given command (valkey-sentinel).
#
# Sentinel keeps its state (the current primary, the epochs, the known replicas and Sentinels)
# in its configuration file and rewrites it as it learns. The file lives on the pod's volume
# (DATA_DIR), so a Sentinel that restarts, even with every other pod of the set, still knows
# which node was the primary last: that is what lets the Valkey nodes, which never guess, come
# back without losing an acknowledged write (valkey-start.sh). At every start the file is
# rendered again: the state lines are kept, everything else (users, passwords, timings) comes
# from here. A Sentinel without state (first deployment, lost volume) monitors, in this order:
#   1. the primary that another Sentinel follows (the group's current view);
#   2. the one Valkey node that runs as a primary (ROLE);
#   3. nothing yet: it waits and asks again, never guessing (a new set of Valkey nodes elects
#      its first node by itself, see valkey-start.sh, and then rule 2 finds it).
#
# Clients and peers need a user and a password (users.acl.in beside this file): Sentinels
# authenticate to each other and to Valkey as the ACL user `sentinel`. Passwords are the files
# VALKEY_<USER>_PASSWORD in SECRETS_DIR (the mounted valkey-users Secret) or else environment
# variables of those names (compose), with the same rules as valkey-start.sh.
#
# Every path and name can be overridden, so tests run this very script on loopback.
set -eu

CONFIG_DIR=${CONFIG_DIR:-/etc/sentinel}
DATA_DIR=${DATA_DIR:-/data}
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
VALKEY_CLI=${VALKEY_CLI:-valkey-cli}
CONFIG=$DATA_DIR/sentinel.conf

log() { echo "sentinel-start: $*"; }

password_of() {
    # The password of user $1, from VALKEY_<USER>_PASSWORD; empty when unset.
    var=VALKEY_$(printf '%s' "$1" | tr '[:lower:]-' '[:upper:]_')_PASSWORD
    if [ -f "$SECRETS_DIR/$var" ]; then
        value=$(cat "$SECRETS_DIR/$var")
    else
        eval "value=\${$var:-}"
    fi
    case $value in
        '') ;;
        *[!A-Za-z0-9_-]*)
            echo "sentinel-start: $var must hold only letters, digits, '-' and '_'" >&2
            exit 1
            ;;
        change-me | changeme | password | secret)
            echo "sentinel-start: $var is the example value: run \`task deploy:secrets\` or set your own" >&2
            exit 1
            ;;
        ????????????????*) ;;
        *)
            echo "sentinel-start: $var is shorter than 16 characters" >&2
            exit 1
            ;;
    esac
    printf '%s' "$value"
}

PASSWORD=$(password_of sentinel)
if [ -z "$PASSWORD" ]; then
    echo "sentinel-start: VALKEY_SENTINEL_PASSWORD must be set" >&2
    exit 1
fi

host_of() { printf '%s' "${1%:*}"; }
port_of() {
    case $1 in *:*) printf '%s' "${1##*:}" ;; *) printf '%s' "$2" ;; esac
}

ask() {
    # valkey-cli as user `sentinel` against host:port $1 (default port $2); empty when no answer.
    address=$1 default_port=$2
    shift 2
    VALKEYCLI_AUTH=$PASSWORD REDISCLI_AUTH=$PASSWORD timeout 3 "$VALKEY_CLI" --no-auth-warning --user sentinel \
        -h "$(host_of "$address")" -p "$(port_of "$address" "$default_port")" --raw "$@" 2>/dev/null | tr -d '\r' || true
}

primary_from_peers() {
    for peer in $PEERS; do
        [ "$(host_of "$peer")" = "$SELF" ] && [ "$(port_of "$peer" "$PORT")" = "$PORT" ] && continue
        answer=$(ask "$peer" "$PORT" SENTINEL get-master-addr-by-name "$MASTER_NAME" | paste -sd: -)
        case $answer in
            *:[0-9]*)
                printf '%s' "$answer"
                return
                ;;
        esac
    done
}

primary_from_nodes() {
    found=""
    for node in $NODES; do
        address=$(host_of "$node"):$(port_of "$node" "$VALKEY_PORT")
        if [ "$(ask "$address" "$VALKEY_PORT" ROLE | sed -n 1p)" = master ]; then
            found="$found $address"
        fi
    done
    # shellcheck disable=SC2086 # one word per primary
    set -- $found
    if [ "$#" -eq 1 ]; then
        printf '%s' "$1"
    fi
}

render_users() {
    while read -r name rules; do
        case $name in '' | '#'*) continue ;; esac
        password=$(password_of "$name")
        if [ -n "$password" ]; then
            printf 'user %s on >%s %s\n' "$name" "$password" "$rules"
        else
            printf 'user %s off %s\n' "$name" "$rules"
        fi
    done <"$CONFIG_DIR/users.acl.in"
}

mkdir -p "$DATA_DIR"
umask 077
state=""
if [ -f "$CONFIG" ] && grep -q "^sentinel monitor $MASTER_NAME " "$CONFIG"; then
    # What Sentinel learned; everything else is rendered below.
    state=$(grep -E "^sentinel (myid|current-epoch|monitor|config-epoch|leader-epoch|known-replica|known-sentinel) " "$CONFIG")
    log "$SELF keeps its state: $(grep "^sentinel monitor " "$CONFIG" | cut -d' ' -f3-5)"
else
    waited=""
    while :; do
        primary=$(primary_from_peers)
        [ -n "$primary" ] || primary=$(primary_from_nodes)
        [ -z "$primary" ] || break
        [ -n "$waited" ] || log "$SELF has no state and nobody names a primary yet: waiting"
        waited=yes
        sleep 1
    done
    state="sentinel monitor $MASTER_NAME $(host_of "$primary") $(port_of "$primary" "$VALKEY_PORT") $QUORUM"
    log "$SELF monitors $MASTER_NAME at $primary"
fi

{
    echo "port $PORT"
    echo "dir $DATA_DIR"
    echo "sentinel resolve-hostnames yes"
    echo "sentinel announce-hostnames yes"
    echo "sentinel announce-ip $SELF"
    echo "sentinel announce-port $PORT"
    render_users
    echo "sentinel sentinel-user sentinel"
    echo "sentinel sentinel-pass $PASSWORD"
    printf '%s\n' "$state"
    echo "sentinel auth-user $MASTER_NAME sentinel"
    echo "sentinel auth-pass $MASTER_NAME $PASSWORD"
    echo "sentinel down-after-milliseconds $MASTER_NAME $DOWN_AFTER_MS"
    echo "sentinel failover-timeout $MASTER_NAME $FAILOVER_TIMEOUT_MS"
    echo "sentinel parallel-syncs $MASTER_NAME 1"
} >"$CONFIG.tmp"
mv "$CONFIG.tmp" "$CONFIG"

if [ "$#" -gt 0 ]; then
    exec "$@"
fi
