#!/usr/bin/env bash
# Prepare a fresh Debian machine: redis-server and nginx (when missing and apt-get can install
# them), then a virtual environment in .venv with the project. With --test, also Chromium and
# its driver and Firefox ESR for the browser tests, Node.js with ws for the JavaScript SDK's
# tests, Docker and debootstrap for the compose and quick-start tests, and the test tools.
# Nothing compiles: every Python dependency comes as a wheel.
# Run by gateway/up.sh and tests/run.sh; safe to run again, and quick once done. When a step
# fails, the last line says which step and where its log is.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
extra=load
[ "${1:-}" = "--test" ] && extra=test

fail() {
    echo "gateway/bootstrap.sh: $*" >&2
    exit 1
}

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
# Debian's python3 makes virtual environments only with python3-venv (ensurepip).
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || missing+=(python3-venv)
if [ "$extra" = test ]; then
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
    # compose/ is tested for real: a Docker engine, compose, and debootstrap for a base image
    # (and for the quick start's test on a fresh Debian root).
    # AppArmor's tools too: dockerd loads its profile with them where the kernel enforces it.
    [ -x /usr/sbin/dockerd ] || missing+=(docker.io apparmor)
    [ -x /usr/bin/docker-compose ] || missing+=(docker-compose)
    [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
    # The JavaScript SDK's tests: Firefox ESR (driven over Marionette, no geckodriver), and
    # Node.js with Debian's ws package (the SDK's WebSocket outside a browser).
    [ -x /usr/bin/firefox-esr ] || missing+=(firefox-esr)
    [ -d /usr/share/nodejs/ws ] || missing+=(node-ws)
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${missing[*]} with apt-get (a minute or two) ..." >&2
        log=$(mktemp)
        trap 'rm -f "$log"' EXIT
        # Without the packages they only recommend (video codecs, Mesa, printing tools): what
        # is listed here is all that runs (the browsers included: headless, they need neither).
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
            tail -n 15 "$log" >&2
            fail "apt-get could not install ${missing[*]} (its last lines are above)"
        fi
    else
        echo "missing ${missing[*]}: install them with: sudo apt-get install ${missing[*]}" >&2
    fi
fi

# A .venv whose creation was cut short (no pip in it) is made again.
if ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    echo "creating .venv ..." >&2
    rm -rf .venv
    python3 -m venv .venv || fail "python3 -m venv .venv failed: install python3-venv"
fi
# pip only when pyproject.toml's content changed since the last install of these extras.
stamp=.venv/.installed-$extra
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "installing the project and its [$extra] dependencies into .venv (about a minute the first time) ..." >&2
    if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extra]" \
            >.venv/pip-install.log 2>&1; then
        grep -v '^WARNING: Location' .venv/pip-install.log | tail -n 15 >&2
        fail "pip could not install the project into .venv (its last lines are above; all of it: .venv/pip-install.log)"
    fi
    .venv/bin/python -c "import node, aiohttp, redis, msgpack, uvloop, jwt, icu, prometheus_client" \
        || fail "the project installed, but does not import (above); .venv/pip-install.log has pip's output"
    echo "$wanted" > "$stamp"
fi
