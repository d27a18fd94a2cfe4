#!/usr/bin/env bash
# Install the test dependencies into ./.venv (and Debian's chromium for the browser tests when
# run as root), then run lint, types and the whole test suite. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv requirements-dev.txt

if ! command -v chromium >/dev/null 2>&1 && [ -z "${CREWDASH_CHROMIUM:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium for the browser tests" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "warning: no chromium found; browser tests will skip (and fail when CI=true)" >&2
  fi
fi

# The store tests use the PostgreSQL server on 127.0.0.1:5432; start it if it is installed but down.
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432 &&
  [ "$(id -u)" = 0 ] && command -v pg_ctlcluster >/dev/null 2>&1; then
  echo "starting PostgreSQL for the store tests" >&2
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
