"""HTTP/2 to clients (issue 11 §2): h2 over TLS chosen by ALPN, h2c by prior knowledge on a
cleartext listener with "h2c": true; upstreams stay HTTP/1.1 (mockd).

Real clients: curl --http2 (ALPN) and --http2-prior-knowledge (h2c), h2load (many streams on
few connections). What no well-behaved client sends comes from a raw-socket client below
(frames built by hand, HPACK literal fields without Huffman): connection-specific headers,
bad pseudo-headers, a Content-Length that DATA contradicts, a flood of HEADERS + RST_STREAM
("rapid reset", CVE-2023-44487), a reader that opens no flow-control window. Responses are
judged by frame type and error code (the raw client decodes no HPACK); statuses and headers
come from curl."""
import json
import os
import signal
import socket
import struct
import subprocess
import time

from harness import Stack, fnv1a64, free_port, metrics, wait_port, wait_until
from test_tls import CA, pair

ROUTES = [
    {"id": "orders", "path": "/api/orders/{id}", "upstream": "order-service",
     "rewrites": {"order-service": {"template": "/orders/{id}"}}},
    {"id": "shipments", "path": "/api/orders/{id}/shipment", "upstream": "logistics-service",
     "rewrites": {"logistics-service": {"template": "/shipments?order_id={id}"}}},
    {"id": "users", "path": "/api/users/**", "upstream": "user-service",
     "rewrites": {"user-service": {"strip_prefix": "/api"}}, "cache": True},
    {"id": "echo", "path": "/echo/**", "upstream": "legacy"},
    {"id": "bytes", "path": "/bytes/**", "upstream": "legacy"},
]
UPSTREAMS = {"legacy": 1, "order-service": 1, "user-service": 1, "logistics-service": 1}


def h2_stack(http2=None, limits=None, gw_conf=None):
    """A started Stack: s.port cleartext HTTP/1.1, s.h2c_port cleartext with h2c, s.tls_port
    TLS with ALPN h2 + http/1.1 (s.ca signs its certificate), the shipped composition."""
    gw_conf = dict(gw_conf or {}, **({"limits": limits} if limits else {}))
    s = Stack(upstreams=UPSTREAMS, routes=ROUTES, start=False, gw_conf=gw_conf or None)
    try:
        s.ca = CA(s.tmp)
        cert = s.ca.leaf("localhost", ["localhost"])
        s.h2c_port, s.tls_port = free_port(), free_port()
        del s.conf["listen"]
        s.conf["listeners"] = [
            {"listen": "127.0.0.1:%d" % s.port},
            {"listen": "127.0.0.1:%d" % s.h2c_port, "h2c": True},
            {"listen": "127.0.0.1:%d" % s.tls_port,
             "tls": {"certificates": [pair(cert)], "alpn": ["h2", "http/1.1"]}}]
        if http2:
            s.conf["http2"] = http2
        with open(os.path.join(os.path.dirname(__file__), "..", "..", "conf", "composers.json")) as f:
            comps = json.load(f)
        with open(os.path.join(s.tmp, "composers.json"), "w") as f:
            json.dump(comps, f)
        s.conf["composers"] = "composers.json"
        s.write()
        s.start()
        wait_port(s.tls_port)
        wait_port(s.h2c_port)
    except Exception:
        s.stop()
        raise
    return s


def curl(s, path, args=(), tls=True, timeout=20):
    """(status, {header: value}, body bytes, http_version) of one curl request over h2."""
    if tls:
        url = ["--http2", "--cacert", s.ca.pem, "https://localhost:%d%s" % (s.tls_port, path)]
    else:
        url = ["--http2-prior-knowledge", "http://127.0.0.1:%d%s" % (s.h2c_port, path)]
    out = os.path.join(s.tmp, "curl.out")
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "-D", "-", "-o", out,
                        "-w", "\n%{http_version}"] + list(args) + url,
                       capture_output=True, timeout=timeout)
    assert r.returncode == 0, (r.returncode, r.stderr)
    text = r.stdout.decode("latin-1")
    head, _, ver = text.rpartition("\n")
    lines = [l for l in head.split("\r\n") if l]
    status = int(lines[0].split()[1])
    hdrs = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    with open(out, "rb") as f:
        body = f.read()
    return status, hdrs, body, ver


def n_requests(m):
    return sum(m.stats()["by_path"].values())


# ---- a raw HTTP/2 client --------------------------------------------------------------------

DATA, HEADERS, RST, SETTINGS, PING, GOAWAY, WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
PROTOCOL_ERROR, INTERNAL_ERROR, REFUSED_STREAM, CANCEL, ENHANCE_YOUR_CALM = 1, 2, 7, 8, 11
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def hp_int(v, bits, first=0):
    top = (1 << bits) - 1
    if v < top:
        return bytes([first | v])
    out = [first | top]
    v -= top
    while v >= 128:
        out.append(v % 128 + 128)
        v //= 128
    out.append(v)
    return bytes(out)


def hpack(fields):
    """HPACK: every field a literal without indexing, new name, no Huffman (RFC 7541 §6.2.2)."""
    out = b""
    for n, v in fields:
        n, v = n.encode(), v.encode()
        out += b"\x00" + hp_int(len(n), 7) + n + hp_int(len(v), 7) + v
    return out


def req_fields(path, method="GET", extra=(), authority="localhost"):
    return [(":method", method), (":scheme", "http"), (":authority", authority),
            (":path", path)] + list(extra)


class Raw:
    """One h2c connection: preface + SETTINGS (initial window WINDOW), frames in and out."""

    def __init__(self, port, window=65535, timeout=10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.closed = False
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HI", 4, window)))

    def send(self, *frames):
        self.sock.sendall(b"".join(frames))

    def request(self, sid, path, method="GET", extra=(), end=True, **kw):
        self.send(frame(HEADERS, END_HEADERS | (END_STREAM if end else 0), sid,
                        hpack(req_fields(path, method, extra, **kw))))

    def next_frame(self, timeout=10.0):
        """(type, flags, stream id, payload), or None once the server closed."""
        deadline = time.time() + timeout
        while len(self.buf) < 9 or len(self.buf) < 9 + int.from_bytes(self.buf[:3], "big"):
            if self.closed:
                return None
            self.sock.settimeout(max(0.01, deadline - time.time()))
            try:
                d = self.sock.recv(1 << 20)
            except socket.timeout:
                raise AssertionError("no frame from the server in %.1fs" % timeout)
            except ConnectionResetError:
                d = b""
            if not d:
                self.closed = True
                continue
            self.buf += d
        n = int.from_bytes(self.buf[:3], "big")
        t, fl, sid = self.buf[3], self.buf[4], struct.unpack(">I", self.buf[5:9])[0] & 0x7FFFFFFF
        payload = self.buf[9:9 + n]
        self.buf = self.buf[9 + n:]
        if t == SETTINGS and not fl & ACK:
            self.send(frame(SETTINGS, ACK, 0))
        return t, fl, sid, payload

    def until(self, pred, timeout=10.0):
        """Frames until PRED(frame) is true (that frame returned) or the connection ends (None)."""
        deadline = time.time() + timeout
        while True:
            f = self.next_frame(max(0.01, deadline - time.time()))
            if f is None or pred(f):
                return f

    def stream_end(self, sid, timeout=10.0):
        """How stream SID ended: ("end", data bytes) or ("rst", code), or ("closed", None);
        its DATA payload is kept in self.body."""
        data = 0
        self.body = b""
        deadline = time.time() + timeout
        while True:
            f = self.next_frame(max(0.01, deadline - time.time()))
            if f is None:
                return "closed", None
            t, fl, s_, p = f
            if s_ != sid:
                continue
            if t == RST:
                return "rst", struct.unpack(">I", p)[0]
            if t == DATA:
                data += len(p)
                self.body += p
            if t in (DATA, HEADERS) and fl & END_STREAM:
                return "end", data

    def close(self):
        self.sock.close()


# ---- real clients ---------------------------------------------------------------------------

def test_h2_alpn_and_h2c_with_gateway_headers_and_errors():
    with h2_stack(limits={"max_body_bytes": 1 << 20}) as s:
        for tls in (True, False):
            st, h, b, ver = curl(s, "/api/users/42", tls=tls)
            assert st == 200 and ver == "2", (st, ver)
            assert json.loads(b)["id"] == "42", b[:200]
            assert h.get("x-gateway-upstream") == "user-service" and len(h.get("x-request-id", "")) >= 16, h
            # a client's X-Request-Id is kept and propagated
            st, h, b, _ = curl(s, "/echo/rid", ["-H", "X-Request-Id: h2-rid-1"], tls=tls)
            doc = json.loads(b)
            assert st == 200 and h["x-request-id"] == "h2-rid-1", h
            assert ["X-Request-Id", "h2-rid-1"] in doc["headers"], doc["headers"]
            assert doc["http_version"] == "1.1", doc  # upstreams stay HTTP/1.1
            # the gateway's own errors: JSON with the request id
            st, h, b, _ = curl(s, "/nowhere", tls=tls)
            err = json.loads(b)
            assert st == 404 and err["status"] == 404 and err["request_id"] == h["x-request-id"], (st, b)
            assert h.get("x-gateway-upstream") == "gateway", h
            big = os.path.join(s.tmp, "big.bin")
            with open(big, "wb") as f:
                f.write(b"x" * (2 << 20))
            st, h, b, _ = curl(s, "/echo/big", ["--data-binary", "@" + big], tls=tls)
            assert st == 413 and json.loads(b)["status"] == 413, (st, b[:200])
        # limits per stream: the header list (431) and the target (414), answered in JSON
        st, h, b, _ = curl(s, "/echo/h", ["-H", "X-Big: " + "b" * 20000], tls=False)
        assert st == 431 and json.loads(b)["status"] == 431, (st, b[:200])
        st, h, b, _ = curl(s, "/echo/" + "u" * 9000, tls=False)
        assert st == 414 and json.loads(b)["status"] == 414, (st, b[:200])
        # HTTP/1.1 still works on both listeners that offer h2
        r = subprocess.run(["curl", "-sS", "--http1.1", "--cacert", s.ca.pem, "-o", "/dev/null", "-w",
                            "%{http_code} %{http_version}", "https://localhost:%d/api/users/7" % s.tls_port],
                           capture_output=True, text=True, timeout=20)
        assert r.stdout == "200 1.1", (r.stdout, r.stderr)
        r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
                            "http://127.0.0.1:%d/api/users/7" % s.h2c_port],
                           capture_output=True, text=True, timeout=20)
        assert r.stdout == "200 1.1", (r.stdout, r.stderr)
        # and the plain listener does not speak h2c
        r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-o", "/dev/null",
                            "http://127.0.0.1:%d/api/users/7" % s.port],
                           capture_output=True, text=True, timeout=20)
        assert r.returncode != 0, r.stdout
        m = metrics(s)
        assert m["gateway_h2_streams_total"] >= 8, {k: v for k, v in m.items() if "h2" in k}
        def protos():
            with open(s.access_log) as f:
                got = {(l["path"], l["proto"]) for l in map(json.loads, filter(str.strip, f))}
            return got if ("/api/users/7", "HTTP/1.1") in got else None
        protos = wait_until(protos, 5, "the access log written")  # (flushed by a timer)
        assert ("/nowhere", "HTTP/2") in protos and ("/api/users/7", "HTTP/1.1") in protos, protos


def test_h2_post_bodies_compared():
    with h2_stack() as s:
        body = os.urandom(700 * 1024)  # over the stream window: flow control both ways
        path = os.path.join(s.tmp, "body.bin")
        with open(path, "wb") as f:
            f.write(body)
        for tls in (True, False):
            st, h, b, _ = curl(s, "/echo/post", ["--data-binary", "@" + path, "-H",
                                                 "Content-Type: application/octet-stream"], tls=tls)
            doc = json.loads(b)
            assert st == 200 and doc["method"] == "POST", (st, b[:300])
            assert doc["body_bytes"] == len(body) and doc["body_fnv1a64"] == "%016x" % fnv1a64(body), doc
        # without Content-Length (curl -T - streams it): forwarded chunked
        r = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-T", "-", "-X", "POST",
                            "http://127.0.0.1:%d/echo/chunked" % s.h2c_port],
                           input=body[:100000], capture_output=True, timeout=20)
        doc = json.loads(r.stdout)
        assert doc["body_bytes"] == 100000 and doc["body_fnv1a64"] == "%016x" % fnv1a64(body[:100000]), doc
        assert ["Transfer-Encoding", "chunked"] in doc["headers"] or \
            any(k.lower() == "transfer-encoding" for k, _ in doc["headers"]), doc["headers"]


def test_h2_composition_and_cache():
    with h2_stack() as s:
        st, h, b, _ = curl(s, "/api/orders/42/details")
        doc = json.loads(b)
        assert st == 200 and list(doc) == ["order", "user", "shipment", "degraded"], (st, b[:300])
        assert h["x-gateway-upstream"] == "gateway", h
        us = s.mock("user-service")
        before = n_requests(us)
        st1, h1, b1, _ = curl(s, "/api/users/77", tls=False)
        st2, h2_, b2, _ = curl(s, "/api/users/77", tls=True)
        assert st1 == st2 == 200 and b1 == b2, (st1, st2)
        assert h1.get("x-cache") == "MISS" and h2_.get("x-cache") == "HIT", (h1, h2_)
        assert n_requests(us) == before + 1


def test_h2_h2load_many_streams():
    with h2_stack() as s:
        for url in ("https://127.0.0.1:%d/api/orders/1" % s.tls_port,
                    "http://127.0.0.1:%d/api/orders/1" % s.h2c_port):
            r = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "64", url],
                               capture_output=True, text=True, timeout=60)
            assert "2000 succeeded, 0 failed, 0 errored" in r.stdout and "2000 2xx" in r.stdout, \
                r.stdout[-1500:] + r.stderr[-500:]
        m = metrics(s)
        assert m["gateway_h2_streams_total"] >= 4000, m["gateway_h2_streams_total"]
        assert m["gateway_h2_connections_active"] == 0 or wait_until(
            lambda: metrics(s)["gateway_h2_connections_active"] == 0, 5, "h2 connections closed")


# ---- flow control, hardening, rapid reset, drain ---------------------------------------------

def test_h2_slow_reader_bounded_memory():
    """A reader that opens no window after the first 64 KiB: the gateway stops reading the
    upstream (its memory stays flat while a 64 MiB answer waits), then delivers it whole."""
    with h2_stack() as s:
        total = 64 << 20
        c = Raw(s.h2c_port)
        base = s.gw.rss_kib("VmRSS")
        c.request(1, "/bytes/%d" % total)
        got = 0
        while got < 65535:
            t, fl, sid, p = c.until(lambda f: f[0] == DATA and f[2] == 1)
            got += len(p)
        assert got == 65535, got  # exactly the default window, no more
        time.sleep(1.0)
        grown = s.gw.rss_kib("VmRSS") - base
        print("    slow reader: gateway RSS +%d KiB with a 64 MiB answer waiting" % grown)
        assert grown < 24 * 1024, grown
        # open both windows wide: the rest comes, byte for byte
        c.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", (1 << 31) - 1 - 65535)),
               frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", (1 << 31) - 1 - 65535)))
        buf = bytearray()
        while True:
            t, fl, sid, p = c.until(lambda f: f[2] == 1 and f[0] in (DATA, RST), timeout=30)
            assert t == DATA, (t, p)
            got += len(p)
            if len(buf) < 1 << 16:
                buf += p
            if fl & END_STREAM:
                break
        assert got == total, (got, total)
        c.close()


def test_h2_hardening_refused():
    with h2_stack() as s:
        legacy = s.mock("legacy")
        before = n_requests(legacy)
        c = Raw(s.h2c_port)
        bad = [
            [("connection", "keep-alive")],          # connection-specific (RFC 9113 §8.2.2)
            [("upgrade", "websocket")],               # no Upgrade in h2 (no RFC 8441 either)
            [("transfer-encoding", "chunked")],
            [("te", "gzip")],                         # only "trailers"
            [("X-Upper", "1")],                       # names are lowercase in h2
            [(":foo", "bar")],                        # unknown pseudo-header
        ]
        sid = 1
        for extra in bad:
            c.request(sid, "/echo/bad", extra=extra)
            how = c.stream_end(sid)
            assert how == ("rst", PROTOCOL_ERROR), (extra, how)
            sid += 2
        # a pseudo-header after a regular field, and a missing :path
        c.send(frame(HEADERS, END_HEADERS | END_STREAM, sid, hpack(
            [(":method", "GET"), (":scheme", "http"), ("x-a", "1"), (":authority", "h"), (":path", "/echo/x")])))
        assert c.stream_end(sid) == ("rst", PROTOCOL_ERROR)
        sid += 2
        c.send(frame(HEADERS, END_HEADERS | END_STREAM, sid, hpack(
            [(":method", "GET"), (":scheme", "http"), (":authority", "h")])))
        assert c.stream_end(sid) == ("rst", PROTOCOL_ERROR)
        sid += 2
        # Content-Length that DATA contradicts (more, then fewer bytes than announced)
        c.request(sid, "/echo/cl", method="POST", extra=[("content-length", "4")], end=False)
        c.send(frame(DATA, END_STREAM, sid, b"too long"))
        assert c.stream_end(sid) == ("rst", PROTOCOL_ERROR)
        sid += 2
        c.request(sid, "/echo/cl", method="POST", extra=[("content-length", "10")], end=False)
        c.send(frame(DATA, END_STREAM, sid, b"short"))
        assert c.stream_end(sid) == ("rst", PROTOCOL_ERROR)
        sid += 2
        # a byte HTTP/1.1 refuses in the target (raw UTF-8) is refused the same way (400)
        # (on no route: not 404, and no upstream of ours refusing it in its turn)
        c.request(sid, "/nowhere/caf\u00e9")
        how, n = c.stream_end(sid)
        assert how == "end" and json.loads(c.body)["status"] == 400, (how, c.body)
        sid += 2
        # the connection is fine after all that: a good request still works
        c.request(sid, "/echo/good")
        how, n = c.stream_end(sid)
        assert how == "end" and n > 0, (how, n)
        c.close()
        time.sleep(0.2)
        # only the good request (and perhaps the short-bodied POST, cut) reached the upstream
        assert n_requests(legacy) - before <= 2, legacy.stats()["by_path"]


def test_h2_rapid_reset_goaway():
    with h2_stack(http2={"reset_burst": 50, "reset_rate": 10, "max_concurrent_streams": 4}) as s:
        users = s.mock("user-service")
        # max_concurrent_streams: once the client acknowledged the limit, a fifth open stream
        # is a protocol error (nghttp2: GOAWAY PROTOCOL_ERROR) and the connection ends
        c = Raw(s.h2c_port)
        c.until(lambda f: f[0] == SETTINGS and not f[1] & ACK)
        time.sleep(0.1)  # (our ACK of the server's SETTINGS is in)
        for sid in range(1, 11, 2):
            c.request(sid, "/api/users/%d" % sid, extra=[("x-mock-latency-ms", "300")])
        f = c.until(lambda f: f[0] == GOAWAY)
        assert f and struct.unpack(">I", f[3][4:8])[0] == PROTOCOL_ERROR and b"concurrent" in f[3], f
        assert c.until(lambda f: False) is None
        c.close()
        before = n_requests(users)
        c = Raw(s.h2c_port)
        flood = []
        for i in range(400):
            sid = 1 + 2 * i
            flood.append(frame(HEADERS, END_HEADERS | END_STREAM, sid, hpack(
                req_fields("/api/users/%d" % i, extra=[("x-mock-latency-ms", "200")]))))
            flood.append(frame(RST, 0, sid, struct.pack(">I", CANCEL)))
        try:
            c.send(*flood)
        except (BrokenPipeError, ConnectionResetError):
            pass
        f = c.until(lambda f: f[0] == GOAWAY, timeout=10)
        assert f is not None, "no GOAWAY"
        code = struct.unpack(">I", f[3][4:8])[0]
        assert code in (INTERNAL_ERROR, ENHANCE_YOUR_CALM), code  # nghttp2 says INTERNAL_ERROR
        assert c.until(lambda f: False, timeout=5) is None  # and the connection closes
        c.close()
        m = metrics(s)
        assert m["gateway_h2_resets_rate_limited_total"] == 1, m
        assert m["gateway_h2_resets_received_total"] >= 50, m
        assert m["gateway_h2_goaways_sent_total"] >= 1, m
        time.sleep(0.3)
        reached = n_requests(users) - before
        print("    rapid reset: 400 streams opened and reset, %d reached the upstream" % reached)
        assert reached < 60, reached


def test_h2_goaway_on_drain_finishes_streams():
    with h2_stack() as s:
        c = Raw(s.h2c_port)
        for sid in (1, 3, 5):
            c.request(sid, "/api/orders/%d" % sid, extra=[("x-mock-latency-ms", "600")])
        wait_until(lambda: n_requests(s.mock("order-service")) >= 3, 5, "three requests upstream")
        # a connection whose preface is still coming when the drain begins
        late = socket.create_connection(("127.0.0.1", s.h2c_port), timeout=10)
        late.sendall(PREFACE[:10])
        time.sleep(0.2)
        os.kill(s.gw.pid, signal.SIGTERM)
        f = c.until(lambda f: f[0] == GOAWAY, timeout=5)
        assert f is not None and struct.unpack(">I", f[3][4:8])[0] == 0, f
        last = struct.unpack(">I", f[3][:4])[0] & 0x7FFFFFFF
        assert last == 5, last
        done = {}
        while len(done) < 3:
            fr = c.next_frame(10)
            assert fr is not None, ("closed before the streams ended", done)
            t, fl, sid, p = fr
            if t == RST:
                done[sid] = "rst"
            elif t in (DATA, HEADERS) and fl & END_STREAM:
                done[sid] = "end"
        assert done == {1: "end", 3: "end", 5: "end"}, done
        assert c.until(lambda f: False, timeout=10) is None  # then the gateway closes it
        c.close()
        # ... becomes HTTP/2 draining: GOAWAY (no stream taken) at once, then the close
        late.sendall(PREFACE[10:] + frame(SETTINGS, 0, 0) + frame(
            HEADERS, END_HEADERS | END_STREAM, 1, hpack(req_fields("/api/orders/9"))))
        d = Raw.__new__(Raw)
        d.sock, d.buf, d.closed = late, b"", False
        f = d.until(lambda f: f[0] == GOAWAY or f[2] == 1, timeout=5)
        assert f and f[0] == GOAWAY and struct.unpack(">I", f[3][:4])[0] == 0, f
        assert d.until(lambda f: False, timeout=10) is None
        late.close()
        assert s.gw.p.wait(15) == 0


def test_h2_stalled_heads_and_bodies_time_out():
    """An idle connection gets GOAWAY after idle_timeout_ms; a header block that never ends
    closes the connection after header_timeout_ms; a head
    that never says whether a body follows (no END_STREAM, no Content-Length, no DATA) is
    answered (408) after body_timeout_ms; neither reaches the upstream."""
    with h2_stack(limits={"header_timeout_ms": 600, "body_timeout_ms": 600,
                          "idle_timeout_ms": 600}) as s:
        legacy = s.mock("legacy")
        # an idle connection (its streams done) gets GOAWAY NO_ERROR, then the close
        c = Raw(s.h2c_port)
        c.request(1, "/api/users/1")
        assert c.stream_end(1)[0] == "end"
        t0 = time.time()
        f = c.until(lambda f: f[0] == GOAWAY, timeout=10)
        assert f and struct.unpack(">I", f[3][4:8])[0] == 0 and time.time() - t0 >= 0.4, f
        assert c.until(lambda f: False) is None
        c.close()
        before = n_requests(legacy)
        c = Raw(s.h2c_port)
        c.request(1, "/echo/held", method="POST", end=False)
        t0 = time.time()
        how, n = c.stream_end(1, timeout=10)
        assert how == "end" and n > 0 and time.time() - t0 >= 0.5, (how, n)  # the 408 JSON
        c.close()
        c = Raw(s.h2c_port)
        c.until(lambda f: f[0] == SETTINGS and not f[1] & ACK)  # (our ACK goes first)
        block = hpack(req_fields("/echo/never"))
        c.send(frame(HEADERS, 0, 1, block[:10]))  # no END_HEADERS, no CONTINUATION
        t0 = time.time()
        assert c.until(lambda f: False, timeout=10) is None
        assert time.time() - t0 >= 0.5
        c.close()
        assert n_requests(legacy) == before


def test_h2_per_stream_deadlines():
    """Deadlines are the stream's own: a response the client's window (SETTINGS_INITIAL_WINDOW_SIZE
    0) holds back is reset (CANCEL) after send_timeout_ms and its upstream let go; a stalled
    upload gets 408 after body_timeout_ms and a connection without streams GOAWAY after
    idle_timeout_ms, though the client PINGs all along (PINGs are no activity of a stream).
    A POST queued for its upstream's only slot is not timed while it waits (the handler does
    not pull its body yet)."""
    one_slot = {"upstreams": {"legacy": {"max_in_flight": 1, "queue": {"max": 8, "timeout_ms": 8000}}}}
    with h2_stack(limits={"send_timeout_ms": 800, "body_timeout_ms": 800,
                          "idle_timeout_ms": 800}, gw_conf=one_slot) as s:
        def pinging(c, pred, timeout=6.0):
            deadline = time.time() + timeout
            while time.time() < deadline:
                c.send(frame(PING, 0, 0, b"12345678"))
                try:
                    f = c.until(lambda f: f[0] != PING and f[0] != SETTINGS, timeout=0.2)
                except AssertionError:
                    continue
                if f is None or pred(f):
                    return f
            raise AssertionError("nothing in %.1fs" % timeout)
        c = Raw(s.h2c_port, window=0)
        t0 = time.time()
        c.request(1, "/bytes/%d" % (4 << 20))
        f = pinging(c, lambda f: f[2] == 1 and f[0] in (DATA, RST))
        assert f[0] == RST and struct.unpack(">I", f[3])[0] == CANCEL, f
        assert time.time() - t0 >= 0.7, time.time() - t0
        # the connection goes on: a stream with a window gets its answer
        c.send(frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 65535)))
        c.request(3, "/api/users/3")
        assert c.stream_end(3)[0] == "end"
        # legacy's one slot: the cut stream gave it back; a POST queued behind a 1.5 s request
        # waits past body_timeout_ms, its body sent after 1.1 s, and gets its answer
        c.request(7, "/echo/hold", extra=[("x-mock-latency-ms", "1500")])
        time.sleep(0.2)
        c.request(9, "/echo/queued", method="POST", extra=[("content-length", "4")], end=False)
        time.sleep(1.1)
        c.send(frame(DATA, END_STREAM, 9, b"abcd"))
        how, n = c.stream_end(9)
        assert how == "end" and json.loads(c.body).get("body_bytes") == 4, (how, c.body[:300])
        # a body that stops after 10 of 100 bytes: 408, PINGs notwithstanding
        c.request(11, "/echo/slow", method="POST", extra=[("content-length", "100")], end=False)
        c.send(frame(DATA, 0, 11, b"x" * 10))
        t0 = time.time()
        f = pinging(c, lambda f: f[2] == 11 and (f[0] == RST or f[1] & END_STREAM), timeout=8)
        assert f[0] in (DATA, HEADERS) and time.time() - t0 >= 0.7, f
        # no stream left: GOAWAY after idle_timeout_ms, PINGs notwithstanding
        t0 = time.time()
        f = pinging(c, lambda f: f[0] == GOAWAY)
        assert f and struct.unpack(">I", f[3][4:8])[0] == 0 and time.time() - t0 >= 0.7, f
        c.close()
        def logged():
            with open(s.access_log) as f:
                got = {l["path"]: l for l in map(json.loads, filter(str.strip, f))}
            return got if "/echo/slow" in got and "/bytes/%d" % (4 << 20) in got else None
        got = wait_until(logged, 5, "the access log written")
        assert got["/echo/slow"]["status"] == 408, got["/echo/slow"]
