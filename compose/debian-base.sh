#!/usr/bin/env bash
# A Debian bookworm base image made from Debian packages with debootstrap, for a machine that
# reaches a Debian mirror but no image registry. It has what compose/Dockerfile would otherwise
# install (python3 with venv, nginx-light), redis-server
# and prometheus, so one image serves as BASE_IMAGE and as the Redis and Prometheus images.
#   sudo compose/debian-base.sh [IMAGE]        (default chat-debian-base:bookworm)
# Needs root, debootstrap and docker ($DOCKER, default `docker`). The root filesystem is cached
# as a tarball in ${XDG_CACHE_HOME:-~/.cache}/chat-compose, so later runs only import it.
set -euo pipefail
image=${1:-chat-debian-base:bookworm}
docker=${DOCKER:-docker}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=python3,python3-venv,ca-certificates,nginx-light,redis-server,prometheus
recipe=$(echo "bookworm $packages" | sha256sum | cut -c1-16)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/chat-compose
tarball=$cache/debian-base-$recipe.tar

if [ "$("$docker" image inspect --format '{{index .Config.Labels "chat.recipe"}}' "$image" 2>/dev/null)" = "$recipe" ]; then
    echo "$image"
    exit 0
fi
if [ ! -f "$tarball" ]; then
    command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }
    mkdir -p "$cache"
    root=$(mktemp -d)
    trap 'rm -rf "$root" "$tarball.part"' EXIT
    echo "debootstrap of Debian bookworm into $root (about a minute) ..." >&2
    debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" >&2
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
    find "$cache" -maxdepth 1 -name 'debian-base-*.tar' ! -path "$tarball" -delete  # older recipes
fi
"$docker" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "LABEL chat.recipe=$recipe" "$tarball" "$image" >/dev/null
echo "$image"
