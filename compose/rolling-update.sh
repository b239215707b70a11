#!/usr/bin/env bash
# Replace every chat node container by one of the current image, one at a time: start the new
# one, wait until it is healthy, then stop an old one, which drains its clients to the others
# within its stop grace period, and remove it. Clients resume without loss.
#   compose/rolling-update.sh [-p PROJECT]     (after `docker compose build`)
# $COMPOSE is the compose command (default `docker compose`), $DOCKER the docker one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
read -r -a compose <<< "${COMPOSE:-docker compose}"
docker=${DOCKER:-docker}
healthy_within=${HEALTHY_WITHIN:-120}

old=$("${compose[@]}" "$@" ps -q node)
count=$(wc -w <<< "$old")
[ "$count" -gt 0 ] || { echo "no node container is running" >&2; exit 1; }
for container in $old; do
    before=$("${compose[@]}" "$@" ps -q node)
    "${compose[@]}" "$@" up -d --no-deps --no-recreate --no-build --scale node=$((count + 1)) node
    new=$(comm -13 <(sort <<< "$before") <(sort <<< "$("${compose[@]}" "$@" ps -q node)"))
    [ -n "$new" ] || { echo "no new node container started" >&2; exit 1; }
    for _ in $(seq "$healthy_within"); do
        [ "$("$docker" inspect -f '{{.State.Health.Status}}' "$new")" = healthy ] && break
        sleep 1
    done
    [ "$("$docker" inspect -f '{{.State.Health.Status}}' "$new")" = healthy ] \
        || { echo "node ${new:0:12} not healthy after ${healthy_within}s; stopping" >&2; exit 1; }
    echo "node ${new:0:12} healthy; draining ${container:0:12} ..."
    "$docker" stop "$container" >/dev/null  # waits up to the service's stop_grace_period
    "$docker" rm "$container" >/dev/null
done
echo "rolling update complete: $count nodes replaced"
