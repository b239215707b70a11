#!/usr/bin/env bash
# Quick start: bring up the local cluster (Redis + 3 nodes + nginx) on 127.0.0.1 and print
# its URL. Ctrl-C stops everything. Extra arguments go to `python -m gateway up`;
# CHAT_GATEWAY_PORT picks another port than 8080.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash gateway/bootstrap.sh
exec .venv/bin/python -m gateway up --nodes 3 --port "${CHAT_GATEWAY_PORT:-8080}" "$@"
