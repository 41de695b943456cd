#!/usr/bin/env bash
# `make test`: installs and starts whatever is missing, then runs every check
# and test: formatting, lints, unit, integration, end-to-end and fault tests,
# a short chaos run, the grpcurl smoke test, schemathesis against the
# gateway, the browser test, and promtool over deploy/'s rules and dashboard
# (in e2e/tests/it/operations.rs).
source "$(dirname "$0")/lib.sh"
RUN_DIR="$RUN_DIR/test"

ensure_postgres
ensure_tansu_installed
ensure_grpcurl_installed
ensure_docker_compose
ensure_chromium
ensure_promtool
ensure_broker
stop_test_broker() { stop_pidfile "$RUN_DIR/tansu.pid"; }
trap stop_test_broker EXIT

export SHOP_TEST_KAFKA_BROKERS="$BROKER_HOST:$BROKER_PORT"
export SHOP_TANSU_BIN="$TOOLS_DIR/bin/tansu"

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
