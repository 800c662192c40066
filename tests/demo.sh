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
# the user cache: Redis when it is installed (shared by all workers), else the in-process LRU
if command -v redis-server >/dev/null && ! (exec 3<>/dev/tcp/127.0.0.1/6390) 2>/dev/null; then
  redis_dir=$(mktemp -d)
  redis-server --port 6390 --bind 127.0.0.1 --save '' --appendonly no --dir "$redis_dir" >/dev/null &
  pids+=($!)
  export GATEWAY_REDIS=127.0.0.1:6390
  echo "user cache: redis-server on 127.0.0.1:6390"
else
  echo "user cache: in-process LRU per worker (no redis-server)"
fi
"$BUILD/gateway" -c conf/gateway.json &
pids+=($!)
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && break; sleep 0.1; done

cat <<'TXT'

The gateway listens on http://127.0.0.1:8080 (access log on this terminal). Try:

  curl -i http://127.0.0.1:8080/api/users/42              # -> user-service (/users/42); again: X-Cache: HIT
  curl -s http://127.0.0.1:8080/api/orders/1001/details   # composed: order + user + shipment
  curl -i http://127.0.0.1:8080/api/orders/1001           # -> legacy monolith
  curl -i http://127.0.0.1:8080/api/orders/1001/shipment  # -> legacy monolith
  curl -i http://127.0.0.1:8080/api/users/missing-1       # 404 from user-service, passed through
  curl -i -H 'X-Mock-Hang: 1' http://127.0.0.1:8080/api/orders/1  # upstream hangs -> 504 after response_timeout_ms
  curl -s http://127.0.0.1:9102/__stats                   # what user-service received

Cutover (admin API on 127.0.0.1:9090, token demo-token):
  build/gatewayctl --token demo-token routes list
  build/gatewayctl --token demo-token routes flip orders order-service   # orders -> order-service
  build/gatewayctl --token demo-token rollback --all                      # everything back to legacy
  curl -s http://127.0.0.1:9090/metrics | grep gateway_requests_total

Editing conf/routes.json takes effect at once (the file is watched); so does `kill -HUP`.
Ctrl-C stops the demo.
TXT
wait
