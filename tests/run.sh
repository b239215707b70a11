#!/usr/bin/env bash
# Quick start: install everything the tests need, then run the full suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash gateway/bootstrap.sh --test
exec .venv/bin/python -m pytest "$@"
