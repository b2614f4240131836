#!/usr/bin/env bash
# Starts the local PostgreSQL, Redis and RabbitMQ the distributed-mode tests use, if they are
# stopped.
set -euo pipefail
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
# RabbitMQ (the webhook outbox's broker): the packaged server, no plugins; the wrapper runs it
# as the rabbitmq user. Checked on its AMQP port, which opens once it has booted.
if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  rabbitmq-server -detached
elif command -v rabbitmq-diagnostics >/dev/null 2>&1 &&
  ! { rabbitmq-diagnostics -q check_running && rabbitmq-diagnostics -q check_local_alarms; } >/dev/null 2>&1; then
  # A broker that is listening but not fully running, or that raised a resource alarm (a disk
  # that once filled up, say), refuses the tests' connections: it is restarted once.
  echo "RabbitMQ is not healthy (not running or in alarm): restarting it" >&2
  rabbitmqctl -q stop >/dev/null 2>&1 || pkill -f beam.smp || true
  for _ in $(seq 1 30); do (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null || break; sleep 1; done
  rabbitmq-server -detached
fi
echo "DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres REDIS_URL=redis://127.0.0.1:6379 AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f"
