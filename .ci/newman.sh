#!/usr/bin/env bash
# Run PostmanCollection.json with newman against a live server on the embedded default
# (SQLite + filesystem broker) in a fresh temporary folder: web, worker and beat.
#
# Usage (from anywhere; the virtualenv .venv must exist, e.g. after `make install`):
#   .ci/newman.sh [extra newman options, e.g. --folder Auth]
# Environment: NEWMAN_PORT (default 8765, or a free port when 8765 is taken),
#   NEWMAN_STARTUP_TIMEOUT (seconds to wait for the server and the worker, default 60).
# Exits with newman's exit code (non-zero when the server does not come up).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

python="$repo_root/.venv/bin/python"
celery="$repo_root/.venv/bin/celery"
if [ ! -x "$python" ] || [ ! -x "$celery" ]; then
    echo "newman.sh: $repo_root/.venv is missing; run 'make install' first" >&2
    exit 2
fi

if command -v newman >/dev/null 2>&1; then
    newman=(newman)
elif command -v npx >/dev/null 2>&1; then
    newman=(npx --yes newman)
else
    echo "newman.sh: neither newman nor npx is on PATH (npm install -g newman)" >&2
    exit 2
fi

port_is_free() {
    "$python" - "$1" <<'EOF'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
}

if [ -n "${NEWMAN_PORT:-}" ]; then
    PORT="$NEWMAN_PORT"
    if ! port_is_free "$PORT"; then
        echo "newman.sh: port $PORT (NEWMAN_PORT) is already in use" >&2
        exit 2
    fi
else
    PORT=8765
    if ! port_is_free "$PORT"; then
        PORT="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
    fi
fi
base_url="http://127.0.0.1:$PORT"
startup_timeout="${NEWMAN_STARTUP_TIMEOUT:-60}"

# The embedded default in a folder of its own: an empty database and broker every run.
VAR_DIR="$(mktemp -d "${TMPDIR:-/tmp}/newman-run.XXXXXX")"
export VAR_DIR PORT
export DEBUG=true
# Set explicitly (not unset): settings fill unset variables from a top-level .env file.
export DATABASE_URL="sqlite:///$VAR_DIR/db.sqlite3"
export CELERY_BROKER_URL="filesystem://"
export BROKER_FOLDER="$VAR_DIR/broker"
export CACHE_URL="locmemcache://"
export ALLOWED_HOSTS="127.0.0.1,localhost"
# The Operations folder scrapes /metrics with this token, and signs in as the admin below.
METRICS_TOKEN="$("$python" -c 'import secrets; print(secrets.token_urlsafe(32))')"
STAFF_PASSWORD="$("$python" -c 'import secrets; print(secrets.token_urlsafe(18))')"
export METRICS_TOKEN

pids=()
logs=("$VAR_DIR/web.log" "$VAR_DIR/worker.log" "$VAR_DIR/beat.log" "$VAR_DIR/migrate.log")
status=1

print_logs() {
    local log
    for log in "${logs[@]}"; do
        if [ -s "$log" ]; then
            echo "----- tail of $(basename "$log") -----" >&2
            tail -n 60 "$log" >&2
        fi
    done
}

stop_all() {
    # Each process was started with setsid, so its PID is also its process group. Ask each
    # main process to stop (the worker then stops its pool), and after a grace period kill
    # whatever is left in its group (e.g. orphaned pool processes).
    local pid
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    local deadline=$((SECONDS + 15))
    for pid in "${pids[@]}"; do
        while kill -0 -- "-$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
            sleep 0.2
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_all
    if [ "$status" -ne 0 ] || [ "$rc" -ne 0 ]; then
        print_logs
    fi
    rm -rf "$VAR_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start() {  # start NAME COMMAND...: in a new session, logging to $VAR_DIR/NAME.log
    local name=$1
    shift
    setsid "$@" >"$VAR_DIR/$name.log" 2>&1 </dev/null &
    pids+=("$!")
    echo "newman.sh: started $name (pid $!)"
}

echo "newman.sh: fresh run folder $VAR_DIR; server on $base_url"
"$python" manage.py migrate --noinput >"$VAR_DIR/migrate.log" 2>&1 || {
    echo "newman.sh: migrate failed" >&2
    exit 1
}

# An admin, created the way `make superuser` does without prompts.
DJANGO_SUPERUSER_USERNAME=newman-admin DJANGO_SUPERUSER_EMAIL=newman-admin@example.com \
DJANGO_SUPERUSER_PASSWORD="$STAFF_PASSWORD" \
    "$python" manage.py createsuperuser --noinput >>"$VAR_DIR/migrate.log" 2>&1 || {
    echo "newman.sh: createsuperuser --noinput failed" >&2
    exit 1
}

# The collection's limit checks follow the server's MAX_ACTIVE_TASKS (environment or .env).
max_active="$("$python" manage.py shell -c 'from django.conf import settings; print(settings.MAX_ACTIVE_TASKS)' 2>/dev/null | tail -n 1)"

start web "$python" manage.py runserver "127.0.0.1:$PORT" --noreload
start worker "$celery" -A backend worker --loglevel=warning --queues=tasks,long,maintenance \
    --hostname=newman-worker@%h
start beat "$celery" -A backend beat --loglevel=warning

check_alive() {
    local pid
    for pid in "${pids[@]}"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "newman.sh: a process (pid $pid) exited during start-up" >&2
            exit 1
        fi
    done
}

deadline=$((SECONDS + startup_timeout))
until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$base_url/health/" || true)" = "200" ]; do
    check_alive
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "newman.sh: $base_url/health/ did not answer 200 within ${startup_timeout}s" >&2
        curl -s --max-time 5 "$base_url/health/" >&2 || true
        exit 1
    fi
    sleep 0.5
done
echo "newman.sh: $base_url/health/ is 200"

# The task folders need a worker that consumes: wait until it answers a ping.
worker_answers() {
    local replies
    replies="$("$celery" -A backend inspect ping --timeout=2 2>/dev/null || true)"
    [[ "$replies" == *newman-worker@* ]]
}
until worker_answers; do
    check_alive
    if [ "$SECONDS" -ge "$deadline" ]; then
        echo "newman.sh: the worker did not answer a ping within ${startup_timeout}s" >&2
        exit 1
    fi
    sleep 0.5
done
echo "newman.sh: worker is ready"

set +e
"${newman[@]}" run PostmanCollection.json \
    --env-var "baseUrl=$base_url" \
    --env-var "maxActive=$max_active" \
    --env-var "staffUsername=newman-admin" \
    --env-var "staffPassword=$STAFF_PASSWORD" \
    --env-var "metricsToken=$METRICS_TOKEN" \
    --reporters cli \
    --timeout-request 30000 \
    "$@"
status=$?
set -e
if [ "$status" -ne 0 ]; then
    echo "newman.sh: newman failed (exit code $status)" >&2
fi
exit "$status"
