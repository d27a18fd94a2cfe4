#!/usr/bin/env bash
# Install the test dependencies into ./.venv (and Debian's chromium for the browser tests when
# run as root), then run lint, types and the tests, in tiers. CI runs this (.ci/run, CI=true).
#
# The tiers, by what a test starts (tests/tiers.py marks them at collection, so nobody has to):
#   in-process  everything not below: the demo model, runners, AppTest pages, the stores
#   browser     Playwright in Debian's headless Chromium
#   server      real subprocesses: streamlit run, uvicorn, python -m crewdash, a wheel build
#   ray         a real Ray cluster (its teardown stops every Ray on the machine)
#   model       the llama.cpp server with a real model
#   long        reliability runs and the extra fresh-server logins
#
#   bash scripts/test.sh           lint, then types alongside the in-process tier (fail-fast,
#                                  -x, four xdist workers: its tests mostly wait on the demo
#                                  model's clock), then every other tier with pytest-xdist (-n 2, --dist
#                                  loadgroup: the Ray tests share one worker, so do the browser
#                                  tests and the tests on the PostgreSQL server, and each module
#                                  keeps to one worker)
#   bash scripts/test.sh --fast    lint + types + the in-process tier: for day-to-day work
#
# Other arguments go to pytest in each tier (a tier that selects none counts as passed; a -m of
# yours replaces the tier's selection).
# Lint and types do not stop the tests; a failed in-process tier stops before the slow tiers.
# The exit code is non-zero if any stage failed.
set -euo pipefail
cd "$(dirname "$0")/.."

fast=false
args=()
for arg in "$@"; do
  if [ "$arg" = "--fast" ]; then fast=true; else args+=("$arg"); fi
done

source scripts/venv.sh
ensure_venv requirements-dev.txt

if ! $fast && ! command -v chromium >/dev/null 2>&1 && [ -z "${CREWDASH_CHROMIUM:-}" ]; then
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

SLOW="browser or server or ray or model or long"
failed=()

stage() { # stage NAME COMMAND...: run it, remember a failure, never stop the script
  local name=$1 code=0
  shift
  echo "=== $name" >&2
  "$@" || code=$?
  if [ "$code" = 5 ] && [ "$1" = .venv/bin/python ]; then code=0; fi # pytest: nothing selected
  if [ "$code" != 0 ]; then failed+=("$name (exit $code)"); fi
  return "$code"
}

stage "ruff check" .venv/bin/ruff check . || true
stage "ruff format" .venv/bin/ruff format --check . || true

# mypy (a minute of one core from cold) runs alongside the in-process tier, whose tests mostly
# wait on the demo model's clock: about one core busy on average with four workers.
types_log=$(mktemp)
trap 'rm -f "$types_log"' EXIT
.venv/bin/mypy >"$types_log" 2>&1 &
types_pid=$!
types_done() {
  local code=0
  wait "$types_pid" || code=$?
  echo "=== mypy (ran alongside the in-process tier)" >&2
  cat "$types_log"
  if [ "$code" != 0 ]; then failed+=("mypy (exit $code)"); fi
}

in_process=(.venv/bin/python -m pytest -x -n 4 --dist loadgroup -m "not ($SLOW)")
if stage "in-process tier" "${in_process[@]}" ${args[@]+"${args[@]}"}; then
  types_done
  if ! $fast; then
    stage "browser, server, ray, model and long tiers" .venv/bin/python -m pytest \
      -n 2 --dist loadgroup -m "$SLOW" ${args[@]+"${args[@]}"} || true
  fi
else
  types_done
  if ! $fast; then
    echo "the in-process tier failed: the other tiers did not run" >&2
    failed+=("browser, server, ray, model and long tiers (not run)")
  fi
fi

if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "all stages passed" >&2
