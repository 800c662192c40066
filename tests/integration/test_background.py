"""Background exchanges (http/oneshot.h): shadow copies to a hung candidate are capped per
worker and per endpoint (skipped and counted), have their own shadow.timeout_ms, and do not
hold a draining gateway past drain_timeout_ms."""
import os
import signal
import socket
import threading
import time

from harness import (BUILD, ROOT, VALGRIND, Proc, Stack, connect, metrics, read_response,
                     request, wait_port, wait_until)

HUNG = {"legacy": 1, "order-service": ["--hang-rate", "1"]}


def routes(**shadow):
    sh = {"upstream": "order-service"}
    sh.update(shadow)
    return [{"id": "orders", "path": "/api/orders/{id}", "upstream": "legacy",
             "rewrites": {"order-service": {"template": "/orders/{id}"}}, "shadow": sh},
            {"id": "legacy", "path": "/**", "upstream": "legacy"}]


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def skipped(s, route="orders"):
    return sum(v for k, v in metrics(s).items()
               if k.startswith("gateway_shadow_skipped_total{route=\"%s\"" % route))


def drive(port, n_requests, n_threads, reconnect_every=0, timeout=10.0):
    """N_REQUESTS GETs over N_THREADS keep-alive clients, each opening a new connection
    every RECONNECT_EVERY requests (0: never). Returns (statuses by code, errors)."""
    statuses, errors, lock = {}, [], threading.Lock()
    per = n_requests // n_threads

    def client(t):
        s, buf = None, b""
        for i in range(per):
            try:
                if s is not None and reconnect_every and i % reconnect_every == 0:
                    s.close()
                    s = None
                if s is None:
                    s, buf = connect(port, timeout), b""
                s.sendall(("GET /api/orders/%d HTTP/1.1\r\nHost: x\r\n\r\n"
                           % (t * per + i + 1)).encode())
                r, buf = read_response(s, buf=buf)
                with lock:
                    statuses[r.status] = statuses.get(r.status, 0) + 1
                if (r.header("connection") or "").lower() == "close":
                    s.close()
                    s = None
            except (OSError, EOFError) as e:
                with lock:
                    errors.append("%s: %s" % (type(e).__name__, e))
                if s is not None:
                    s.close()
                s = None
        if s is not None:
            s.close()

    ths = [threading.Thread(target=client, args=(t,)) for t in range(n_threads)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(120)
    return statuses, errors


class FdWatch:
    """Samples the gateway's open descriptors every 10 ms; .peak is the largest count."""

    def __init__(self, pid):
        self.pid, self.peak, self.stop_ = pid, 0, threading.Event()
        self.t = threading.Thread(target=self.run)
        self.t.start()

    def run(self):
        while not self.stop_.is_set():
            try:
                self.peak = max(self.peak, fds(self.pid))
            except OSError:
                return
            time.sleep(0.01)

    def stop(self):
        self.stop_.set()
        self.t.join()
        return self.peak


N = 600 if VALGRIND else 3000


def test_hung_shadow_descriptors_stay_under_the_caps():
    """3,000 requests on a route shadowed to a candidate that never answers: the gateway's
    descriptors stay under the background caps plus a margin (before: one per request, 3,022
    after 3,000), the shed copies are counted, every client got the primary's answer."""
    with Stack(upstreams=HUNG, routes=routes(timeout_ms=60000), workers=1,
               gw_conf={"background": {"max_in_flight": 256,
                                       "max_connections_per_endpoint": 64}}) as s:
        wait_port(s.admin_port)
        base = fds(s.gw.pid)
        w = FdWatch(s.gw.pid)
        statuses, errors = drive(s.port, N, 8)
        peak = w.stop()
        print("    %d requests: descriptors %d at rest, peak %d; skipped %d"
              % (N, base, peak, skipped(s)))
        assert not errors, errors[:5]
        assert statuses == {200: N}, statuses
        # 64 background connections to the one candidate endpoint, 8 clients, the legacy pool
        assert peak <= base + 64 + 8 + 8 + 16, (base, peak)
        assert skipped(s) >= N - 64 - 8, metrics(s)
        m = metrics(s)
        assert m.get('gateway_shadow_skipped_total{route="orders",reason="endpoint"}', 0) > 0, m
        # the candidate saw at most the per-endpoint cap of copies (the others were shed)
        assert s.mock("order-service").stats()["requests"] <= 64


def test_low_nofile_no_client_reset():
    """Under ulimit -n 256 and a hung candidate, 3,000 requests from 8 clients that open a
    new connection every 10 requests: none is reset (before: the shadows took every
    descriptor, and new connections were refused)."""
    n = 600 if VALGRIND else 3000
    s = Stack(upstreams=HUNG, routes=routes(timeout_ms=60000), workers=1, start=False)
    try:
        gw = [os.path.join(ROOT, BUILD, "gateway"), "-c", s.conf_path]
        s.gw = Proc(["sh", "-c", 'ulimit -n 256 && exec "$@"', "sh"] +
                    (["valgrind", "--quiet", "--error-exitcode=99"] if VALGRIND else []) + gw,
                    os.path.join(s.tmp, "gateway.log"))
        wait_port(s.port)
        wait_port(s.admin_port)
        with open("/proc/%d/limits" % s.gw.pid) as f:
            assert any(l.startswith("Max open files") and " 256 " in l for l in f), \
                "the limit did not apply"
        statuses, errors = drive(s.port, n, 8, reconnect_every=10)
        print("    %d requests under ulimit -n 256: %r, %d errors; descriptors %d"
              % (n, statuses, len(errors), fds(s.gw.pid)))
        assert not errors, errors[:5]
        assert statuses == {200: n}, statuses
        assert skipped(s) > 0
    finally:
        rc = s.stop()
    assert rc == 0, (rc, s.gw.output()[-2000:])


def test_shadow_timeout_is_the_routes():
    """shadow.timeout_ms = 300 with a hung candidate: the shadow is counted as a mismatch
    ("shadow failed: timeout") after 0.3 s, not after the upstream's 30 s response timeout."""
    with Stack(upstreams=HUNG, routes=routes(timeout_ms=300), workers=1) as s:
        wait_port(s.admin_port)
        t0 = time.monotonic()
        st, h, _ = request(s.port, "GET", "/api/orders/7")
        assert st == 200 and h["x-gateway-upstream"] == "legacy", (st, h)
        wait_until(lambda: metrics(s).get("gateway_shadow_mismatches_total", 0) >= 1, 5.0,
                   "the shadow to time out")
        took = time.monotonic() - t0
        print("    shadow counted failed after %.2f s" % took)
        assert took >= 0.29, took  # not before its deadline
        wait_until(lambda: "shadow failed: timeout" in s.gw.output(), 3.0, "the mismatch line")


def sigterm_exit_seconds(s, limit=20.0):
    t0 = time.monotonic()
    os.kill(s.gw.pid, signal.SIGTERM)
    s.gw.p.wait(limit)
    return time.monotonic() - t0, s.gw.p.returncode


def test_drain_ends_with_a_hung_shadow():
    """drain_timeout_ms = 1000 and shadows out to a hung candidate: SIGTERM ends the process
    (exit 0) at the drain deadline, not when the shadows' 30 s timeout fires."""
    with Stack(upstreams=HUNG, routes=routes(timeout_ms=60000), workers=1,
               gw_conf={"shutdown": {"drain_timeout_ms": 1000}}) as s:
        wait_port(s.admin_port)
        statuses, errors = drive(s.port, 20, 2)
        assert statuses == {200: 20} and not errors, (statuses, errors)
        wait_until(lambda: s.mock("order-service").stats()["requests"] >= 20, 5.0,
                   "the shadow copies to arrive")
        took, rc = sigterm_exit_seconds(s)
        print("    exit %d after %.2f s (drain 1 s)" % (rc, took))
        assert rc == 0, s.gw.output()[-2000:]
        assert took < 5.0, took


def test_drain_ends_when_a_shadow_answers_during_it():
    """The shadow answers (after 400 ms) while the gateway drains: its connection is closed,
    not pooled (a pooled one's idle timer kept the loop alive for 30 s), and the process
    exits promptly."""
    ups = {"legacy": 1, "order-service": ["--latency-ms", "400"]}
    with Stack(upstreams=ups, routes=routes(timeout_ms=60000), workers=1,
               gw_conf={"shutdown": {"drain_timeout_ms": 3000}}) as s:
        wait_port(s.admin_port)
        st, h, _ = request(s.port, "GET", "/api/orders/1")
        assert st == 200 and h["x-gateway-upstream"] == "legacy", (st, h)
        took, rc = sigterm_exit_seconds(s)
        print("    exit %d after %.2f s (shadow answered during the drain)" % (rc, took))
        assert rc == 0, s.gw.output()[-2000:]
        assert took < 5.0, took
        assert s.mock("order-service").stats()["requests"] == 1
