#!/usr/bin/env bash
# `make up`: PostgreSQL databases, the tansu broker and the services, started
# in the background with logs and pid files under .run/, then health-checked.
source "$(dirname "$0")/lib.sh"
source "$ROOT/scripts/dev.env"

ensure_postgres
ensure_database payments
ensure_broker

log "building the workspace"
cargo build --workspace --bins --quiet

log "migrating and starting services"
"$BIN_DIR/payments" migrate >/dev/null
start_service payments serve

health_payments() { "$BIN_DIR/payments" health; }
if ! wait_until payments 60 health_payments; then
  tail -n 30 "$RUN_DIR/logs/payments.log" >&2
  die "payments did not become healthy; see $RUN_DIR/logs/payments.log"
fi

cat <<INFO

  payments  gRPC  127.0.0.1:50052   (grpcurl -plaintext 127.0.0.1:50052 list)
  broker    Kafka 127.0.0.1:$BROKER_PORT    (tansu, in memory)
  postgres        127.0.0.1:5432    (databases: payments)
  logs            $RUN_DIR/logs/
  stop with       make down
INFO
