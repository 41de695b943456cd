#!/usr/bin/env bash
# `make test`: installs and starts whatever is missing, then runs every check
# and test: formatting, lints, unit, integration, end-to-end and fault tests,
# a short chaos run, the grpcurl smoke test, schemathesis against the
# gateway, the browser test, and promtool over deploy/'s rules and dashboard
# (in e2e/tests/it/operations.rs).
source "$(dirname "$0")/lib.sh"
RUN_DIR="$RUN_DIR/test"

ensure_postgres
# On a fresh machine tansu's release build is the longest step, and neither
# it nor the workspace's build keeps both cores busy on its own (build
# scripts, linking, single crates): they run side by side, and the broker
# is awaited only when the tests need it.
tansu_install=""
if [[ ! -x "$TOOLS_DIR/bin/tansu" ]]; then
  mkdir -p "$RUN_DIR/logs"
  log "installing tansu in the background (log: $RUN_DIR/logs/tansu-install.log)"
  (ensure_tansu_installed) >"$RUN_DIR/logs/tansu-install.log" 2>&1 &
  tansu_install=$!
fi
cleanup() {
  if [[ -n "$tansu_install" ]]; then
    pkill -TERM -P "$tansu_install" 2>/dev/null || true
    kill "$tansu_install" 2>/dev/null || true
  fi
  stop_pidfile "$RUN_DIR/tansu.pid"
}
trap cleanup EXIT
ensure_grpcurl_installed
ensure_docker_compose
ensure_chromium
ensure_promtool

log "cargo fmt --check"
cargo fmt --all -- --check
log "docker-compose config -q"
(cd "$ROOT" && docker-compose config -q)
log "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
log "cargo doc (a dead intra-doc link fails)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
log "cargo build"
cargo build --workspace --bins --quiet
log "cargo test --no-run"
cargo test --workspace --no-run --quiet

if [[ -n "$tansu_install" ]]; then
  log "waiting for tansu's build"
  if ! wait "$tansu_install"; then
    tail -n 30 "$RUN_DIR/logs/tansu-install.log" >&2
    die "tansu did not install; see $RUN_DIR/logs/tansu-install.log"
  fi
  tansu_install=""
fi
ensure_broker
export SHOP_TEST_KAFKA_BROKERS="$BROKER_HOST:$BROKER_PORT"
export SHOP_TANSU_BIN="$TOOLS_DIR/bin/tansu"

log "cargo test"
cargo test --workspace --quiet
log "chaos, short: 30 faults on one replica (make chaos runs 100)"
"$CARGO_TARGET_DIR/debug/chaos" --faults 30 ${CHAOS_SEED:+--seed "$CHAOS_SEED"}
log "chaos, short: 20 faults on two replicas per service in consumer groups (make chaos REPLICAS=2)"
"$CARGO_TARGET_DIR/debug/chaos" --faults 20 --replicas 2 ${CHAOS_SEED:+--seed "$CHAOS_SEED"}
log "grpcurl smoke test"
"$ROOT/scripts/smoke-grpc.sh"
log "schemathesis against the gateway"
"$ROOT/scripts/schemathesis.sh"
log "browser test of the web UI"
"$ROOT/scripts/browser-test.sh"
log "all tests passed"
