#!/usr/bin/env bash
# Runs the README's grpcurl examples against a real payments process started
# here on a free port with its own database, and checks their answers.
source "$(dirname "$0")/lib.sh"
ensure_grpcurl_installed

port="$(free_port)"
db="smoke_payments_$$"
workdir="$(mktemp -d)"
cleanup() {
  stop_pidfile "$workdir/payments.pid"
  drop_database "$db" || true
  rm -rf "$workdir"
}
trap cleanup EXIT

ensure_database "$db"
PAYMENTS_LISTEN_ADDR="127.0.0.1:$port" \
PAYMENTS_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" \
  nohup "$BIN_DIR/payments" serve >"$workdir/payments.log" 2>&1 &
echo $! >"$workdir/payments.pid"
wait_until "payments (smoke, port $port)" 60 "$BIN_DIR/payments" health "127.0.0.1:$port" \
  || { cat "$workdir/payments.log" >&2; die "payments did not start"; }

addr="127.0.0.1:$port"
user="$(python3 -c 'import uuid; print(uuid.uuid4())')"
fail=0
# expect NAME PATTERN COMMAND...: runs COMMAND and checks its output matches PATTERN.
expect() {
  local name="$1" pattern="$2"; shift 2
  local out
  out="$("$@" 2>&1)" || true
  if grep -Eq -- "$pattern" <<<"$out"; then
    printf '  ok    %s\n' "$name"
  else
    printf '  FAIL  %s: expected /%s/, got:\n%s\n' "$name" "$pattern" "$out"
    fail=1
  fi
}

log "grpcurl smoke test against $addr"
expect "list services" 'shop\.payments\.v1\.Payments' grpcurl -plaintext "$addr" list
expect "list has health" 'grpc\.health\.v1\.Health' grpcurl -plaintext "$addr" list
expect "describe service" 'rpc TopUp' grpcurl -plaintext "$addr" describe shop.payments.v1.Payments
expect "describe message" 'balance' grpcurl -plaintext "$addr" describe shop.payments.v1.Account
expect "health check" 'SERVING' grpcurl -plaintext "$addr" grpc.health.v1.Health/Check
expect "create account" "\"userId\": \"$user\"" grpcurl -plaintext -d "{\"user_id\": \"$user\"}" "$addr" shop.payments.v1.Payments/CreateAccount
expect "top up" '"balance": "1500"' grpcurl -plaintext -d "{\"user_id\": \"$user\", \"amount\": 1500}" "$addr" shop.payments.v1.Payments/TopUp
expect "get account" '"balance": "1500"' grpcurl -plaintext -d "{\"user_id\": \"$user\"}" "$addr" shop.payments.v1.Payments/GetAccount
expect "duplicate account" 'AlreadyExists|ALREADY_EXISTS' grpcurl -plaintext -d "{\"user_id\": \"$user\"}" "$addr" shop.payments.v1.Payments/CreateAccount
expect "bad amount" 'InvalidArgument|INVALID_ARGUMENT' grpcurl -plaintext -d "{\"user_id\": \"$user\", \"amount\": 0}" "$addr" shop.payments.v1.Payments/TopUp
exit "$fail"
