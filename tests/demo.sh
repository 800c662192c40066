#!/usr/bin/env bash
# `make run`: the demo stack — mockd as the legacy monolith and as user-, order- and
# logistics-service, and the gateway on http://127.0.0.1:8080 and https://127.0.0.1:8443
# (a self-signed certificate for localhost and 127.0.0.1, made with the openssl CLI into
# DEMO_DIR/tls/ on the first start and kept). Ctrl-C (or SIGTERM) stops everything
# this script started (by pid).
#
# The gateway runs from a copy of conf/ in DEMO_DIR (default build/demo), never from conf/
# itself: a route change (gatewayctl routes flip, PATCH /admin/routes/...) is written back to
# DEMO_DIR/routes.json with its audit trail in DEMO_DIR/routes.json.history.jsonl, so the
# checkout stays clean. routes.json is copied on the first start and kept across restarts
# (flips survive a restart, like a deployment); DEMO_RESET=1 (or rm -rf build/demo) starts
# again from conf/. gateway.json and composers.json are regenerated on every start.
#
# Ports, from the environment (the integration test runs the demo on free ports):
#   DEMO_LISTEN_PORT 8080, DEMO_TLS_PORT 8443, DEMO_ADMIN_PORT 9090, DEMO_LEGACY_PORT 9101, DEMO_USER_PORT 9102,
#   DEMO_ORDER_PORT 9103, DEMO_LOGISTICS_PORT 9104, DEMO_REDIS_PORT 6390.
# BUILD=DIR runs the binaries of DIR (default build).
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
DEMO_DIR=${DEMO_DIR:-build/demo}
LISTEN_PORT=${DEMO_LISTEN_PORT:-8080}
TLS_PORT=${DEMO_TLS_PORT:-8443}
ADMIN_PORT=${DEMO_ADMIN_PORT:-9090}
REDIS_PORT=${DEMO_REDIS_PORT:-6390}
UP_PORTS="legacy:${DEMO_LEGACY_PORT:-9101} user-service:${DEMO_USER_PORT:-9102}"
UP_PORTS+=" order-service:${DEMO_ORDER_PORT:-9103} logistics-service:${DEMO_LOGISTICS_PORT:-9104}"

pids=()
cleanup() {  # $1: exit status (0 on Ctrl-C / SIGTERM: that is how the demo is stopped)
  trap - EXIT INT TERM
  local p left
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  for _ in $(seq 150); do  # the gateway drains (up to its drain_timeout_ms); then SIGKILL
    left=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && left=1; done
    [ "$left" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
  echo "demo stopped"
  exit "$1"
}
trap 'cleanup $?' EXIT
trap 'cleanup 0' INT TERM

in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in "$LISTEN_PORT" "$TLS_PORT" "$ADMIN_PORT"; do
  if in_use "$port"; then
    echo "port $port is already in use: stop whatever listens there (a previous demo?)"; exit 1
  fi
done

# ---- the demo's own configuration, from conf/ --------------------------------------------
mkdir -p "$DEMO_DIR"
if [ "${DEMO_RESET:-0}" = 1 ]; then
  rm -f "$DEMO_DIR/routes.json" "$DEMO_DIR/routes.json.history.jsonl"
fi
if [ -f "$DEMO_DIR/routes.json" ]; then
  routes_note="kept from an earlier run (DEMO_RESET=1 starts again from conf/routes.json)"
else
  cp conf/routes.json "$DEMO_DIR/routes.json"
  rm -f "$DEMO_DIR/routes.json.history.jsonl"
  routes_note="copied from conf/routes.json"
fi
cp conf/composers.json "$DEMO_DIR/composers.json"
# the TLS listener's certificate: self-signed, ECDSA P-256, for localhost and 127.0.0.1
TLS_DIR=$DEMO_DIR/tls
if [ ! -s "$TLS_DIR/localhost.pem" ] || [ ! -s "$TLS_DIR/localhost.key" ]; then
  mkdir -p "$TLS_DIR"
  if ! openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
      -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
      -keyout "$TLS_DIR/localhost.key" -out "$TLS_DIR/localhost.pem" 2>"$TLS_DIR/openssl.log"; then
    echo "cannot make the demo certificate (openssl): $(cat "$TLS_DIR/openssl.log")"; exit 1
  fi
  chmod 600 "$TLS_DIR/localhost.key"
  echo "TLS: made a self-signed certificate for localhost in $TLS_DIR"
fi
# conf/gateway.json with the ports above: listen, admin.listen, and each upstream's endpoints
# (by upstream name); the routes and composers files stay relative, so they resolve in DEMO_DIR.
python3 - "$DEMO_DIR/gateway.json" "$LISTEN_PORT" "$ADMIN_PORT" "$TLS_PORT" $UP_PORTS <<'PY' || exit 1
import json, sys
out, listen, admin, tls, ups = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
with open("conf/gateway.json") as f:
    conf = json.load(f)
# the shipped cleartext listener, and TLS beside it (paths relative to DEMO_DIR)
conf.pop("listen", None)
conf["listeners"] = [{"listen": "127.0.0.1:" + listen},
                     {"listen": "127.0.0.1:" + tls,
                      "tls": {"certificates": [{"cert": "tls/localhost.pem",
                                                "key": "tls/localhost.key"}]}}]
conf["admin"]["listen"] = "127.0.0.1:" + admin
for spec in ups:
    name, port = spec.rsplit(":", 1)
    if name in conf["upstreams"]:
        conf["upstreams"][name]["endpoints"] = ["127.0.0.1:" + port]
with open(out + ".tmp", "w") as f:
    json.dump(conf, f, indent=2)
    f.write("\n")
import os
os.replace(out + ".tmp", out)
PY

# ---- the stack -----------------------------------------------------------------------------
for spec in $UP_PORTS; do
  name=${spec%%:*}; port=${spec##*:}
  if in_use "$port"; then
    echo "port $port is already in use: stop whatever listens there (a previous demo?)"; exit 1
  fi
  "$BUILD/mockd" --listen 127.0.0.1:$port --name "$name" 2>/dev/null &
  pids+=($!)
done
# the user cache: Redis when it is installed (shared by all workers), else the in-process LRU
if command -v redis-server >/dev/null && ! in_use "$REDIS_PORT"; then
  mkdir -p "$DEMO_DIR/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$DEMO_DIR/redis" >/dev/null &
  pids+=($!)
  for _ in $(seq 50); do in_use "$REDIS_PORT" && break; sleep 0.1; done  # up before the gateway
  export GATEWAY_REDIS=127.0.0.1:$REDIS_PORT
  echo "user cache: redis-server on 127.0.0.1:$REDIS_PORT"
else
  echo "user cache: in-process LRU per worker (no redis-server)"
fi
"$BUILD/gateway" -c "$DEMO_DIR/gateway.json" &
gw=$!
pids+=($gw)
for _ in $(seq 100); do in_use "$ADMIN_PORT" && break; kill -0 "$gw" 2>/dev/null || break; sleep 0.1; done
if ! kill -0 "$gw" 2>/dev/null; then
  wait "$gw"; rc=$?
  echo "the gateway did not start (exit $rc)"; exit 1
fi

G=http://127.0.0.1:$LISTEN_PORT
GS=https://127.0.0.1:$TLS_PORT
CTL="$BUILD/gatewayctl --token demo-token"
[ "$ADMIN_PORT" = 9090 ] || CTL="$BUILD/gatewayctl --admin http://127.0.0.1:$ADMIN_PORT --token demo-token"
cat <<TXT

The gateway listens on $G and $GS (access log on this terminal). Try:

  curl --cacert $TLS_DIR/localhost.pem $GS/api/users/42   # over TLS (or curl -k)

  curl -i $G/api/users/42              # -> user-service (/users/42); again: X-Cache: HIT
  curl -s $G/api/orders/1001/details   # composed: order + user + shipment
  curl -i $G/api/orders/1001           # -> legacy monolith
  curl -i $G/api/orders/1001/shipment  # -> legacy monolith
  curl -i $G/api/users/missing-1       # 404 from user-service, passed through
  curl -i -H 'X-Mock-Hang: 1' $G/api/orders/1  # upstream hangs -> 504 after response_timeout_ms
  curl -s http://127.0.0.1:${DEMO_USER_PORT:-9102}/__stats                   # what user-service received

Cutover (admin API on 127.0.0.1:$ADMIN_PORT, token demo-token):
  $CTL routes list
  $CTL routes flip orders order-service   # orders -> order-service
  $CTL rollback --all                      # everything back to legacy
  curl -s http://127.0.0.1:$ADMIN_PORT/metrics | grep gateway_requests_total
  $CTL certs list                          # the TLS certificate: subject, SANs, expiry
  $CTL certs reload                        # after replacing $TLS_DIR/localhost.{pem,key}
  open http://127.0.0.1:$ADMIN_PORT/dashboard  # the cutover dashboard (asks for demo-token)

Routes: $DEMO_DIR/routes.json, $routes_note.
Edit $DEMO_DIR/routes.json to change routes: it takes effect at once (the file is watched);
so does \`kill -HUP\`. Route changes made through the admin API are written back to it, with
their history in $DEMO_DIR/routes.json.history.jsonl. conf/ is never written.
Ctrl-C stops the demo.
TXT
wait "$gw"
rc=$?
echo "the gateway exited ($rc)"
exit "$rc"
