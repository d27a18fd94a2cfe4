#!/usr/bin/env bash
# Install crewdash into ./.venv and start the dashboard on the embedded defaults
# (simulated demo model on 127.0.0.1, no API key, no network). Extra arguments go to
# `streamlit run`, e.g. `bash scripts/start.sh --server.port 8502`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv requirements.txt
exec .venv/bin/python -m streamlit run app.py "$@"
