#!/usr/bin/env bash
# The web UI in a real browser: headless Debian Chromium driven by
# playwright-core (npm) against a private stack. Screenshots land in
# e2e/browser/screenshots/ (ignored by git).
source "$(dirname "$0")/lib.sh"
source "$ROOT/scripts/dev.env"
ensure_chromium
(cd "$ROOT/e2e/browser" && npm ci --no-audit --no-fund --silent)

run="ui_$$"
workdir="$(mktemp -d)"
trap 'stop_private_stack "$workdir" "$run"' EXIT
start_private_stack "$workdir" "$run" gateway

log "browser test against http://${ADDR[gateway]}"
# The payments pid lets the test hold payments back (SIGSTOP) while it
# cancels an order that is still NEW.
SHOP_URL="http://${ADDR[gateway]}" SHOP_PAYMENTS_PID="$(cat "$workdir/payments.pid")" \
  node "$ROOT/e2e/browser/ui.test.mjs" \
  || { tail -n 30 "$workdir/gateway.log" >&2; exit 1; }
