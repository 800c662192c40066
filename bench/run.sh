#!/usr/bin/env bash
# bench/run.sh — `make bench`: the gateway side by side with nginx and HAProxy, same workers,
# same wrk settings, same mockd upstream, one after another in one run. See bench/bench.py
# for the knobs (BENCH_QUICK=1, BENCH_WORKERS=N, ...) and docs/performance.md for results.
#
# Installs wrk, h2load (nghttp2-client), nginx, haproxy and gnuplot-nox when missing (apt-get, sudo when not root).
# Every server runs from a temp dir with its own pid file; whatever is still running at exit
# is stopped by those pids.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for pair in wrk:wrk h2load:nghttp2-client nginx:nginx haproxy:haproxy gnuplot:gnuplot-nox; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "bench: installing ${missing[*]}"
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin"   # nginx and haproxy live in /usr/sbin

build="${BENCH_BUILD:-build}"
if [ ! -x "$build/gateway" ] || [ ! -x "$build/mockd" ]; then
    make --no-print-directory "$build/gateway" "$build/mockd"
fi

BENCH_TMP="$(mktemp -d "${TMPDIR:-/tmp}/gw-bench.XXXXXX")"
export BENCH_TMP
py=

# Stops what is left by the pids in our pid files: only pids that still run a binary we start.
cleanup() {
    local rc=$? f pid exe sig left
    trap - EXIT INT TERM
    if [ -n "$py" ] && kill -0 "$py" 2>/dev/null; then
        kill -TERM "$py" 2>/dev/null || true
        wait "$py" 2>/dev/null || true
    fi
    for sig in TERM KILL; do
        left=0
        for f in "$BENCH_TMP"/pids/*.pid; do
            [ -f "$f" ] || continue
            while read -r pid; do
                [ -n "$pid" ] || continue
                exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
                case "${exe##*/}" in
                    gateway|mockd|nginx|haproxy) kill "-$sig" "$pid" 2>/dev/null && left=1 ;;
                esac
            done <"$f"
        done
        [ "$left" = 0 ] && break
        [ "$sig" = KILL ] || sleep 1
    done
    [ -n "${BENCH_KEEP_TMP:-}" ] && echo "bench: temp dir kept: $BENCH_TMP" || rm -rf "$BENCH_TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

python3 bench/bench.py "$@" &
py=$!
wait "$py"
