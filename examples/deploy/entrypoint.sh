#!/bin/sh
# Container entrypoint for a tinytown worker (examples/deploy/worker.ts); see Dockerfile.
#
#   docker run -e REDIS_URL=rediss://worker@redis.internal:6380 \
#     -e TOWN_NAME=myapp-main -e TOWN_AGENTS=backend,reviewer \
#     -v /srv/secrets/redis-password:/run/secrets/redis-password:ro \
#     -e TOWN_REDIS_PASSWORD_FILE=/run/secrets/redis-password \
#     -v "$PWD:/work" --stop-timeout 45 tinytown-worker
#
# The password comes from TOWN_REDIS_PASSWORD, or from the file TOWN_REDIS_PASSWORD_FILE names
# (a Docker or Kubernetes secret), never from the image or a committed file.
set -eu

if [ -z "${REDIS_URL:-}" ] && [ -z "${TOWN_REDIS_SENTINELS:-}" ]; then
  echo "entrypoint: set REDIS_URL (or TOWN_REDIS_SENTINELS) to the town's Redis" >&2
  exit 64
fi
if [ -z "${TOWN_REDIS_PASSWORD:-}" ] && [ -n "${TOWN_REDIS_PASSWORD_FILE:-}" ]; then
  if [ ! -r "$TOWN_REDIS_PASSWORD_FILE" ]; then
    echo "entrypoint: TOWN_REDIS_PASSWORD_FILE=$TOWN_REDIS_PASSWORD_FILE is not readable" >&2
    exit 64
  fi
  TOWN_REDIS_PASSWORD="$(cat "$TOWN_REDIS_PASSWORD_FILE")"
  export TOWN_REDIS_PASSWORD
fi
unset TOWN_REDIS_PASSWORD_FILE

# exec: node replaces this shell, so the SIGTERM of `docker stop` (or Kubernetes), which tini
# passes on, reaches it; give it a stop timeout above TOWN_CLOSE_GRACE_MS (docker run
# --stop-timeout 45, terminationGracePeriodSeconds: 45). The agents work in TOWN_DIR (/work);
# tsx and tinytown are resolved from the worker's own folder.
cd /opt/tinytown-worker
exec node --import tsx worker.ts "$@"
