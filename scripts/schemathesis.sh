#!/usr/bin/env bash
# Property-based checks of the running gateway against its own OpenAPI
# document, every phase (examples, coverage, fuzzing, stateful: the
# document's links carry real ids from one call to the next) and every
# check. The seed changes per run and is printed; SCHEMATHESIS_SEED=N
# repeats a run. Starts its own three services (free ports, fresh databases
# and topics).
source "$(dirname "$0")/lib.sh"
source "$ROOT/scripts/dev.env"

VENV="$TOOLS_DIR/venv"
if [[ ! -x "$VENV/bin/st" ]]; then
  log "installing schemathesis (PyPI, once)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "schemathesis==4.32.5"
fi

run="st_$$"
workdir="$(mktemp -d)"
trap 'stop_private_stack "$workdir" "$run"' EXIT
start_private_stack "$workdir" "$run" gateway
gw="${ADDR[gateway]}"

# Authenticated as one user, with a token from the development route.
user="1b4e28ba-2fa1-11d2-883f-0016d3cca427"
token="$(curl -fsS -X POST "http://$gw/api/v1/dev/tokens" -H 'Content-Type: application/json' \
  -d "{\"user_id\":\"$user\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
seed="${SCHEMATHESIS_SEED:-$((RANDOM * 32768 + RANDOM))}"
log "schemathesis against http://$gw/openapi.json, seed $seed (SCHEMATHESIS_SEED=$seed repeats it)"
"$VENV/bin/st" --config-file "$ROOT/scripts/schemathesis.toml" run "http://$gw/openapi.json" \
  --checks all --phases examples,coverage,fuzzing,stateful \
  --header "Authorization: Bearer $token" \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-30}" --seed "$seed" --workers 2 --request-timeout 10 \
  || { echo "schemathesis failed with seed $seed" >&2; tail -n 30 "$workdir/gateway.log" >&2; exit 1; }
