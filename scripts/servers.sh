#!/usr/bin/env bash
# Install, start and stop the servers the Kafka + MongoDB tests run against:
#   tansu      a Kafka-protocol broker   (crates.io `tansu`, features dynostore)
#   SecantusDB a MongoDB-protocol server (crates.io `secantus-mdb`, or PyPI `SecantusDB`)
#
#   scripts/servers.sh install   build the binaries once, cached under $ACCRETE_SERVERS_CACHE
#   scripts/servers.sh install-rs build the Rust SecantusDB daemon (see ACCRETE_SECANTUS)
#   scripts/servers.sh start     start both on 127.0.0.1 with fresh data, wait until they answer
#   scripts/servers.sh stop      stop both
#   scripts/servers.sh status    say what is running
#   scripts/servers.sh env       print the variables the tests read
#
# Settings (environment): ACCRETE_SERVERS_CACHE (default ~/.cache/accrete/servers),
# ACCRETE_SERVERS_DIR (runtime data and logs, default /tmp/accrete-servers),
# ACCRETE_KAFKA_PORT (9092), ACCRETE_MONGODB_PORT (27017),
# ACCRETE_SECANTUS=auto|rs|py: which SecantusDB daemon. rs is the Rust build (about 20 minutes
# to build once, fast); py is the PyPI daemon (a minute to install, slower). auto (the default)
# uses rs when it is already built and py otherwise; `scripts/servers.sh install-rs` builds rs.
set -euo pipefail

TANSU_VERSION=0.6.0
TANSU_FEATURES=dynostore
SECANTUS_VERSION=0.5.3-beta.196
SECANTUS_PY_VERSION=0.7.0b3

CACHE=${ACCRETE_SERVERS_CACHE:-$HOME/.cache/accrete/servers}
RUN=${ACCRETE_SERVERS_DIR:-/tmp/accrete-servers}
KAFKA_PORT=${ACCRETE_KAFKA_PORT:-9092}
MONGODB_PORT=${ACCRETE_MONGODB_PORT:-27017}
SECANTUS=${ACCRETE_SECANTUS:-auto}

TANSU_ROOT=$CACHE/tansu-$TANSU_VERSION-${TANSU_FEATURES//,/-}
SECANTUS_ROOT=$CACHE/secantus-mdb-$SECANTUS_VERSION
SECANTUS_PY_ROOT=$CACHE/secantus-py-$SECANTUS_PY_VERSION

say() { printf 'servers: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

install_tansu() {
  if [ -x "$TANSU_ROOT/bin/tansu" ]; then return; fi
  say "building tansu $TANSU_VERSION (features $TANSU_FEATURES) into $TANSU_ROOT; this takes 20-60 minutes once"
  local started=$SECONDS
  CARGO_TARGET_DIR=$CACHE/build-tansu cargo install tansu --version "$TANSU_VERSION" --locked \
    --no-default-features --features "$TANSU_FEATURES" --root "$TANSU_ROOT.partial"
  rm -rf "$TANSU_ROOT" && mv "$TANSU_ROOT.partial" "$TANSU_ROOT"
  strip "$TANSU_ROOT/bin/tansu" 2>/dev/null || true
  rm -rf "$CACHE/build-tansu"
  say "tansu built in $((SECONDS - started)) s"
}

install_secantus_rs() {
  if [ -x "$SECANTUS_ROOT/bin/secantusd-rs" ]; then return; fi
  if ! command -v cmake >/dev/null; then
    say "installing cmake (SecantusDB builds WiredTiger with it)"
    apt-get install -y cmake >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y cmake >/dev/null; } \
      || die "cmake is needed to build secantus-mdb; install it (apt-get install -y cmake) or use ACCRETE_SECANTUS=py"
  fi
  say "building secantus-mdb $SECANTUS_VERSION into $SECANTUS_ROOT; this takes about 20 minutes once"
  local started=$SECONDS
  CARGO_TARGET_DIR=$CACHE/build-secantus cargo install secantus-mdb --version "$SECANTUS_VERSION" --locked \
    --ignore-rust-version --root "$SECANTUS_ROOT.partial"
  rm -rf "$SECANTUS_ROOT" && mv "$SECANTUS_ROOT.partial" "$SECANTUS_ROOT"
  strip "$SECANTUS_ROOT/bin/"* 2>/dev/null || true
  rm -rf "$CACHE/build-secantus"
  say "secantus-mdb built in $((SECONDS - started)) s"
}

install_secantus_py() {
  if [ -x "$SECANTUS_PY_ROOT/bin/secantusd-py" ]; then return; fi
  say "installing SecantusDB $SECANTUS_PY_VERSION from PyPI into $SECANTUS_PY_ROOT"
  rm -rf "$SECANTUS_PY_ROOT.partial"
  python3 -m venv "$SECANTUS_PY_ROOT.partial"
  "$SECANTUS_PY_ROOT.partial/bin/pip" install -q --pre "SecantusDB==$SECANTUS_PY_VERSION"
  rm -rf "$SECANTUS_PY_ROOT" && mv "$SECANTUS_PY_ROOT.partial" "$SECANTUS_PY_ROOT"
  # A venv records its own path; rebuild it in place so the scripts point at the final directory.
  python3 -m venv --upgrade "$SECANTUS_PY_ROOT" >/dev/null
  sed -i "s#$SECANTUS_PY_ROOT.partial#$SECANTUS_PY_ROOT#g" "$SECANTUS_PY_ROOT"/bin/* 2>/dev/null || true
}

resolve_secantus() {
  if [ "$SECANTUS" = auto ]; then
    if [ -x "$SECANTUS_ROOT/bin/secantusd-rs" ]; then SECANTUS=rs; else SECANTUS=py; fi
  fi
}

secantus_bin() {
  case $SECANTUS in
    rs) echo "$SECANTUS_ROOT/bin/secantusd-rs" ;;
    py) echo "$SECANTUS_PY_ROOT/bin/secantusd-py" ;;
    *) die "ACCRETE_SECANTUS must be rs or py, not '$SECANTUS'" ;;
  esac
}

install() {
  mkdir -p "$CACHE"
  resolve_secantus
  install_tansu
  case $SECANTUS in rs) install_secantus_rs ;; py) install_secantus_py ;; esac
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # name port seconds log
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    if port_open "$2"; then return 0; fi
    sleep 0.1
  done
  say "$1 did not answer on 127.0.0.1:$2 within $3 s; its log ($4) ends with:"
  tail -n 30 "$4" >&2 || true
  return 1
}

start_one() { # name port log command...
  local name=$1 port=$2 log=$3; shift 3
  if port_open "$port"; then die "port $port is already taken; stop whatever listens there (scripts/servers.sh stop) or set ACCRETE_${name^^}_PORT"; fi
  (cd "$RUN/$name" && exec setsid "$@" >"$log" 2>&1 </dev/null) &
  echo $! >"$RUN/$name.pid"
}

start() {
  install
  stop quiet
  rm -rf "$RUN" && mkdir -p "$RUN/kafka" "$RUN/mongodb/data"
  # tansu reads .env from its working directory, so it gets an empty one of its own.
  start_one kafka "$KAFKA_PORT" "$RUN/kafka.log" "$TANSU_ROOT/bin/tansu" broker \
    --listener-url "tcp://127.0.0.1:$KAFKA_PORT" --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
    --storage-engine memory://tansu/
  local extra=()
  # Only the Rust daemon knows --log-file-max.
  [ "$SECANTUS" = rs ] && extra=(--log-file-max 16MB)
  start_one mongodb "$MONGODB_PORT" "$RUN/mongodb.log" "$(secantus_bin)" --host 127.0.0.1 --port "$MONGODB_PORT" \
    --storage-path "$RUN/mongodb/data" --cache-size 256M "${extra[@]}"
  wait_for kafka "$KAFKA_PORT" 60 "$RUN/kafka.log" || { stop quiet; exit 1; }
  wait_for mongodb "$MONGODB_PORT" 120 "$RUN/mongodb.log" || { stop quiet; exit 1; }
  say "kafka (tansu) on 127.0.0.1:$KAFKA_PORT, mongodb (SecantusDB $SECANTUS) on 127.0.0.1:$MONGODB_PORT; logs in $RUN"
}

stop() {
  local name pid
  for name in kafka mongodb; do
    if [ -f "$RUN/$name.pid" ]; then
      pid=$(cat "$RUN/$name.pid")
      kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 -- "-$pid" 2>/dev/null || true
      rm -f "$RUN/$name.pid"
      [ "${1:-}" = quiet ] || say "stopped $name"
    fi
  done
}

status() {
  port_open "$KAFKA_PORT" && say "kafka answers on 127.0.0.1:$KAFKA_PORT" || say "kafka is not running"
  port_open "$MONGODB_PORT" && say "mongodb answers on 127.0.0.1:$MONGODB_PORT" || say "mongodb is not running"
}

env_vars() {
  echo "export ACCRETE_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"
  echo "export ACCRETE_MONGODB_URI=mongodb://127.0.0.1:$MONGODB_PORT"
}

case ${1:-} in
  install) install ;;
  install-rs) mkdir -p "$CACHE"; install_secantus_rs ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) env_vars ;;
  *) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
