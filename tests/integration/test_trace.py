"""W3C trace context (issue 13 §3): what the upstream receives. mockd's /echo sends back the
head it got, so each test states the traceparent/tracestate an upstream must have seen: the
client's trace-id, a new parent-id per upstream request (proxy, each composition leg, each
shadow copy), tracestate unchanged (shadows: "gw=shadow" first), the sampled flag kept; an
invalid traceparent starts a new trace and drops tracestate. The access log and the
gateway's own error bodies carry trace_id and span_id."""
import json
import os
import re
import socket
import threading
import time

from harness import Stack, free_port, request

TID = "4bf92f3577b34da6a3ce929d0e0e4736"
PID = "00f067aa0ba902b7"
TP_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


def echo_headers(doc, name):
    return [v for k, v in doc["headers"] if k.lower() == name.lower()]


def upstream_tp(doc):
    """(trace_id, parent_id, flags) of the one traceparent an upstream received."""
    tps = echo_headers(doc, "traceparent")
    assert len(tps) == 1, doc["headers"]
    m = TP_RE.match(tps[0])
    assert m, tps
    return m.groups()


def log_line(s, rid, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with open(s.access_log) as f:
                for line in f:
                    if rid in line:
                        return json.loads(line)
        except FileNotFoundError:
            pass
        time.sleep(0.05)
    raise AssertionError("no access log line with %s" % rid)


def test_trace_proxy_continues_the_clients_trace():
    with Stack() as s:
        parents = set()
        for i, flags in enumerate(("01", "00", "01")):
            rid = "trace-keep-%d" % i
            st, h, body = request(s.port, "GET", "/echo/t", headers={
                "traceparent": "00-%s-%s-%s" % (TID, PID, flags),
                "tracestate": "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7", "X-Request-Id": rid})
            assert st == 200, (st, body)
            doc = json.loads(body)
            tid, pid, fl = upstream_tp(doc)
            assert tid == TID and fl == flags, (tid, fl)  # same trace, sampled flag kept
            assert pid != PID and pid != "0" * 16, pid       # a new parent-id: our child span
            parents.add(pid)
            assert echo_headers(doc, "tracestate") == ["congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"], doc["headers"]
            line = log_line(s, rid)
            assert line["trace_id"] == TID and HEX16.match(line["span_id"]), line
            assert line["span_id"] not in (PID, pid), line  # the gateway's span, the hop's parent
        assert len(parents) == 3, parents  # one child span per proxied request


def test_trace_invalid_traceparent_starts_a_new_trace():
    with Stack() as s:
        bad = ["00-%s-%s-01" % (TID.upper(), PID), "ff-%s-%s-01" % (TID, PID),
               "00-%s-%s-01" % ("0" * 32, PID), "00-%s-%s-01" % (TID, "0" * 16),
               "00-%s-%s-01-extra" % (TID, PID), "00-%s-%s-1" % (TID, PID), "garbage"]
        seen = set()
        for i, tp in enumerate(bad):
            rid = "trace-bad-%d" % i
            st, h, body = request(s.port, "GET", "/echo/t", headers={
                "traceparent": tp, "tracestate": "congo=1", "X-Request-Id": rid})
            assert st == 200, (tp, st)
            doc = json.loads(body)
            tid, pid, fl = upstream_tp(doc)
            assert tid != TID and tid != "0" * 32 and fl == "01", (tp, tid, fl)
            assert echo_headers(doc, "tracestate") == [], (tp, doc["headers"])  # not ours to keep
            assert log_line(s, rid)["trace_id"] == tid
            seen.add(tid)
        # a future version's extra fields are ignored: the trace continues
        st, h, body = request(s.port, "GET", "/echo/t", headers={
            "traceparent": "cc-%s-%s-01-future" % (TID, PID)})
        assert upstream_tp(json.loads(body))[0] == TID
        # none at all: a new trace, one per request
        st, h, body = request(s.port, "GET", "/echo/t")
        seen.add(upstream_tp(json.loads(body))[0])
        assert len(seen) == len(bad) + 1, seen


def test_trace_in_gateway_error_bodies():
    with Stack(routes=[{"id": "only", "path": "/echo/**", "upstream": "legacy"}]) as s:
        st, h, body = request(s.port, "GET", "/nowhere", headers={
            "traceparent": "00-%s-%s-01" % (TID, PID), "X-Request-Id": "trace-err"})
        assert st == 404, st
        d = json.loads(body)
        assert d["request_id"] == "trace-err" and d["trace_id"] == TID and HEX16.match(d["span_id"]), d
        line = log_line(s, "trace-err")
        assert line["trace_id"] == TID and line["span_id"] == d["span_id"], line
        st, h, body = request(s.port, "GET", "/nowhere")
        d = json.loads(body)
        assert re.match(r"^[0-9a-f]{32}$", d["trace_id"]) and d["trace_id"] != TID, d


def test_trace_composition_legs_are_child_spans():
    s = Stack(routes=[{"id": "echo", "path": "/echo/**", "upstream": "legacy"}], start=False)
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
        raise
    with s:
        st, h, body = request(s.port, "GET", "/tr/7", headers={
            "traceparent": "00-%s-%s-00" % (TID, PID), "tracestate": "congo=1",
            "X-Request-Id": "trace-comp"})
        assert st == 200, (st, body)
        d = json.loads(body)
        pa, pb = upstream_tp(d["a"]), upstream_tp(d["b"])
        assert pa[0] == pb[0] == TID and pa[2] == pb[2] == "00", (pa, pb)
        assert len({pa[1], pb[1], PID}) == 3, (pa, pb)  # each leg its own span
        assert echo_headers(d["a"], "tracestate") == ["congo=1"] == echo_headers(d["b"], "tracestate")
        line = log_line(s, "trace-comp")
        assert line["trace_id"] == TID and line["span_id"] not in (pa[1], pb[1], PID), line


class Recorder:
    """A tiny upstream that answers {} to every request and keeps the heads it received."""

    def __init__(self):
        self.heads = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.port = free_port()
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stopping = False
        self.t = threading.Thread(target=self.serve, daemon=True)
        self.t.start()

    def serve(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self.conn, args=(c,), daemon=True).start()

    def conn(self, c):
        c.settimeout(5.0)
        buf = b""
        try:
            while not self.stopping:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, buf = buf.split(b"\r\n\r\n", 1)
                with self.lock:
                    self.heads.append(head.decode("latin-1"))
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        except OSError:
            pass
        finally:
            c.close()

    def header(self, i, name):
        lines = self.heads[i].split("\r\n")[1:]
        return [l.split(":", 1)[1].strip() for l in lines if l.split(":", 1)[0].strip().lower() == name]

    def stop(self):
        self.stopping = True
        self.sock.close()
        self.t.join(2.0)


def test_trace_shadow_copy_is_a_marked_child_span():
    rec = Recorder()
    try:
        routes = [{"id": "echo", "path": "/echo/**", "upstream": "legacy",
                   "shadow": {"upstream": "rec", "ignore_fields": ["name", "headers", "url", "method", "http_version"]}}]
        s = Stack(routes=routes, start=False)
        try:
            s.conf["upstreams"]["rec"] = {"endpoints": ["127.0.0.1:%d" % rec.port]}
            s.write()
            s.start()
        except Exception:
            s.stop()
            raise
        with s:
            st, h, body = request(s.port, "GET", "/echo/sh", headers={
                "traceparent": "00-%s-%s-01" % (TID, PID), "tracestate": "congo=1,gw=old"})
            assert st == 200, st
            primary = upstream_tp(json.loads(body))
            deadline = time.time() + 5
            while not rec.heads and time.time() < deadline:
                time.sleep(0.02)
            assert rec.heads, "the shadow copy never arrived"
            tps = rec.header(0, "traceparent")
            assert len(tps) == 1, rec.heads[0]
            tid, pid, fl = TP_RE.match(tps[0]).groups()
            assert tid == TID and fl == "01" and pid not in (PID, primary[1]), (tps, primary)
            # marked: our member first (its old value dropped), the rest unchanged
            assert rec.header(0, "tracestate") == ["gw=shadow,congo=1"], rec.heads[0]
            assert json.loads(body)["headers"] and echo_headers(json.loads(body), "tracestate") == ["congo=1,gw=old"]
    finally:
        rec.stop()


def test_trace_cached_lookup_fetch_is_a_child_span():
    """A cache miss on a "cache": true route (in-process LRU, no Redis) is fetched by the
    gateway with its own headers: the trace is among them."""
    routes = [{"id": "echo", "path": "/echo/**", "upstream": "legacy", "cache": True}]
    with Stack(routes=routes) as s:
        st, h, body = request(s.port, "GET", "/echo/cached", headers={
            "traceparent": "00-%s-%s-01" % (TID, PID), "tracestate": "congo=1"})
        assert st == 200 and h.get("x-cache") == "MISS", (st, h)
        tid, pid, fl = upstream_tp(json.loads(body))
        assert tid == TID and fl == "01" and pid != PID, (tid, pid, fl)
        assert echo_headers(json.loads(body), "tracestate") == ["congo=1"]
