#!/usr/bin/env bash
# `make run`: the demo stack — mockd as the legacy monolith and as user-, order- and
# logistics-service, and the gateway on 127.0.0.1:8080 with conf/gateway.json. Ctrl-C stops
# everything this script started (by pid).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
pids=()
cleanup() {
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  echo "demo stopped"
  exit 0
}
trap cleanup EXIT INT TERM

for spec in legacy:9101 user-service:9102 order-service:9103 logistics-service:9104; do
  name=${spec%%:*}; port=${spec##*:}
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "port $port is already in use: stop whatever listens there (a previous demo?)"; exit 1
  fi
  "$BUILD/mockd" --listen 127.0.0.1:$port --name "$name" 2>/dev/null &
  pids+=($!)
done
"$BUILD/gateway" -c conf/gateway.json &
pids+=($!)
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break; sleep 0.1; done

cat <<'TXT'

The gateway listens on http://127.0.0.1:8080 (access log on this terminal). Try:

  curl -i http://127.0.0.1:8080/api/users/42              # -> user-service, path rewritten to /users/42
  curl -i http://127.0.0.1:8080/api/orders/1001           # -> legacy monolith
  curl -i http://127.0.0.1:8080/api/orders/1001/shipment  # -> legacy monolith
  curl -i http://127.0.0.1:8080/api/users/missing-1       # 404 from user-service, passed through
  curl -i -H 'X-Mock-Hang: 1' http://127.0.0.1:8080/api/orders/1  # upstream hangs -> 504 after response_timeout_ms
  curl -s http://127.0.0.1:9102/__stats                   # what user-service received

Edit conf/routes.json and run `kill -HUP <gateway pid>` to reload routes without a restart.
Ctrl-C stops the demo.
TXT
wait
