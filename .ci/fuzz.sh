#!/usr/bin/env bash
# Schemathesis over the whole OpenAPI schema against a live server: every operation, every
# check (server errors, response schemas, undocumented status codes and content types, ...),
# a fixed seed and a bounded number of examples per operation. Fails on any failure.
#
# Usage (the virtualenv .venv must exist, e.g. after `make install`):
#   .ci/fuzz.sh
# The server uses the DATABASE_URL / CELERY_BROKER_URL / CACHE_URL of the environment (point
# DATABASE_URL at an empty database), or the embedded default in a fresh folder when unset.
# Environment: FUZZ_PORT (default: a free port), FUZZ_EXAMPLES (per operation, default 5),
#   FUZZ_SEED (default 1).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
python="$repo_root/.venv/bin/python"
schemathesis="$repo_root/.venv/bin/schemathesis"
[ -x "$schemathesis" ] || { echo "fuzz.sh: run 'make install' first" >&2; exit 2; }

PORT="${FUZZ_PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')}"
base_url="http://127.0.0.1:$PORT"
VAR_DIR="$(mktemp -d "${TMPDIR:-/tmp}/fuzz-run.XXXXXX")"
export VAR_DIR DEBUG=true ALLOWED_HOSTS="127.0.0.1,localhost"
export DATABASE_URL="${DATABASE_URL:-sqlite:///$VAR_DIR/db.sqlite3}"
export CELERY_BROKER_URL="${CELERY_BROKER_URL:-filesystem://}"
export BROKER_FOLDER="$VAR_DIR/broker"
export CACHE_URL="${CACHE_URL:-locmemcache://}"
# The auth endpoints are fuzzed too: a high rate keeps them from answering only 429s.
export THROTTLE_AUTH_RATE="100000/min"

web_pid=""
fuzz_pid=""
cleanup() {
    local rc=$?
    if [ -n "$fuzz_pid" ]; then
        kill -TERM "$fuzz_pid" 2>/dev/null || true
        wait "$fuzz_pid" 2>/dev/null || true
    fi
    if [ -n "$web_pid" ]; then
        kill -TERM "$web_pid" 2>/dev/null || true
        wait "$web_pid" 2>/dev/null || true
    fi
    [ "$rc" -eq 0 ] || tail -n 80 "$VAR_DIR/web.log" >&2 || true
    rm -rf "$VAR_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM INT  # stopped from outside: the server is stopped too

"$python" manage.py migrate --noinput >"$VAR_DIR/migrate.log" 2>&1
# A staff user, so the staff-only operations are exercised as well.
token="$("$python" manage.py shell -c '
from rest_framework_simplejwt.tokens import RefreshToken
from backend.users.models import User
user = User.objects.create_user("fuzz", "fuzz@example.com", "fuzz-pass-123!", is_staff=True)
print(RefreshToken.for_user(user).access_token)' | tail -n 1)"

"$python" manage.py runserver "127.0.0.1:$PORT" --noreload >"$VAR_DIR/web.log" 2>&1 &
web_pid=$!
for _ in $(seq 1 100); do
    curl -fs "$base_url/api/schema/" >/dev/null 2>&1 && break
    sleep 0.3
done

# A file of the user's, whose download the config names (FUZZ_FILE_ID): an id of no file is a
# 404 before the download's conditional headers are read.
printf 'a,b\n1,2\n' >"$VAR_DIR/fuzz.csv"
FUZZ_FILE_ID="$(curl -fsS -H "Authorization: Bearer $token" -F "file=@$VAR_DIR/fuzz.csv" \
    "$base_url/api/files/" | "$python" -c 'import json, sys; print(json.load(sys.stdin)["id"])')"
export FUZZ_FILE_ID

echo "fuzz.sh: schemathesis against $base_url ($DATABASE_URL)"
"$schemathesis" --config-file .ci/schemathesis.toml run "$base_url/api/schema/?format=json" \
    --checks all \
    --phases examples,coverage,fuzzing \
    --max-examples "${FUZZ_EXAMPLES:-5}" \
    --seed "${FUZZ_SEED:-1}" \
    --generation-database none \
    --request-timeout 20 \
    --workers 1 \
    --no-color \
    -H "Authorization: Bearer $token" &
fuzz_pid=$!
wait "$fuzz_pid"  # in the background and waited for, so a TERM stops it at once
