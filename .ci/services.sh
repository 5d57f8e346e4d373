# Sourced by .ci/run: makes sure the services the tests need answer on loopback.
# A service given by REDIS_URL / DATABASE_URL / REDIS_CLUSTER_URLS / REDIS_SENTINEL_URLS is used
# as is; otherwise the local port is used when it answers, and else the service is installed
# from Debian's packages and started.

REDIS_PORT="${REDIS_PORT:-6379}"
# A three-master Redis Cluster (no replicas), and a master watched by one Redis Sentinel.
REDIS_CLUSTER_PORTS="${REDIS_CLUSTER_PORTS:-7101 7102 7103}"
REDIS_SENTINEL_MASTER_PORT="${REDIS_SENTINEL_MASTER_PORT:-6391}"
REDIS_SENTINEL_PORT="${REDIS_SENTINEL_PORT:-26391}"
PG_PORT="${PG_PORT:-5432}"

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() {
    for _ in $(seq 1 150); do
        port_open "$1" && return 0
        sleep 0.2
    done
    echo "service on port $1 did not start" >&2
    return 1
}

apt_install() {
    if [ -z "${APT_UPDATED:-}" ]; then
        apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_redis() {
    if [ -n "${REDIS_URL:-}" ]; then return 0; fi
    if ! port_open "$REDIS_PORT"; then
        command -v redis-server >/dev/null || apt_install redis-server
        redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" \
            --appendonly no --dir /tmp --logfile "/tmp/ci-redis-$REDIS_PORT.log"
        wait_for_port "$REDIS_PORT"
    fi
    export REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
}

redis_cli() { redis-cli -h 127.0.0.1 "$@"; }

ensure_redis_tools() {
    command -v redis-server >/dev/null || apt_install redis-server
    command -v redis-cli >/dev/null || apt_install redis-tools
}

# Starts a throwaway redis-server on loopback that keeps nothing on disk; extra options follow.
start_redis_node() {
    local port="$1" dir="$2"
    shift 2
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
        --dir "$dir" --logfile "$dir/redis-$port.log" "$@"
    wait_for_port "$port"
}

cluster_is_ok() { redis_cli -p "$1" cluster info 2>/dev/null | grep -q '^cluster_state:ok'; }

# REDIS_CLUSTER_URLS: three masters on REDIS_CLUSTER_PORTS, every slot assigned. A healthy
# cluster already on those ports is reused; anything else there is shut down and replaced.
ensure_redis_cluster() {
    if [ -n "${REDIS_CLUSTER_URLS:-}" ]; then return 0; fi
    ensure_redis_tools
    local port first="" nodes="" urls="" healthy=1
    local dir="/tmp/ci-redis-cluster"
    for port in $REDIS_CLUSTER_PORTS; do
        first="${first:-$port}"
        nodes="$nodes 127.0.0.1:$port"
        urls="${urls:+$urls,}redis://127.0.0.1:$port"
        cluster_is_ok "$port" || healthy=0
    done
    if [ "$healthy" = 0 ]; then
        for port in $REDIS_CLUSTER_PORTS; do
            if port_open "$port"; then redis_cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; fi
        done
        rm -rf "$dir" && mkdir -p "$dir"
        for port in $REDIS_CLUSTER_PORTS; do
            start_redis_node "$port" "$dir" --cluster-enabled yes \
                --cluster-config-file "$dir/nodes-$port.conf" --cluster-node-timeout 5000
        done
        # shellcheck disable=SC2086 # one argument per node
        redis-cli --cluster create $nodes --cluster-replicas 0 --cluster-yes >"$dir/create.log"
        for _ in $(seq 1 150); do
            healthy=1
            for port in $REDIS_CLUSTER_PORTS; do cluster_is_ok "$port" || healthy=0; done
            [ "$healthy" = 1 ] && break
            sleep 0.2
        done
        if [ "$healthy" = 0 ]; then
            echo "redis cluster on $REDIS_CLUSTER_PORTS did not reach cluster_state:ok" >&2
            return 1
        fi
    fi
    export REDIS_CLUSTER_URLS="$urls"
}

# REDIS_SENTINEL_URLS and REDIS_SENTINEL_MASTER: a master on REDIS_SENTINEL_MASTER_PORT watched
# by one sentinel on REDIS_SENTINEL_PORT (Debian's redis-sentinel is redis-server --sentinel).
ensure_redis_sentinel() {
    if [ -n "${REDIS_SENTINEL_URLS:-}" ]; then return 0; fi
    ensure_redis_tools
    local master="rtr-master" dir="/tmp/ci-redis-sentinel"
    if ! port_open "$REDIS_SENTINEL_PORT"; then
        mkdir -p "$dir"
        port_open "$REDIS_SENTINEL_MASTER_PORT" || start_redis_node "$REDIS_SENTINEL_MASTER_PORT" "$dir"
        cat >"$dir/sentinel.conf" <<CONF
port $REDIS_SENTINEL_PORT
bind 127.0.0.1
daemonize yes
dir $dir
logfile $dir/sentinel.log
sentinel monitor $master 127.0.0.1 $REDIS_SENTINEL_MASTER_PORT 1
sentinel down-after-milliseconds $master 5000
sentinel failover-timeout $master 10000
CONF
        redis-server "$dir/sentinel.conf" --sentinel
        wait_for_port "$REDIS_SENTINEL_PORT"
    fi
    local known=0
    for _ in $(seq 1 150); do
        if redis_cli -p "$REDIS_SENTINEL_PORT" sentinel get-master-addr-by-name "$master" \
            2>/dev/null | grep -q .; then
            known=1 && break
        fi
        sleep 0.2
    done
    if [ "$known" = 0 ]; then
        echo "sentinel on $REDIS_SENTINEL_PORT does not know master $master" >&2
        return 1
    fi
    export REDIS_SENTINEL_URLS="redis://127.0.0.1:$REDIS_SENTINEL_PORT"
    export REDIS_SENTINEL_MASTER="$master"
}

ensure_postgres() {
    if [ -n "${DATABASE_URL:-}" ]; then return 0; fi
    if ! port_open "$PG_PORT"; then
        ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql
        local bin dir
        bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
        dir="/tmp/ci-postgres-$PG_PORT"
        rm -rf "$dir" && mkdir -p "$dir" && chown postgres:postgres "$dir"
        # initdb refuses to run as root: the package's postgres user owns the cluster.
        su postgres -c "$bin/initdb -D $dir/data -A trust -U postgres" >/dev/null
        su postgres -c "$bin/pg_ctl -D $dir/data -l $dir/log -w start \
            -o '-c listen_addresses=127.0.0.1 -p $PG_PORT -k $dir'" >/dev/null
        wait_for_port "$PG_PORT"
        su postgres -c "$bin/createdb -h 127.0.0.1 -p $PG_PORT -U postgres test"
    fi
    export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/test"
}
