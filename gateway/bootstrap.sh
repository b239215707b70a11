#!/usr/bin/env bash
# Prepare a fresh Debian machine: redis-server and nginx (when missing and apt-get can install
# them), then a virtual environment in .venv with the project. With --test, also Chromium and
# its driver for the browser tests, Docker and debootstrap for the compose tests, and the test
# tools.
# Run by gateway/up.sh and tests/run.sh; safe to run again, and quick once done.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
extra=load
[ "${1:-}" = "--test" ] && extra=test

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
# PyICU has no wheels: pip builds it against Debian's ICU.
[ -f /usr/include/unicode/uspoof.h ] || missing+=(libicu-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
if [ "$extra" = test ]; then
    [ -x /usr/bin/chromium ] || missing+=(chromium)
    [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
    # compose/ is tested for real: a Docker engine, compose, and debootstrap for a base image.
    [ -x /usr/sbin/dockerd ] || missing+=(docker.io)
    [ -x /usr/bin/docker-compose ] || missing+=(docker-compose)
    [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${missing[*]} with apt-get (a minute or two) ..." >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "missing ${missing[*]}: install them with: sudo apt-get install ${missing[*]}" >&2
    fi
fi

if [ ! -x .venv/bin/python ]; then
    echo "creating .venv ..." >&2
    python3 -m venv .venv
fi
# pip only when pyproject.toml's content changed since the last install of these extras.
stamp=.venv/.installed-$extra
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    echo "installing the project and its [$extra] dependencies into .venv (about 90 s the first time: PyICU compiles) ..." >&2
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extra]" 2>&1 \
        | grep -v '^WARNING: Location' >&2 || true
    .venv/bin/python -c "import node, aiohttp, redis, msgpack, uvloop, jwt, icu, prometheus_client" \
        && echo "$wanted" > "$stamp"
fi
