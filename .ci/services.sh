# Sourced by .ci/run: makes sure the services the tests need answer on loopback.
# A service given by REDIS_URL / DATABASE_URL is used as is; otherwise the default local port
# is used when it answers, and else the service is installed from Debian's packages and started.

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() {
    for _ in $(seq 1 100); do
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
    if ! port_open 6379; then
        command -v redis-server >/dev/null || apt_install redis-server
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
            --dir /tmp --logfile /tmp/ci-redis.log
        wait_for_port 6379
    fi
    export REDIS_URL="redis://127.0.0.1:6379"
}
