#!/usr/bin/env bash
# `make up`: PostgreSQL databases, the tansu broker and the services, started
# in the background with logs and pid files under .run/, then health-checked.
source "$(dirname "$0")/lib.sh"
source "$ROOT/scripts/dev.env"

SERVICES=(payments orders)

ensure_postgres
for svc in "${SERVICES[@]}"; do ensure_database "$svc"; done
ensure_broker

log "building the workspace"
cargo build --workspace --bins --quiet

for svc in "${SERVICES[@]}"; do
  mkdir -p "$RUN_DIR/logs"
  "$BIN_DIR/$svc" migrate >>"$RUN_DIR/logs/$svc.log" 2>&1 || die "$svc migrate failed; see $RUN_DIR/logs/$svc.log"
  start_service "$svc" serve
done

for svc in "${SERVICES[@]}"; do
  if ! wait_until "$svc" 60 "$BIN_DIR/$svc" health; then
    tail -n 30 "$RUN_DIR/logs/$svc.log" >&2
    die "$svc did not become healthy; see $RUN_DIR/logs/$svc.log"
  fi
done

export GATEWAY_LOG_FORMAT="${GATEWAY_LOG_FORMAT:-text}"
start_service gateway serve
gateway_ready() { curl -fsS http://127.0.0.1:8080/readyz; }
if ! wait_until gateway 60 gateway_ready; then
  tail -n 30 "$RUN_DIR/logs/gateway.log" >&2
  die "gateway did not become ready; see $RUN_DIR/logs/gateway.log"
fi

cat <<INFO

  gateway   HTTP  http://127.0.0.1:8080     REST API (curl examples in README.md)
            tokens: POST /api/v1/dev/tokens {"user_id"} (GATEWAY_AUTH=dev: never face real users)
            docs  http://127.0.0.1:8080/docs           Swagger UI
            spec  http://127.0.0.1:8080/openapi.yaml   OpenAPI 3.1
            ops   http://127.0.0.1:8080/healthz  /readyz  /metrics
  orders    gRPC  127.0.0.1:50051   grpcurl -plaintext 127.0.0.1:50051 list
            metrics http://127.0.0.1:9151/metrics
  payments  gRPC  127.0.0.1:50052   grpcurl -plaintext 127.0.0.1:50052 list
            metrics http://127.0.0.1:9152/metrics
  broker    Kafka 127.0.0.1:$BROKER_PORT    tansu, in memory
  postgres        127.0.0.1:5432    databases orders, payments
  logs            $RUN_DIR/logs/
  stop with       make down
INFO
