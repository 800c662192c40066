"""Span export as OTLP/HTTP JSON (issue 13 §3): with "tracing": {"otlp_endpoint": ...} the
gateway POSTs its spans to a collector - a SERVER span per client request and a CLIENT span
per upstream request, whose span id is the parent-id the upstream received in traceparent.
Only sampled traces are exported. A hung collector costs the requests nothing: spans are
dropped and counted, and the gateway still stops cleanly.

The collector here is a small http.server on a loopback port that keeps what it receives."""
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from harness import BUILD, ROOT, Stack, connect, free_port, metrics, read_response, request, \
    wait_until

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
PID = "00f067aa0ba902b7"
TP_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


class Collector:
    """An OTLP/HTTP JSON collector: keeps every span of every POST to /v1/traces. hang=True:
    reads the request and answers nothing until released (stop)."""

    def __init__(self, hang=False):
        self.spans = []
        self.posts = 0
        self.bad = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if hang:
                    outer.release.wait(60)
                    return
                try:
                    doc = json.loads(body)
                    assert self.path == "/v1/traces", self.path
                    assert self.headers.get("Content-Type") == "application/json"
                    rs = doc["resourceSpans"][0]
                    svc = rs["resource"]["attributes"][0]
                    spans = rs["scopeSpans"][0]["spans"]
                    for sp in spans:
                        sp["_service"] = svc
                    with outer.lock:
                        outer.posts += 1
                        outer.spans.extend(spans)
                except Exception as e:  # the test reports what was wrong with the body
                    with outer.lock:
                        outer.bad.append("%r: %s" % (e, body[:300]))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.port = free_port()
        self.srv = ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.srv.daemon_threads = True
        self.t = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.t.start()

    def url(self):
        return "http://127.0.0.1:%d/v1/traces" % self.port

    def of_trace(self, tid):
        with self.lock:
            assert not self.bad, self.bad
            return [s for s in self.spans if s["traceId"] == tid]

    def stop(self):
        self.release.set()
        self.srv.shutdown()
        self.srv.server_close()


def attrs(span):
    out = {}
    for a in span["attributes"]:
        v = a["value"]
        out[a["key"]] = v["stringValue"] if "stringValue" in v else int(v["intValue"])
    return out


def tracing(col, **kw):
    t = {"otlp_endpoint": col.url(), "flush_ms": 50}
    t.update(kw)
    return {"tracing": t}


def upstream_tp(doc):
    tps = [v for k, v in doc["headers"] if k.lower() == "traceparent"]
    assert len(tps) == 1, doc["headers"]
    return TP_RE.match(tps[0]).groups()


def wait_spans(col, tid, n):
    return wait_until(lambda: len(col.of_trace(tid)) >= n and col.of_trace(tid), 10,
                      "%d span(s) of trace %s at the collector" % (n, tid))


def test_otlp_proxied_request_server_client_and_shadow_spans():
    col = Collector()
    s = Stack(routes=[{"id": "echo", "path": "/echo/**", "upstream": "legacy",
                       "shadow": {"upstream": "user-service"}},
                      {"id": "dead", "path": "/dead/**", "upstream": "dead"}],
              gw_conf=tracing(col, service_name="edge-gw"), start=False)
    try:
        s.conf["upstreams"]["dead"] = {"endpoints": ["127.0.0.1:%d" % free_port()]}
        s.write()
        s.start()
    except Exception:
        s.stop()
        col.stop()
        raise
    try:
        with s:
            t0 = time.time_ns()
            st, h, body = request(s.port, "GET", "/echo/x", headers={
                "traceparent": "00-%s-%s-01" % (TID, PID)})
            assert st == 200, (st, body)
            tid, sent_parent, flags = upstream_tp(json.loads(body))
            assert tid == TID and flags == "01"
            spans = wait_spans(col, TID, 3)
            assert len(spans) == 3, spans
            server = [x for x in spans if x["kind"] == 2][0]
            client = [x for x in spans if x["kind"] == 3 and attrs(x)["gateway.role"] == "proxy"][0]
            shadow = [x for x in spans if x["kind"] == 3 and attrs(x)["gateway.role"] == "shadow"][0]
            # the shadow copy: a child span of its own, on the candidate
            assert shadow["parentSpanId"] == server["spanId"], shadow
            assert shadow["spanId"] not in (client["spanId"], server["spanId"]), shadow
            assert attrs(shadow)["gateway.upstream"] == "user-service", shadow
            # the stitching: client <- server <- the caller's span; the upstream's parent-id
            # is the client span
            assert server.get("parentSpanId") == PID, server
            assert client["parentSpanId"] == server["spanId"], (client, server)
            assert client["spanId"] == sent_parent, (client, sent_parent)
            assert re.match(r"^[0-9a-f]{16}$", server["spanId"]) and server["spanId"] != PID
            sa, ca = attrs(server), attrs(client)
            assert server["name"] == "GET echo" and client["name"] == "GET legacy", (server, client)
            assert sa["http.request.method"] == "GET" and sa["http.response.status_code"] == 200, sa
            assert sa["http.route"] == "echo" and sa["client.address"] == "127.0.0.1", sa
            assert sa["gateway.upstream"] == "legacy", sa
            assert ca["http.response.status_code"] == 200 and ca["gateway.role"] == "proxy", ca
            assert "status" not in server and "status" not in client, (server, client)
            assert server["_service"]["value"]["stringValue"] == "edge-gw", server
            # times: Unix nanoseconds as strings, the client's inside the server's
            st_, en_ = int(server["startTimeUnixNano"]), int(server["endTimeUnixNano"])
            cs, ce = int(client["startTimeUnixNano"]), int(client["endTimeUnixNano"])
            assert isinstance(server["startTimeUnixNano"], str)
            assert t0 - 2e9 < st_ <= cs <= ce <= en_ < time.time_ns() + 2e9, (st_, cs, ce, en_)

            # not sampled (flags 00): nothing exported, though its upstream request is traced
            tid2 = "a" * 32
            st, h, body = request(s.port, "GET", "/echo/y", headers={
                "traceparent": "00-%s-%s-00" % (tid2, PID)})
            assert st == 200 and upstream_tp(json.loads(body))[2] == "00"
            # a gateway error (the upstream refuses connections): error status on both spans
            tid3 = "b" * 32
            st, h, body = request(s.port, "GET", "/dead/z", headers={
                "traceparent": "00-%s-%s-01" % (tid3, PID)})
            assert st == 502, st
            spans3 = wait_spans(col, tid3, 2)
            srv3 = [x for x in spans3 if x["kind"] == 2][0]
            cli3 = [x for x in spans3 if x["kind"] == 3][0]
            assert srv3["status"]["code"] == 2 and attrs(srv3)["http.response.status_code"] == 502
            assert cli3["status"]["code"] == 2 and attrs(cli3)["error.type"], cli3
            assert col.of_trace(tid2) == [], col.of_trace(tid2)  # (sent before tid3's)
            m = metrics(s)
            assert m["gateway_trace_spans_exported_total"] >= 4, m
            assert m['gateway_trace_spans_dropped_total{reason="queue_full"}'] == 0, m
    finally:
        col.stop()


def test_otlp_composition_legs_and_sample_ratio():
    """A composition: its SERVER span and one CLIENT span per leg (role fetch). With
    sample_ratio 0 a new trace is not sampled (exported nothing, flags 00 upstream) while a
    client's sampled trace still is."""
    col = Collector()
    s = Stack(routes=[{"id": "echo", "path": "/echo/**", "upstream": "legacy"}],
              gw_conf=tracing(col, sample_ratio=0), start=False)
    try:
        comps = {"compositions": [{"id": "tr", "path": "/tr/{id}", "deadline_ms": 2000, "legs": [
            {"name": "a", "url": "/echo/a/{id}", "required": True, "timeout_ms": 1500},
            {"name": "b", "url": "/echo/b/{id}", "timeout_ms": 1500}]}]}
        with open(os.path.join(s.tmp, "composers.json"), "w") as f:
            json.dump(comps, f)
        s.conf["composers"] = "composers.json"
        s.write()
        s.start()
    except Exception:
        s.stop()
        col.stop()
        raise
    try:
        with s:
            st, h, body = request(s.port, "GET", "/tr/7", headers={
                "traceparent": "00-%s-%s-01" % (TID, PID)})
            assert st == 200, (st, body)
            d = json.loads(body)
            legs = {upstream_tp(d["a"])[1], upstream_tp(d["b"])[1]}
            spans = wait_spans(col, TID, 3)
            server = [x for x in spans if x["kind"] == 2]
            clients = [x for x in spans if x["kind"] == 3]
            assert len(server) == 1 and len(clients) == 2, spans
            assert attrs(server[0])["http.route"] == "tr", server
            assert {c["spanId"] for c in clients} == legs, (clients, legs)
            for c in clients:
                assert c["parentSpanId"] == server[0]["spanId"], c
                assert attrs(c)["gateway.role"] == "fetch" and attrs(c)["http.route"] == "echo", c
            # a new trace, sample_ratio 0: flags 00 upstream, nothing exported
            st, h, body = request(s.port, "GET", "/echo/new")
            tid_new, _, flags = upstream_tp(json.loads(body))
            assert flags == "00", flags
            request(s.port, "GET", "/echo/after", headers={
                "traceparent": "00-%s-%s-01" % ("c" * 32, PID)})
            wait_spans(col, "c" * 32, 2)
            assert col.of_trace(tid_new) == []
    finally:
        col.stop()


def test_otlp_hung_collector_drops_and_counts_and_exits_cleanly():
    """The collector reads and never answers: requests go on unhurt, spans beyond the queue
    are dropped and counted (queue_full), the POST times out (export_failed), and SIGTERM
    still ends the gateway within the last flush's bound."""
    col = Collector(hang=True)
    s = Stack(routes=[{"id": "echo", "path": "/echo/**", "upstream": "legacy"}],
              gw_conf=tracing(col, batch_size=8, max_queue=32, timeout_ms=2000, flush_ms=20),
              workers=2)
    try:
        with s:
            worst = 0.0
            for c in range(4):
                sock, buf = connect(s.port), b""
                try:
                    for i in range(100):
                        t = time.monotonic()
                        sock.sendall(b"GET /echo/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i)
                        r, buf = read_response(sock, buf=buf)
                        worst = max(worst, time.monotonic() - t)
                        assert r.status == 200, r.status
                finally:
                    sock.close()
            # a request waiting on the hung collector would take its 2 s deadline
            assert worst < 1.5, "slowest request %.3f s" % worst
            m = wait_until(lambda: (lambda m: m if m.get(
                "gateway_trace_export_failures_total", 0) >= 1 else None)(metrics(s)), 10,
                "a failed export")
            assert m['gateway_trace_spans_dropped_total{reason="queue_full"}'] > 0, m
            assert m['gateway_trace_spans_dropped_total{reason="export_failed"}'] >= 1, m
            assert m["gateway_trace_spans_exported_total"] == 0, m
            for i in range(20):  # something queued for the last flush
                assert request(s.port, "GET", "/echo/last")[0] == 200
            t = time.monotonic()
            rc = s.gw.stop()
            took = time.monotonic() - t
            s.gw = None  # stopped here: __exit__ checks the rest
            assert rc == 0, rc
            assert took < 8, took  # the last flush is bounded by timeout_ms
    finally:
        col.stop()


def _check(tracing_conf):
    d = tempfile.mkdtemp(prefix="gwtest-")
    try:
        conf = {"listen": "127.0.0.1:%d" % free_port(), "upstreams": {"a": {"endpoints": [
            "127.0.0.1:9"]}}, "routes": {"source": "file", "file": "routes.json"},
            "tracing": tracing_conf}
        with open(os.path.join(d, "gateway.json"), "w") as f:
            json.dump(conf, f)
        with open(os.path.join(d, "routes.json"), "w") as f:
            json.dump({"routes": [{"id": "a", "path": "/**", "upstream": "a"}]}, f)
        cp = subprocess.run([os.path.join(ROOT, BUILD, "gateway"), "-c",
                             os.path.join(d, "gateway.json"), "--check"],
                            capture_output=True, text=True, timeout=30)
        return cp.returncode, (cp.stdout + cp.stderr).strip().splitlines()[0], d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_otlp_config_errors_name_the_field():
    for t, field, reason in [
            ({"otlp_endpoint": "https://127.0.0.1:4318/v1/traces"}, "otlp_endpoint",
             "must start with http://"),
            ({"otlp_endpoint": "http:///v1/traces"}, "otlp_endpoint", "needs host:port"),
            ({"otlp_endpoint": "http://127.0.0.1/v1/traces"}, "otlp_endpoint", ""),
            ({"otlp_endpoint": 5}, "otlp_endpoint", "must be a string"),
            ({"sample_ratio": 1.5}, "sample_ratio", "must be a number from 0 to 1"),
            ({"batch_size": 0}, "batch_size", ""),
            ({"max_queue": "big"}, "max_queue", ""),
            ({"flush": 10}, "flush", "unknown key")]:
        rc, line, d = _check(t)
        want = "%s/gateway.json: tracing.%s: " % (d, field)
        assert rc == 1 and line.startswith(want) and reason in line, (t, rc, line, want, reason)
    rc, line, d = _check({"otlp_endpoint": "http://127.0.0.1:4318", "sample_ratio": 0.25})
    assert rc == 0, line
