#!/usr/bin/env bash
# A throwaway RabbitMQ node on loopback for CI (Debian's rabbitmq-server, run as the
# rabbitmq user): every port it opens — AMQP, Erlang distribution, epmd — on 127.0.0.1 only,
# its data and logs in a folder of the caller's.
#
#   .ci/rabbitmq.sh start DIR PORT   start a node (AMQP on 127.0.0.1:PORT, distribution on PORT+1)
#   .ci/rabbitmq.sh quorum-vhost DIR NAME
#                                    add a virtual host whose default queue type is quorum
#                                    (as many deployments set it), open to guest
#   .ci/rabbitmq.sh alarm DIR on|off raise or clear a memory alarm (the node then blocks
#                                    every connection that publishes, as when short of memory)
#   .ci/rabbitmq.sh stop DIR         stop it (and the epmd it started, if any)
set -euo pipefail
cmd=$1 dir=$2
node=atm-ci@localhost
bin=/usr/lib/rabbitmq/bin
as_rabbit() {
    runuser -u rabbitmq -- env HOME="$dir" ERL_EPMD_ADDRESS=127.0.0.1 "$@"
}

case "$cmd" in
start)
    port=$3
    mkdir -p "$dir/mnesia" "$dir/log"
    echo "[]." >"$dir/enabled_plugins"
    pgrep -x epmd >/dev/null || touch "$dir/own-epmd"
    chown -R rabbitmq:rabbitmq "$dir"
    cd "$dir"  # where the node may write a crash dump
    as_rabbit RABBITMQ_NODENAME="$node" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
        RABBITMQ_NODE_PORT="$port" RABBITMQ_DIST_PORT=$((port + 1)) \
        RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        "$bin/rabbitmq-server" >"$dir/server.log" 2>&1 &
    echo $! >"$dir/pid"
    for _ in $(seq 1 120); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "rabbitmq.sh: RabbitMQ accepts AMQP on 127.0.0.1:$port"
            exit 0
        fi
        sleep 0.5
    done
    echo "rabbitmq.sh: RabbitMQ did not start" >&2
    tail -n 40 "$dir/server.log" >&2 || true
    exit 1
    ;;
quorum-vhost)
    name=$3
    as_rabbit "$bin/rabbitmqctl" -n "$node" add_vhost "$name" --default-queue-type quorum
    as_rabbit "$bin/rabbitmqctl" -n "$node" set_permissions -p "$name" guest '.*' '.*' '.*'
    ;;
alarm)
    case "${3:-}" in
    on) watermark=0.0000001 ;;
    off) watermark=0.4 ;;  # RabbitMQ's default
    *) echo "usage: $0 alarm DIR on|off" >&2; exit 2 ;;
    esac
    as_rabbit "$bin/rabbitmqctl" -n "$node" set_vm_memory_high_watermark "$watermark" >/dev/null
    ;;
stop)
    as_rabbit "$bin/rabbitmqctl" -n "$node" stop >/dev/null 2>&1 || true
    if [ -f "$dir/pid" ]; then
        pid=$(cat "$dir/pid")
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill "$pid" 2>/dev/null || true
    fi
    if [ -f "$dir/own-epmd" ]; then
        pkill -u rabbitmq -x epmd 2>/dev/null || true
    fi
    ;;
*)
    echo "usage: $0 start DIR PORT | quorum-vhost DIR NAME | alarm DIR on|off | stop DIR" >&2
    exit 2
    ;;
esac
