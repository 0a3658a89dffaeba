#!/usr/bin/env bash
# The tests, with the servers they need: builds (once, cached) and starts a
# Kafka-protocol broker and a MongoDB-protocol server on 127.0.0.1, runs
# `cargo test --workspace --all-features` (extra arguments are passed on),
# and stops the servers again. Servers already answering on the ports (or
# ACCRETE_KAFKA_BROKERS / ACCRETE_MONGODB_URI set) are used as they are.
set -euo pipefail
cd "$(dirname "$0")/.."

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

started=no
if [ -z "${ACCRETE_KAFKA_BROKERS:-}${ACCRETE_MONGODB_URI:-}" ] \
  && ! { port_open "${ACCRETE_KAFKA_PORT:-9092}" && port_open "${ACCRETE_MONGODB_PORT:-27017}"; }; then
  scripts/servers.sh start
  started=yes
  trap 'scripts/servers.sh stop' EXIT
fi
: "${ACCRETE_KAFKA_BROKERS:=127.0.0.1:${ACCRETE_KAFKA_PORT:-9092}}"
: "${ACCRETE_MONGODB_URI:=mongodb://127.0.0.1:${ACCRETE_MONGODB_PORT:-27017}}"
export ACCRETE_KAFKA_BROKERS ACCRETE_MONGODB_URI
echo "tests against kafka $ACCRETE_KAFKA_BROKERS and mongodb $ACCRETE_MONGODB_URI (servers started here: $started)" >&2
cargo test --workspace --all-features "$@"
