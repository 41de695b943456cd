#!/usr/bin/env bash
# Runs the README's grpcurl examples against real orders and payments
# processes started here on free ports with their own databases and topics,
# and checks their answers.
source "$(dirname "$0")/lib.sh"
source "$ROOT/scripts/dev.env"
ensure_grpcurl_installed

run="smoke_$$"
workdir="$(mktemp -d)"
trap 'stop_private_stack "$workdir" "$run"' EXIT
start_private_stack "$workdir" "$run"

P="${ADDR[payments]}"
O="${ADDR[orders]}"
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

log "grpcurl smoke test: payments $P, orders $O"
expect "payments: list" 'shop\.payments\.v1\.Payments' grpcurl -plaintext "$P" list
expect "payments: health service listed" 'grpc\.health\.v1\.Health' grpcurl -plaintext "$P" list
expect "payments: describe" 'rpc TopUp' grpcurl -plaintext "$P" describe shop.payments.v1.Payments
expect "payments: describe message" 'balance' grpcurl -plaintext "$P" describe shop.payments.v1.Account
expect "payments: health" 'SERVING' grpcurl -plaintext "$P" grpc.health.v1.Health/Check
expect "payments: CreateAccount" "\"userId\": \"$user\"" grpcurl -plaintext -d "{\"user_id\": \"$user\"}" "$P" shop.payments.v1.Payments/CreateAccount
expect "payments: TopUp" '"balance": "1500"' grpcurl -plaintext -d "{\"user_id\": \"$user\", \"amount\": 1500}" "$P" shop.payments.v1.Payments/TopUp
expect "payments: GetAccount" '"balance": "1500"' grpcurl -plaintext -d "{\"user_id\": \"$user\"}" "$P" shop.payments.v1.Payments/GetAccount
expect "payments: duplicate account" 'AlreadyExists|ALREADY_EXISTS' grpcurl -plaintext -d "{\"user_id\": \"$user\"}" "$P" shop.payments.v1.Payments/CreateAccount
expect "payments: bad amount" 'InvalidArgument|INVALID_ARGUMENT' grpcurl -plaintext -d "{\"user_id\": \"$user\", \"amount\": 0}" "$P" shop.payments.v1.Payments/TopUp

expect "orders: list" 'shop\.orders\.v1\.Orders' grpcurl -plaintext "$O" list
expect "orders: describe" 'rpc WatchOrder' grpcurl -plaintext "$O" describe shop.orders.v1.Orders
expect "orders: health" 'SERVING' grpcurl -plaintext -d '{"service": "shop.orders.v1.Orders"}' "$O" grpc.health.v1.Health/Check
created="$(grpcurl -plaintext -d "{\"user_id\": \"$user\", \"amount\": 1000, \"description\": \"coffee\"}" "$O" shop.orders.v1.Orders/CreateOrder 2>&1 || true)"
order_id="$(grep -oE '"orderId": "[^"]+"' <<<"$created" | cut -d'"' -f4 || true)"
expect "orders: CreateOrder" 'ORDER_STATUS_NEW' echo "$created"
settled() { grpcurl -plaintext -d "{\"order_id\": \"$order_id\"}" "$O" shop.orders.v1.Orders/GetOrder | grep -q ORDER_STATUS_FINISHED; }
if wait_until "order $order_id FINISHED" 30 settled; then printf '  ok    %s\n' "orders: order settles"; else printf '  FAIL  order never FINISHED\n'; fail=1; fi
expect "orders: WatchOrder ends at final" 'ORDER_STATUS_FINISHED' grpcurl -plaintext -d "{\"order_id\": \"$order_id\"}" "$O" shop.orders.v1.Orders/WatchOrder
expect "orders: ListOrders" "$order_id" grpcurl -plaintext -d "{\"user_id\": \"$user\", \"limit\": 10}" "$O" shop.orders.v1.Orders/ListOrders
expect "payments: balance debited" '"balance": "500"' grpcurl -plaintext -d "{\"user_id\": \"$user\"}" "$P" shop.payments.v1.Payments/GetAccount
expect "orders: CancelOrder of a paid order" 'FailedPrecondition|FAILED_PRECONDITION' grpcurl -plaintext -d "{\"order_id\": \"$order_id\", \"user_id\": \"$user\"}" "$O" shop.orders.v1.Orders/CancelOrder
expect "orders: RefundOrder" 'ORDER_STATUS_REFUNDING' grpcurl -plaintext -d "{\"order_id\": \"$order_id\", \"user_id\": \"$user\"}" "$O" shop.orders.v1.Orders/RefundOrder
refunded() { grpcurl -plaintext -d "{\"order_id\": \"$order_id\"}" "$O" shop.orders.v1.Orders/GetOrder | grep -q ORDER_STATUS_REFUNDED; }
if wait_until "order $order_id REFUNDED" 30 refunded; then printf '  ok    %s\n' "orders: order refunded"; else printf '  FAIL  order never REFUNDED\n'; fail=1; fi
expect "payments: balance credited back" '"balance": "1500"' grpcurl -plaintext -d "{\"user_id\": \"$user\"}" "$P" shop.payments.v1.Payments/GetAccount
exit "$fail"
