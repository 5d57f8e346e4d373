# Sourced by .ci/run: makes sure the services the tests need answer on loopback.
# A service given by REDIS_URL / DATABASE_URL is used as is; otherwise the local port is used
# when it answers, and else the service is installed from Debian's packages and started.

REDIS_PORT="${REDIS_PORT:-6379}"
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
