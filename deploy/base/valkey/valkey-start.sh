#!/bin/sh
# Start one Valkey node: write its configuration, then exec the given command (valkey-server).
#
# The replication role is a fact of the moment, so the configuration is rendered at every
# container start, and a node never guesses it (no split brain):
#   1. A strict majority of the Sentinels (SENTINELS) name the same primary: follow it, or be
#      it. (A node named primary that holds no data while a peer does, a lost volume, waits
#      instead and asks the Sentinels for a failover: an empty primary would make its replicas
#      drop everything. A waiting node never serves a sync: its link is down.)
#   2. Otherwise the node starts WAITING: a read-only replica of nothing (127.0.0.1:0) with
#      replica-priority 0, so that it serves no writes, is never promoted, and lets its peers
#      see what it holds. A background loop then decides, once a second:
#        a. a Sentinel majority appeared: as in 1;
#        b. exactly one peer runs as primary: follow it (it became primary by one of these
#           rules, or by a Sentinel failover);
#        c. the whole set is new (every node answers, none holds a key, none is primary or
#           replicating): the first node (FIRST) becomes the primary, the others follow it by b;
#        d. else keep waiting (nodes hold data and nobody can say which is current: the
#           Sentinels, which keep their state on a volume, will).
#      A node that follows a primary gets its replica-priority back only once it has synced,
#      so the Sentinels never promote a node whose data is not the primary's.
# With SENTINELS empty (compose's single node) the node is simply the primary.
# deploy/README.md ("Valkey start-up") explains the choices; tests/deploy/test_valkey_ha.py runs
# this very script through the split-brain scenario and a full restart in the worst order.
#
# Passwords come from the valkey-users Secret: VALKEY_<USER>_PASSWORD for each user of
# users.acl.in, read from the file of that name in SECRETS_DIR (Kubernetes mounts the Secret
# there) or else from the environment variable (compose's env_file). They must be URL-safe
# (letters, digits, '-', '_'), at least 16 characters, and not the example value.
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
# Where this node's own server answers (for its own reconfiguration).
LOCAL_HOST=${LOCAL_HOST:-127.0.0.1}
STATEFULSET=$(printf '%s' "${POD_NAME:-$(hostname)}" | sed 's/-[0-9]*$//')
# Every node of the set and every Sentinel, as host or host:port (default ports: PORT, 26379).
NODES=${NODES:-$STATEFULSET-0.$HEADLESS_SERVICE $STATEFULSET-1.$HEADLESS_SERVICE $STATEFULSET-2.$HEADLESS_SERVICE}
SENTINELS=${SENTINELS-valkey-sentinel-0.valkey-sentinel-headless valkey-sentinel-1.valkey-sentinel-headless valkey-sentinel-2.valkey-sentinel-headless}
MASTER_NAME=${MASTER_NAME:-weather}
VALKEY_CLI=${VALKEY_CLI:-valkey-cli}
# 1: a primary refuses writes unless a replica is connected and at most MIN_REPLICAS_MAX_LAG
# seconds behind (see deploy/README.md); compose's single node sets 0.
MIN_REPLICAS_TO_WRITE=${MIN_REPLICAS_TO_WRITE:-1}
MIN_REPLICAS_MAX_LAG=${MIN_REPLICAS_MAX_LAG:-10}
REPLICA_PRIORITY=${REPLICA_PRIORITY:-100}

log() { echo "valkey-start: $*"; }

password_of() {
    # The password of ACL user $1, from VALKEY_<USER>_PASSWORD; empty when unset.
    var=VALKEY_$(printf '%s' "$1" | tr '[:lower:]-' '[:upper:]_')_PASSWORD
    if [ -f "$SECRETS_DIR/$var" ]; then
        value=$(cat "$SECRETS_DIR/$var")
    else
        eval "value=\${$var:-}"
    fi
    case $value in
        '') ;;
        *[!A-Za-z0-9_-]*)
            echo "valkey-start: $var must hold only letters, digits, '-' and '_'" >&2
            exit 1
            ;;
        change-me | changeme | password | secret)
            echo "valkey-start: $var is the example value: run \`task deploy:secrets\` or set your own" >&2
            exit 1
            ;;
        ????????????????*) ;;
        *)
            echo "valkey-start: $var is shorter than 16 characters" >&2
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

host_of() { printf '%s' "${1%:*}"; }
port_of() {
    case $1 in *:*) printf '%s' "${1##*:}" ;; *) printf '%s' "$2" ;; esac
}

# valkey-cli as user $1 against host:port $2 (default port $3), the remaining arguments being
# the command; empty output when the server does not answer. Passwords travel in the
# environment, never on the command line.
ask() {
    user=$1 address=$2 default_port=$3
    shift 3
    eval "secret=\$${user}_password"
    # shellcheck disable=SC2154 # set by the eval above
    VALKEYCLI_AUTH=$secret REDISCLI_AUTH=$secret timeout 3 "$VALKEY_CLI" --no-auth-warning --user "$user" \
        -h "$(host_of "$address")" -p "$(port_of "$address" "$default_port")" --raw "$@" 2>/dev/null | tr -d '\r' || true
}

sentinel_majority() {
    # host:port that a strict majority of SENTINELS name as the primary, or nothing.
    total=0
    answers=""
    for sentinel in $SENTINELS; do
        total=$((total + 1))
        answer=$(ask sentinel "$sentinel" 26379 SENTINEL get-master-addr-by-name "$MASTER_NAME" | paste -sd: -)
        case $answer in *:[0-9]*) answers="$answers$answer
" ;; esac
    done
    printf '%s' "$answers" | sort | uniq -c | while read -r count address; do
        if [ $((count * 2)) -gt "$total" ]; then
            printf '%s' "$address"
        fi
    done
}

address_of() { printf '%s:%s' "$(host_of "$1")" "$(port_of "$1" "$PORT")"; }

ME=$(address_of "$SELF")
FIRST=$(address_of "$(printf '%s' "$NODES" | awk '{print $1}')")

keys_of() {
    # Keys a node holds (all databases), or nothing when it does not answer.
    ask sentinel "$1" "$PORT" INFO keyspace | awk -F'[=,:]' '/^db[0-9]+:/ {n += $3} /^# Keyspace/ {seen = 1} END {if (seen) print n + 0}'
}

replication_of() {
    # "master", "slave <host>:<port> <link status>", or nothing when the node does not answer.
    ask sentinel "$1" "$PORT" INFO replication | awk -F: '
        /^role:/ {role = $2} /^master_host:/ {host = $2} /^master_port:/ {port = $2}
        /^master_link_status:/ {link = $2}
        END {if (role == "master") print role; else if (role != "") print role, host ":" port, link}'
}

local_admin() { ask admin "$LOCAL_HOST" "$PORT" "$@" >/dev/null; }

follow() {
    # Replicate $1 (host:port); give the node its replica-priority back once it has synced (with
    # $1, or with whichever primary the Sentinels moved it to meanwhile).
    local_admin REPLICAOF "$(host_of "$1")" "$(port_of "$1" "$PORT")"
    log "$ME follows $1"
    while :; do
        case $(replication_of "$LOCAL_HOST:$PORT") in
            "slave 127.0.0.1:0 "*) ;;
            slave*" up") break ;;
        esac
        sleep 1
    done
    local_admin CONFIG SET replica-priority "$REPLICA_PRIORITY"
    log "$ME is in sync with $(replication_of "$LOCAL_HOST:$PORT" | cut -d' ' -f2)"
}

promote() {
    local_admin REPLICAOF NO ONE
    local_admin CONFIG SET replica-priority "$REPLICA_PRIORITY"
    log "$ME is the primary ($1)"
}

peer_holds_data() {
    for node in $NODES; do
        [ "$(address_of "$node")" = "$ME" ] && continue
        [ "$(keys_of "$node")" -gt 0 ] 2>/dev/null && return 0
    done
    return 1
}

decide() {
    # One round of rules 2a-2c; succeeds once the node has its role.
    primary=$(sentinel_majority)
    if [ -n "$primary" ]; then
        if [ "$primary" != "$ME" ]; then
            follow "$primary"
            return 0
        fi
        if [ "$(keys_of "$LOCAL_HOST:$PORT")" = 0 ] && peer_holds_data; then
            note "the Sentinels name $ME primary but it holds no data and a peer does: asking for a failover"
            # Once per 30 rounds, and only of a Sentinel that still names this node: a Sentinel
            # that already switched would fail its new primary over again.
            if [ "$failover_asked" -le 0 ]; then
                for sentinel in $SENTINELS; do
                    named=$(ask sentinel "$sentinel" 26379 SENTINEL get-master-addr-by-name "$MASTER_NAME" | paste -sd: -)
                    [ "$named" = "$ME" ] || continue
                    [ "$(ask sentinel "$sentinel" 26379 SENTINEL FAILOVER "$MASTER_NAME")" = OK ] && break
                done
                failover_asked=30
            fi
            failover_asked=$((failover_asked - 1))
            return 1
        fi
        promote "named by the Sentinels"
        return 0
    fi
    primaries="" answering=0 total=0 new=yes
    for node in $NODES; do
        total=$((total + 1))
        address=$(address_of "$node")
        state=$(replication_of "$address")
        [ -n "$state" ] || { new=no; continue; }
        answering=$((answering + 1))
        case $state in
            master) [ "$address" = "$ME" ] || primaries="$primaries $address" ;;
            "slave 127.0.0.1:0 "*) ;;
            *) new=no ;;
        esac
        [ "$state" = master ] && new=no
        [ "$(keys_of "$address")" = 0 ] || new=no
    done
    # shellcheck disable=SC2086 # one word per primary
    set -- $primaries
    if [ "$#" -eq 1 ]; then
        if [ "$(keys_of "$1")" = 0 ] && [ "$(keys_of "$LOCAL_HOST:$PORT")" != 0 ]; then
            note "$1 runs as primary with no data and $ME holds some: waiting"
            return 1
        fi
        follow "$1"
        return 0
    fi
    if [ "$#" -eq 0 ] && [ "$new" = yes ] && [ "$answering" -eq "$total" ] && [ "$ME" = "$FIRST" ]; then
        promote "the whole set is new"
        return 0
    fi
    note "no Sentinel majority, $# running primaries, $answering of $total nodes answer: waiting"
    return 1
}

noted=""
failover_asked=0
note() {
    # Log a waiting reason once, not every second.
    [ "$1" = "$noted" ] || log "$1"
    noted=$1
}

decide_in_background() {
    # Runs beside the server (which replaces this shell: $$ is its PID) until the role is settled.
    while kill -0 "$$" 2>/dev/null; do
        if [ -n "$(ask admin "$LOCAL_HOST" "$PORT" PING)" ] && decide; then
            return 0
        fi
        sleep 1
    done
}

mkdir -p "$RUN_DIR"
umask 077
render_users >"$RUN_DIR/users.acl.tmp"
mv "$RUN_DIR/users.acl.tmp" "$RUN_DIR/users.acl"
# shellcheck disable=SC2034 # admin_password and sentinel_password are read by ask() (eval)
admin_password=$(password_of admin)
replica_password=$(password_of replica)
# shellcheck disable=SC2034
sentinel_password=$(password_of sentinel)
for required in admin replica sentinel; do
    eval "value=\$${required}_password"
    if [ -z "$value" ]; then
        echo "valkey-start: VALKEY_$(printf '%s' "$required" | tr '[:lower:]' '[:upper:]')_PASSWORD must be set" >&2
        exit 1
    fi
done

role=waiting
if [ -z "$SENTINELS" ]; then
    role=primary
else
    primary=$(sentinel_majority)
    if [ -n "$primary" ] && [ "$primary" != "$ME" ]; then
        role="replica $primary"
    elif [ -n "$primary" ] && [ -d "$DATA_DIR/appendonlydir" ]; then
        role=primary
    fi
fi

{
    echo "include $CONFIG_DIR/valkey.conf"
    echo "port $PORT"
    echo "dir $DATA_DIR"
    echo "aclfile $RUN_DIR/users.acl"
    echo "replica-announce-ip $(host_of "$ME")"
    echo "replica-announce-port $PORT"
    echo "min-replicas-to-write $MIN_REPLICAS_TO_WRITE"
    echo "min-replicas-max-lag $MIN_REPLICAS_MAX_LAG"
    echo "masteruser replica"
    echo "masterauth $replica_password"
    case $role in
        primary) echo "replica-priority $REPLICA_PRIORITY" ;;
        replica*)
            primary=${role#replica }
            echo "replicaof $(host_of "$primary") $(port_of "$primary" "$PORT")"
            echo "replica-priority $REPLICA_PRIORITY"
            ;;
        waiting)
            echo "replicaof 127.0.0.1 0"
            echo "replica-priority 0"
            ;;
    esac
} >"$RUN_DIR/valkey.conf.tmp"
mv "$RUN_DIR/valkey.conf.tmp" "$RUN_DIR/valkey.conf"

case $role in
    primary) log "$ME starts as the primary" ;;
    replica*) log "$ME starts as a replica of ${role#replica }" ;;
    waiting)
        log "$ME starts waiting (read-only, never promoted) until its role is known"
        [ "$#" -gt 0 ] && decide_in_background &
        ;;
esac

if [ "$#" -gt 0 ]; then
    exec "$@"
fi
