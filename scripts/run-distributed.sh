#!/usr/bin/env bash
# Portcullis distributed, without Docker: the auth service, the gateway and the socket service
# as separate processes on the local PostgreSQL, Redis and RabbitMQ, with a fresh database, their
# own Redis and queue prefixes and free ports; Ctrl-C ends them and removes what the run made.
# `--scenario` plays a user's path through them instead and exits (CI runs it).
# DATABASE_URL, REDIS_URL and AMQP_URL name the servers (defaults: the local ones).
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo xtask run --distributed "$@"
