#!/usr/bin/env bash
# `make down`: stops exactly what `make up` started (pid files under .run/).
source "$(dirname "$0")/lib.sh"
for svc in gateway orders payments tansu; do
  if [[ -f "$RUN_DIR/$svc.pid" ]]; then
    log "stopping $svc"
    stop_pidfile "$RUN_DIR/$svc.pid"
  fi
done
