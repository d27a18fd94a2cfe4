#!/usr/bin/env bash
# Install crewdash into ./.venv and start the dashboard on the embedded defaults
# (simulated demo model on 127.0.0.1, no API key, no network). Extra arguments go to
# `streamlit run`, e.g. `bash scripts/start.sh --server.port 8502`.
# With CREWDASH_RUNNER=ray it installs the optional Ray extra (requirements-ray.txt) too.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
if [ "${CREWDASH_RUNNER:-local}" = "ray" ]; then
  ensure_venv requirements-ray.txt
else
  ensure_venv requirements.txt
fi
exec .venv/bin/python -m streamlit run app.py "$@"
