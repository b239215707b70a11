#!/usr/bin/env bash
# Quick start: bring up the local chat on 127.0.0.1 and print its URL. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash gateway/bootstrap.sh
echo "chat: http://127.0.0.1:8000  WebSocket: ws://127.0.0.1:8000/ws" >&2
exec .venv/bin/python -m node --port 8000 "$@"
