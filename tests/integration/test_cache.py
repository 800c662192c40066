"""User cache (issue 4): GETs on a route with "cache": true and composition legs on such a
route go through cached, coalesced lookups. Key = the client-facing path; a 200 is kept
cache.ttl_ms, a 404 cache.negative_ttl_ms, each cache.stale_ms longer for stale-if-error;
Redis failing (down, killed, hung) is a miss, never an error; without "redis" an in-process
LRU per worker is used. Successful PUT/PATCH/DELETE through the gateway evict the path.
Answers pass through faithfully (issue 10 §5): kept upstream headers on MISS and HIT, 3xx /
204 / non-JSON 200 passed on uncached (X-Cache: BYPASS), no-store / private / Set-Cookie
never stored, max-age below the ttl caps it; upstream answers are scripted with mockd's
PUT /__script.

Every test that needs Redis starts a real redis-server (no persistence) on a free port in a
temp dir and stops exactly that pid. What reached user-service is proven by mockd's
/__stats; cache outcomes by X-Cache and gateway_cache_* in /metrics. Every wait is bounded;
timings are printed."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from harness import (BUILD, ROOT, SLACK_SCALE, Mockd, Proc, Stack, connect, free_port, metrics, read_response,
                     request, wait_port)

SHIPPED_COMPOSERS = os.path.join(ROOT, "conf", "composers.json")

USERS_ROUTE = {"id": "users", "path": "/api/users/**", "upstream": "user-service",
               "rewrites": {"user-service": {"strip_prefix": "/api"}}, "cache": True}
ROUTES = [
    {"id": "orders", "path": "/api/orders/{id}", "upstream": "order-service",
     "rewrites": {"order-service": {"template": "/orders/{id}"}}},
    {"id": "shipments", "path": "/api/orders/{id}/shipment", "upstream": "logistics-service",
     "rewrites": {"logistics-service": {"template": "/shipments?order_id={id}"}}},
    USERS_ROUTE,
    {"id": "legacy", "path": "/**", "upstream": "legacy"},
]
KEY = "gw:users:user-service:/api/users/"  # key of a user: route, upstream, path
SETTLE = 0.05  # sets/dels are fire-and-forget: let one reach Redis before another worker reads


# ---- a real redis-server ------------------------------------------------------------------

def redis_bin():
    p = shutil.which("redis-server")
    assert p, ("redis-server not found in PATH: the user-cache integration tests need a real "
               "Redis (apt-get install redis-server)")
    return p


def resp(port, *args, timeout=2.0):
    """One Redis command over RESP; returns the decoded reply (str/int/None), raises on -ERR."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a.encode() if isinstance(a, str) else a
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        s.sendall(out)
        buf = b""
        while b"\r\n" not in buf:
            d = s.recv(65536)
            if not d:
                raise EOFError("redis closed")
            buf += d
        line, _, rest = buf.partition(b"\r\n")
        kind, val = line[:1], line[1:].decode()
        if kind == b"-":
            raise RuntimeError("redis: " + val)
        if kind == b"+":
            return val
        if kind == b":":
            return int(val)
        if kind == b"$":
            n = int(val)
            if n < 0:
                return None
            while len(rest) < n + 2:
                d = s.recv(65536)
                if not d:
                    raise EOFError("redis closed in bulk")
                rest += d
            return rest[:n]
        raise RuntimeError("unexpected redis reply %r" % line)


class RedisServer:
    """redis-server as our child on a fixed free port, in its own temp dir. stop()/kill()
    signal exactly this pid; restart() starts a fresh (empty) server on the same port."""

    def __init__(self):
        self.bin = redis_bin()
        self.tmp = tempfile.mkdtemp(prefix="gwtest-redis-")
        self.port = free_port()
        self.p = None
        self.runs = 0
        self.start()

    def start(self, timeout=10.0):
        assert self.p is None or self.p.poll() is not None, "already running"
        self.runs += 1
        self.log = open(os.path.join(self.tmp, "redis-%d.log" % self.runs), "wb")
        self.p = subprocess.Popen([self.bin, "--port", str(self.port), "--bind", "127.0.0.1",
                                   "--save", "", "--appendonly", "no", "--dir", self.tmp],
                                  stdout=self.log, stderr=subprocess.STDOUT, cwd=self.tmp)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                break
            try:
                if resp(self.port, "PING", timeout=0.5) == "PONG":
                    return
            except (OSError, EOFError, RuntimeError):
                time.sleep(0.02)
        self.stop()
        with open(self.log.name, "rb") as f:
            raise RuntimeError("redis-server on port %d did not come up: %s"
                               % (self.port, f.read().decode("utf-8", "replace")[-1000:]))

    def stop(self, sig=signal.SIGTERM):
        if self.p is not None and self.p.poll() is None:
            os.kill(self.p.pid, sig)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.p.pid, signal.SIGKILL)
                self.p.wait()
        if self.p is not None:
            self.log.close()

    def kill(self):
        self.stop(signal.SIGKILL)

    def restart(self):
        self.stop()
        self.start()

    def close(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# ---- stack and helpers ----------------------------------------------------------------------

def cache_stack(redis=None, cache=None, workers=1, user_args=(), composers=False):
    """A started Stack: legacy, order-service, user-service (mockd with USER_ARGS),
    logistics-service; ROUTES (users cached); REDIS: a port, or None for the LRU."""
    ups = {"legacy": 1, "order-service": 1, "user-service": list(user_args) or 1,
           "logistics-service": 1}
    s = Stack(upstreams=ups, routes=ROUTES, workers=workers, start=False)
    try:
        if redis is not None:
            s.conf["redis"] = "127.0.0.1:%d" % redis
        if cache:
            s.conf["cache"] = cache
        if composers:
            shutil.copy(SHIPPED_COMPOSERS, os.path.join(s.tmp, "composers.json"))
            s.conf["composers"] = "composers.json"
        s.write()
        s.start()
    except Exception:
        s.stop()
        raise
    return s


def user_calls(s, uid=None):
    """Requests user-service served (for /users/UID, or all but /__stats)."""
    by = s.mock("user-service").stats()["by_path"]
    if uid is not None:
        return by.get("/users/%s" % uid, 0)
    return sum(v for k, v in by.items() if not k.startswith("/__stats"))


def get(s, path, headers=None, method="GET", body=b"", timeout=10.0):
    st, h, b = request(s.port, method, path, headers, body, timeout=timeout)
    return st, h, b


def get_user(s, uid):
    return get(s, "/api/users/%s" % uid)


def direct_user(s, uid):
    """What user-service answers for /users/UID: mockd's documents are the same on every
    instance, so ask the legacy mockd (user-service's counts stay untouched)."""
    st, _, b = request(s.mock("legacy").port, "GET", "/users/%s" % uid)
    return st, b


def m_cache(m, result):
    return m.get('gateway_cache_requests_total{result="%s"}' % result, 0)


def expect(st, h, b, status, xcache, what=""):
    assert st == status and h.get("x-cache") == xcache, (what, st, h, b[:200])


def compose(s, oid):
    st, h, b = get(s, "/api/orders/%s/details" % oid)
    assert st == 200, (st, h, b[:300])
    return h, json.loads(b)


# ---- 1. Redis shared by the workers; the composition's user leg ---------------------------

def test_cache_redis_hit_shared_by_workers_and_composition():
    with RedisServer() as rs:
        with cache_stack(rs.port, workers=2, composers=True) as s:
            st, h, b = get_user(s, 7)
            expect(st, h, b, 200, "MISS", "first GET")
            assert h.get("x-gateway-upstream") == "user-service", h
            assert b == direct_user(s, 7)[1], b
            assert user_calls(s, 7) == 1
            time.sleep(SETTLE)
            # the value is in Redis under the gateway's prefix, with ttl + stale as expiry
            assert resp(rs.port, "EXISTS", KEY + "7") == 1
            pttl = resp(rs.port, "PTTL", KEY + "7")
            assert 60000 < pttl <= 60000 + 300000, pttl
            for i in range(10):  # new connections: SO_REUSEPORT spreads them over both workers
                st, h, b2 = get_user(s, 7)
                expect(st, h, b2, 200, "HIT", "GET %d" % i)
                assert h.get("x-gateway-upstream") == "user-service", h
                assert h.get("x-request-id") and h.get("content-type") == "application/json", h
                assert b2 == b
            assert user_calls(s, 7) == 1, "a hit reached user-service"
            m = metrics(s)
            assert m_cache(m, "hit") >= 10 and m_cache(m, "miss") >= 1, m

            # the composition's user leg: one warm-up, then no user-service call
            _, doc = compose(s, 42)
            assert doc["user"] is not None and doc["degraded"] == [], doc
            time.sleep(SETTLE)
            s.mock("user-service").reset()
            for i in range(10):
                h, d = compose(s, 42)
                assert d["user"] == doc["user"], d
                assert d["degraded"] == [] and "stale" not in d, d
                assert "x-composition-degraded" not in h, h
            assert user_calls(s) == 0, s.mock("user-service").stats()
            # the leg and a direct GET of the same path share the entry
            st, h, b = get_user(s, doc["user"]["id"])
            expect(st, h, b, 200, "HIT", "direct GET of the composed user")
            assert json.loads(b) == doc["user"]


# ---- 2. 404 kept for the negative ttl ------------------------------------------------------

def test_cache_negative_ttl():
    with RedisServer() as rs:
        with cache_stack(rs.port, cache={"negative_ttl_ms": 300}) as s:
            t0 = time.monotonic()
            st, h, b = get_user(s, "missing-1")
            expect(st, h, b, 404, "MISS")
            time.sleep(SETTLE)
            st, h, b = get_user(s, "missing-1")
            expect(st, h, b, 404, "HIT")
            assert h.get("x-gateway-upstream") == "user-service", h
            assert json.loads(b)["error"] == "not found", b
            assert user_calls(s, "missing-1") == 1
            pttl = resp(rs.port, "PTTL", KEY + "missing-1")
            assert 0 < pttl <= 300, ("a 404 is kept negative_ttl_ms, no stale time", pttl)
            time.sleep(max(0, t0 + 0.45 - time.monotonic()))
            st, h, b = get_user(s, "missing-1")
            expect(st, h, b, 404, "MISS", "after negative_ttl_ms")
            assert user_calls(s, "missing-1") == 2


# ---- 3. 200 kept for the ttl --------------------------------------------------------------

def test_cache_ttl_expiry():
    with RedisServer() as rs:
        with cache_stack(rs.port, cache={"ttl_ms": 500}) as s:
            t0 = time.monotonic()
            expect(*get_user(s, 7), 200, "MISS")
            time.sleep(SETTLE)
            expect(*get_user(s, 7), 200, "HIT")
            assert user_calls(s, 7) == 1
            time.sleep(max(0, t0 + 0.65 - time.monotonic()))
            expect(*get_user(s, 7), 200, "MISS", "after ttl_ms")
            assert user_calls(s, 7) == 2
            time.sleep(SETTLE)
            expect(*get_user(s, 7), 200, "HIT", "stored again")
            assert user_calls(s, 7) == 2


# ---- 4. coalescing -------------------------------------------------------------------------

def test_cache_coalescing_100_concurrent():
    workers, n = 2, 100
    with RedisServer() as rs:
        with cache_stack(rs.port, workers=workers, user_args=["--latency-ms", "200"]) as s:
            socks = [connect(s.port, timeout=10) for _ in range(n)]
            barrier = threading.Barrier(n)
            results = [None] * n
            req = ("GET /api/users/4242 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").encode()

            def one(i):
                from harness import read_response
                try:
                    barrier.wait(10)
                    socks[i].sendall(req)
                    r, _ = read_response(socks[i])
                    results[i] = (r.status, r.header("X-Cache"), r.body)
                except Exception as e:  # recorded, asserted below
                    results[i] = ("error", repr(e), b"")
                finally:
                    socks[i].close()

            t0 = time.monotonic()
            ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(15)
            took = time.monotonic() - t0
            calls = user_calls(s, 4242)
            m = metrics(s)
            srcs = {}
            for r in results:
                if r:
                    srcs[r[1]] = srcs.get(r[1], 0) + 1
            print("    100 concurrent GETs: %.0f ms, user-service calls %d, X-Cache %s, coalesced %d"
                  % (took * 1e3, calls, srcs, m.get("gateway_cache_coalesced_total", 0)))
            bad = [r for r in results if not r or r[0] != 200]
            assert not bad, bad[:3]
            assert len({r[2] for r in results}) == 1, "bodies differ"
            assert results[0][2] == direct_user(s, 4242)[1]
            assert 1 <= calls <= workers, calls
            assert m.get("gateway_cache_coalesced_total", 0) > 0, m


# ---- 5. invalidation (Redis) -----------------------------------------------------------------

def test_cache_invalidation_redis():
    with RedisServer() as rs:
        with cache_stack(rs.port, workers=2) as s:
            check_invalidation(s, redis_port=rs.port)


def redis_dels_during(port, action, settle=0.3):
    """The keys of every DEL Redis ran while ACTION ran (through MONITOR)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as m:
        m.sendall(b"*1\r\n$7\r\nMONITOR\r\n")
        buf = b""
        while b"+OK\r\n" not in buf:
            buf += m.recv(65536)
        action()
        time.sleep(settle)
        m.settimeout(0.2)
        buf = b""
        try:
            while True:
                d = m.recv(65536)
                if not d:
                    break
                buf += d
        except socket.timeout:
            pass
    dels = []
    for line in buf.decode("utf-8", "replace").splitlines():
        words = re.findall(r'"((?:[^"\\]|\\.)*)"', line)
        if words and words[0].upper() == "DEL":
            dels.append(words[1:])
    return dels


def test_cache_eviction_names_each_upstream_once():
    """A successful change evicts the path under every upstream defined (a copy from before
    a flip must not come back), each key once: not a key per unused upstream slot."""
    with RedisServer() as rs:
        with cache_stack(rs.port, workers=1) as s:
            expect(*get_user(s, 9), 200, "MISS")
            body = b'{"name": "Ada"}'
            dels = redis_dels_during(rs.port, lambda: get(
                s, "/api/users/9", {"Content-Type": "application/json"}, "PUT", body))
            assert len(dels) == 1, dels
            keys = dels[0]
            assert KEY + "9" in keys, keys
            assert len(keys) == len(set(keys)), "a key evicted twice: %r" % keys
            assert not any("::" in k for k in keys), "a key of an unused slot: %r" % keys
            assert 1 < len(keys) <= 16, keys


def check_invalidation(s, redis_port=None):
    body = b'{"name": "Ada"}'
    ct = {"Content-Type": "application/json"}
    expect(*get_user(s, 7), 200, "MISS")
    time.sleep(SETTLE)
    expect(*get_user(s, 7), 200, "HIT")
    assert user_calls(s, 7) == 1
    st, h, b = get(s, "/api/users/7", ct, "PUT", body)
    assert st == 200, (st, h, b[:200])
    assert h.get("x-gateway-upstream") == "user-service", h
    assert user_calls(s, 7) == 2  # the PUT
    if redis_port is not None:
        time.sleep(SETTLE)
        assert resp(redis_port, "EXISTS", KEY + "7") == 0, "PUT did not evict"
    expect(*get_user(s, 7), 200, "MISS", "GET after a successful PUT")
    assert user_calls(s, 7) == 3
    time.sleep(SETTLE)
    expect(*get_user(s, 7), 200, "HIT")

    # a failed change does not evict
    st, h, b = get(s, "/api/users/7", dict(ct, **{"X-Mock-Status": "500"}), "PUT", body)
    assert st == 500, (st, h, b[:200])
    assert user_calls(s, 7) == 4
    time.sleep(SETTLE)
    expect(*get_user(s, 7), 200, "HIT", "GET after a failed PUT")
    assert user_calls(s, 7) == 4

    # DELETE (204) and PATCH evict too
    st, h, b = get(s, "/api/users/7", method="DELETE")
    assert st == 204, (st, h, b[:200])
    time.sleep(SETTLE)
    expect(*get_user(s, 7), 200, "MISS", "GET after DELETE")
    time.sleep(SETTLE)
    expect(*get_user(s, 7), 200, "HIT")
    st, h, b = get(s, "/api/users/7", ct, "PATCH", body)
    assert st == 200, (st, h, b[:200])
    time.sleep(SETTLE)
    expect(*get_user(s, 7), 200, "MISS", "GET after PATCH")
    assert user_calls(s, 7) == 8


def test_cache_invalidation_during_inflight_fetch():
    """A change that succeeds while a lookup of its path is fetching: what that fetch read
    predates the change, so it must neither serve lookups that start after the change nor
    be stored (else the PUT's eviction is undone for ttl_ms). Deterministic on one worker:
    user-service answers GETs after 300 ms, the PUT (X-Mock-Latency-Ms: 0) at once."""
    with cache_stack(None, workers=1, user_args=["--latency-ms", "300"]) as s:
        res = {}

        def bg(name):
            res[name] = get_user(s, 9)

        ta = threading.Thread(target=bg, args=("A",))
        ta.start()  # A: MISS, its fetch reads user 9 at once, answers at ~300 ms
        time.sleep(0.05)
        st, h, b = get(s, "/api/users/9", {"Content-Type": "application/json",
                                           "X-Mock-Latency-Ms": "0"}, "PUT", b'{"name": "Ada"}')
        assert st == 200, (st, h, b[:200])
        calls = user_calls(s, 9)  # A's GET + the PUT
        tb = threading.Thread(target=bg, args=("B",))
        tb.start()  # B: starts after the PUT succeeded
        time.sleep(0.05)
        calls_b = user_calls(s, 9)
        ta.join(5)
        st, h, b = get_user(s, 9)  # C: A is done, B still fetching
        tb.join(5)
        print("    A %s, B %s (user-service calls for B: %d), C after A: %s"
              % (res["A"][1].get("x-cache"), res["B"][1].get("x-cache"), calls_b - calls,
                 h.get("x-cache")))
        assert res["A"][0] == 200 and res["B"][0] == 200 and st == 200
        assert calls_b == calls + 1, ("a GET begun after the successful PUT was coalesced "
                                      "into a fetch begun before it", calls, calls_b)
        assert h.get("x-cache") != "HIT", ("the value fetched before the PUT was stored after "
                                           "the PUT evicted the path", h)


# ---- 6. Redis killed mid-run; Redis never up --------------------------------------------------

def test_cache_redis_killed_and_restarted():
    with RedisServer() as rs:
        with cache_stack(rs.port, workers=2) as s:
            users = [101, 102, 103, 104, 105]
            for u in users:
                get_user(s, u)
            log = []  # (t_sent, status or error, x-cache)
            stop = threading.Event()

            def client():
                i = 0
                while not stop.is_set():
                    u = users[i % len(users)]
                    i += 1
                    t = time.monotonic()
                    try:
                        st, h, b = get_user(s, u)
                        ok = st == 200 and json.loads(b)["id"] == str(u)
                        log.append((t, st if ok else ("bad body", st, b[:100]), h.get("x-cache")))
                    except Exception as e:
                        log.append((t, repr(e), None))

            th = threading.Thread(target=client)
            th.start()
            try:
                time.sleep(0.3)
                m0 = metrics(s)
                calls0 = user_calls(s)
                t_kill = time.monotonic()
                rs.kill()
                time.sleep(1.0)
                calls_outage = user_calls(s) - calls0
                t_restart = time.monotonic()
                rs.start()
                time.sleep(1.0)
            finally:
                stop.set()
                th.join(10)
            m1 = metrics(s)
            failed = [x for x in log if x[1] != 200]
            outage = [x for x in log if t_kill + 0.05 < x[0] < t_restart]
            xc = {}
            for x in outage:
                xc[x[2]] = xc.get(x[2], 0) + 1
            print("    redis killed: %d requests, %d failed; outage %d requests %s; user-service "
                  "served %d during the outage; cache errors +%d"
                  % (len(log), len(failed), len(outage), xc, calls_outage,
                     m_cache(m1, "error") - m_cache(m0, "error")))
            assert not failed, failed[:5]
            assert len(outage) >= 10, len(outage)
            assert set(xc) == {"MISS"}, xc
            assert calls_outage >= len(outage) - 2, (calls_outage, len(outage))
            assert m_cache(m1, "error") > m_cache(m0, "error"), (m0, m1)

            # hits come back: both workers reconnected (backoff <= 5 s)
            t0 = time.monotonic()
            streak = 0
            while streak < 10:
                assert time.monotonic() - t0 < 8, "no hits within 8 s of the restart"
                st, h, b = get_user(s, 999)
                assert st == 200, (st, h, b)
                streak = streak + 1 if h.get("x-cache") == "HIT" else 0
                if streak == 0:
                    time.sleep(0.05)
            print("    hits back %.0f ms after the checks began (%.1f s after the restart)"
                  % ((time.monotonic() - t0) * 1e3, time.monotonic() - t_restart))


def test_cache_redis_never_up():
    port = free_port()  # nothing listens there
    with cache_stack(port, workers=2, composers=True) as s:
        for i in range(10):
            st, h, b = get_user(s, 7)
            expect(st, h, b, 200, "MISS", "GET %d" % i)
        assert user_calls(s, 7) == 10
        for i in range(3):
            h, d = compose(s, 42)
            assert d["user"] is not None and d["degraded"] == [] and "stale" not in d, d
        assert user_calls(s) == 13
        assert m_cache(metrics(s), "error") >= 13


# ---- 7. a Redis that never answers --------------------------------------------------------

class SilentRedis:
    """Accepts connections. pong=False: never reads. pong=True: answers the first PING
    (so the gateway sees a working server), then reads everything and answers nothing.
    ping_reply: what the first PING gets (an unsolicited second reply, to test that)."""

    def __init__(self, pong, ping_reply=b"+PONG\r\n"):
        self.pong = pong
        self.ping_reply = ping_reply
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stopping = False
        self.th = threading.Thread(target=self._run, daemon=True)
        self.th.start()

    def _run(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.conns.append(c)
            if self.pong:
                threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        c.settimeout(0.2)
        buf, ponged = b"", False
        while not self.stopping:
            try:
                d = c.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not d:
                return
            buf += d
            if not ponged and b"PING" in buf.upper():
                ponged = True
                try:
                    c.sendall(self.ping_reply)
                except OSError:
                    return

    def close(self):
        self.stopping = True
        self.sock.close()
        for c in self.conns:
            c.close()
        self.th.join(2)


def test_cache_redis_hung_bounded_latency():
    timeout_ms = 50
    for pong in (False, True):
        sr = SilentRedis(pong)
        try:
            with cache_stack(sr.port, cache={"timeout_ms": timeout_ms}) as s:
                # upstream time, measured directly
                up = []
                for i in range(5):
                    t = time.monotonic()
                    request(s.mock("user-service").port, "GET", "/users/7")
                    up.append(time.monotonic() - t)
                time.sleep(0.3)  # connected (pong) or stuck connecting (no pong)
                lat = []
                for i in range(20):
                    t = time.monotonic()
                    st, h, b = get_user(s, 200 + i % 3)
                    lat.append(time.monotonic() - t)
                    expect(st, h, b, 200, "MISS", "GET %d" % i)
                    time.sleep(0.05)
                # a change's answer waits for its DEL at most timeout_ms, then goes out anyway
                wlat = []
                for i in range(5):
                    t = time.monotonic()
                    st, h, b = get(s, "/api/users/%d" % (200 + i % 3),
                                   {"Content-Type": "application/json"}, "PUT", b'{"n": 1}')
                    wlat.append(time.monotonic() - t)
                    assert st == 200, (st, h, b[:200])
                m = metrics(s)
                bound = timeout_ms / 1e3 + max(up) + 0.15 * SLACK_SCALE
                print("    PUT max %.1f ms" % (max(wlat) * 1e3))
                assert max(wlat) < bound, (wlat, bound)
                lat.sort()
                print("    redis %s: upstream max %.1f ms; GET p50 %.1f ms max %.1f ms (bound %.0f ms);"
                      " cache errors %d, connections accepted %d"
                      % ("answers PING then nothing" if pong else "never reads", max(up) * 1e3,
                         lat[len(lat) // 2] * 1e3, lat[-1] * 1e3, bound * 1e3,
                         m_cache(m, "error"), len(sr.conns)))
                assert lat[-1] < bound, (lat[-1], bound)
                assert m_cache(m, "error") >= 20, m
                assert len(sr.conns) >= 1
        finally:
            sr.close()


def test_cache_redis_unsolicited_reply_fails_open():
    """A Redis that sends a reply nobody asked for (here a second PONG) made hiredis 0.14
    abort the gateway (assert in redisProcessCallbacks; found by tests/fuzz/fuzz_redis_reply).
    Now the connection is dropped as after any protocol error: every GET is answered by
    user-service (MISS), errors are counted, the cache reconnects, the process lives on."""
    sr = SilentRedis(True, ping_reply=b"+PONG\r\n+PONG\r\n")
    try:
        with cache_stack(sr.port, cache={"timeout_ms": 50}) as s:
            deadline = time.monotonic() + 5
            while len(sr.conns) < 2:  # dropped after the bad reply, then a reconnect
                assert time.monotonic() < deadline, ("no reconnect", len(sr.conns))
                assert s.gw.p.poll() is None, "the gateway died"
                time.sleep(0.05)
            for i in range(20):
                st, h, b = get_user(s, 300 + i % 3)
                expect(st, h, b, 200, "MISS", "GET %d" % i)
            assert s.gw.p.poll() is None, "the gateway died"
            print("    unsolicited PONG: %d connections, 20 GETs answered MISS" % len(sr.conns))
    finally:
        sr.close()


# ---- 8. stale-if-error ---------------------------------------------------------------------

def test_cache_stale_if_error():
    with RedisServer() as rs:
        with cache_stack(rs.port, cache={"ttl_ms": 300, "stale_ms": 60000}, composers=True) as s:
            t0 = time.monotonic()
            st, h, old = get_user(s, 7)
            expect(st, h, old, 200, "MISS")
            _, doc = compose(s, 42)
            assert doc["user"] is not None and doc["degraded"] == [], doc
            time.sleep(max(0, t0 + 0.45 - time.monotonic()))

            um = s.mock("user-service")
            port = um.port
            um.proc.stop()

            def check(why):
                st, h, b = get_user(s, 7)
                expect(st, h, b, 200, "STALE", why)
                assert h.get("x-gateway-upstream") == "user-service", h
                assert b == old, b
                h, d = compose(s, 42)
                assert d["user"] == doc["user"], (why, d)
                assert d.get("stale") == ["user"], (why, d)
                assert d["degraded"] == [] and "x-composition-degraded" not in h, (why, d, h)

            check("user-service down")
            # user-service back, but failing every request
            nm = Mockd.__new__(Mockd)
            nm.port, nm.name = port, "user-service-0"
            nm.proc = Proc([os.path.join(ROOT, BUILD, "mockd"), "--listen", "127.0.0.1:%d" % port,
                            "--name", nm.name, "--error-rate", "1"],
                           os.path.join(s.tmp, "mockd-user-service-err.log"))
            s.mocks["user-service"][0] = nm
            wait_port(port)
            check("user-service answers 500")
            assert m_cache(metrics(s), "stale") >= 4
            # a never-stored key has nothing stale to fall back on: the upstream error shows
            st, h, b = get_user(s, 8)
            assert st >= 500 and h.get("x-cache") != "HIT", (st, h, b[:200])


# ---- 9. no Redis: the in-process LRU ------------------------------------------------------------

def test_cache_lru_without_redis():
    with cache_stack(None, workers=1) as s:
        assert "redis" not in s.conf
        check_invalidation(s)
        # a HEAD miss fills the cache too
        st, h, b = get(s, "/api/users/70", method="HEAD")
        assert st == 200 and h.get("x-cache") == "MISS" and b == b"", (st, h, b)
        st, h, b = get_user(s, 70)
        expect(st, h, b, 200, "HIT", "GET after HEAD")
        assert int(h["content-length"]) == len(b) and b == direct_user(s, 70)[1]
        assert user_calls(s, 70) == 1
        st, h, b = get(s, "/api/users/7", method="HEAD")
        assert st == 200 and h.get("x-cache") == "HIT" and b == b"", (st, h, b)
        m = metrics(s)
        assert m_cache(m, "error") == 0, m
        assert m_cache(m, "hit") >= 3, m


# ---- 10. issue 10 §5: the cache keeps the contract --------------------------------------------

TOKEN = "test-token"  # the harness's admin token


def flip_users(s, upstream):
    data = json.dumps({"upstream": upstream}).encode()
    st, _, b = request(s.admin_port, "PATCH", "/admin/routes/users",
                       {"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"},
                       data)
    assert st == 200, (upstream, st, b[:300])


def calls(s, name, path):
    return s.mock(name).stats()["by_path"].get(path, 0)


def test_cache_flip_in_force_for_cached_route():
    """A flip (and its rollback) switches the cached route's key space at once: after
    `routes flip users legacy` the next GET is legacy's answer (a miss, then cached under
    legacy's key), never user-service's copy. Old gateway: key = path, so the GET after the
    flip was a HIT from user-service's copy (X-Gateway-Upstream: cache)."""
    with RedisServer() as rs:
        with cache_stack(rs.port, workers=2) as s:
            st, h, b = get_user(s, 7)
            expect(st, h, b, 200, "MISS", "first GET")
            time.sleep(SETTLE)
            expect(*get_user(s, 7), 200, "HIT", "second GET")
            assert calls(s, "legacy", "/api/users/7") == 0

            flip_users(s, "legacy")
            st, h, b = get_user(s, 7)
            print("    after the flip: %s from %s" % (h.get("x-cache"), h.get("x-gateway-upstream")))
            assert h.get("x-gateway-upstream") == "legacy", ("served by user-service's copy", h)
            assert h.get("x-cache") == "MISS", h
            assert calls(s, "legacy", "/api/users/7") == 1, "legacy did not answer"
            time.sleep(SETTLE)
            assert resp(rs.port, "EXISTS", "gw:users:legacy:/api/users/7") == 1
            for i in range(6):  # both workers: legacy's copy, never user-service's
                st, h, b2 = get_user(s, 7)
                expect(st, h, b2, 200, "HIT", "GET %d after the flip" % i)
                assert h.get("x-gateway-upstream") == "legacy", h
                assert b2 == b
            assert calls(s, "legacy", "/api/users/7") == 1

            flip_users(s, "user-service")  # the rollback: user-service's key space again
            st, h, b = get_user(s, 7)
            assert h.get("x-gateway-upstream") == "user-service", ("after the rollback", h)
            assert b == direct_user(s, 7)[1], b


def test_cache_write_answer_after_eviction():
    """A PATCH's answer leaves only once its DEL reached Redis: a GET sent right after it,
    on a new connection (2 workers: often the other one), never gets the old copy. On the
    old gateway the DEL left on a later loop turn than the answer: HIT in 3 to 7
    of 100 bursts; 200 make a pass there unlikely (~1e-5), while here every burst is
    ordered by construction (the DEL is confirmed before the 200 is written)."""
    ct = {"Content-Type": "application/json"}
    with RedisServer() as rs:
        with cache_stack(rs.port, workers=2) as s:
            hits, bursts = [], 200
            for i in range(bursts):
                uid = 100 + i
                expect(*get_user(s, uid), 200, "MISS", "warm-up %d" % i)
                deadline = time.monotonic() + 2.0  # the SET is fire-and-forget: until a HIT
                while get_user(s, uid)[1].get("x-cache") != "HIT":
                    assert time.monotonic() < deadline, "the copy never reached Redis"
                    time.sleep(0.002)
                # the GET's connection is open (accepted by some worker) before the PATCH, and
                # its request leaves the moment the PATCH's answer is read
                c1, c2 = connect(s.port, timeout=10), connect(s.port, timeout=10)
                try:
                    body = b'{"name": "Ada"}'
                    c1.sendall(b"PATCH /api/users/%d HTTP/1.1\r\nHost: x\r\nContent-Type: "
                               b"application/json\r\nContent-Length: %d\r\n\r\n%s"
                               % (uid, len(body), body))
                    r, _ = read_response(c1)
                    c2.sendall(b"GET /api/users/%d HTTP/1.1\r\nHost: x\r\n\r\n" % uid)
                    g, _ = read_response(c2)
                finally:
                    c1.close()
                    c2.close()
                assert r.status == 200, (r.status, r.body[:200])
                assert g.status == 200, (g.status, g.body[:200])
                if g.header("X-Cache") == "HIT":
                    hits.append(uid)
            print("    %d PATCH-then-GET bursts, %d served the old copy" % (bursts, len(hits)))
            assert not hits, ("GET right after a successful PATCH got X-Cache: HIT", hits)


def test_cache_write_marks_every_worker_lru():
    """Without Redis each worker has its own LRU: a change through one worker must not leave
    the other serving its old copy. Both workers hold user 7 (user-service fetched it twice),
    then a PUT; from then on each worker fetches once more before it serves a HIT. The old
    gateway evicted only the LRU of the worker that took the PUT: the other kept serving its
    copy, so user-service saw one fetch after the PUT, not two. Connections are spread over
    the workers by SO_REUSEPORT: 60 new ones reach both (asserted before the PUT)."""
    with cache_stack(None, workers=2) as s:
        for i in range(60):
            st, h, b = get_user(s, 7)
            assert st == 200 and h.get("x-cache") in ("MISS", "HIT"), (st, h, b[:200])
            if user_calls(s, 7) == 2:
                break
        assert user_calls(s, 7) == 2, ("both workers should hold a copy", user_calls(s, 7))
        st, h, b = get(s, "/api/users/7", {"Content-Type": "application/json"}, "PUT",
                       b'{"name": "Ada"}')
        assert st == 200, (st, h, b[:200])
        after_put = user_calls(s, 7)  # the PUT itself
        seen = {}
        for i in range(60):
            st, h, b = get_user(s, 7)
            assert st == 200, (st, h, b[:200])
            seen[h.get("x-cache")] = seen.get(h.get("x-cache"), 0) + 1
        fetched = user_calls(s, 7) - after_put
        print("    after the PUT: %s, user-service fetches %d" % (seen, fetched))
        assert fetched == 2, ("every worker must drop its copy: fetches after the PUT", fetched)


def test_cache_upstream_named_on_hit_and_stale():
    """X-Gateway-Upstream names the upstream whose answer is served, on MISS, HIT and STALE
    (the old gateway said "cache" on HIT and STALE)."""
    with RedisServer() as rs:
        with cache_stack(rs.port, cache={"ttl_ms": 200, "stale_ms": 60000}) as s:
            t0 = time.monotonic()
            for want in ("MISS", "HIT"):
                st, h, b = get_user(s, 5)
                expect(st, h, b, 200, want)
                assert h.get("x-gateway-upstream") == "user-service", (want, h)
            time.sleep(max(0, t0 + 0.3 - time.monotonic()))
            s.mock("user-service").proc.stop()
            st, h, b = get_user(s, 5)
            expect(st, h, b, 200, "STALE")
            assert h.get("x-gateway-upstream") == "user-service", ("STALE", h)


def test_cache_client_leaves_while_answer_held():
    """The client of a PUT leaves while its answer waits for the DEL (Redis stopped: the DEL
    waits out cache.timeout_ms): the held answer is dropped, the late eviction callback finds
    nobody (the ASan build catches a use after free), and the gateway serves on."""
    with RedisServer() as rs:
        with cache_stack(rs.port, cache={"timeout_ms": 400}) as s:
            expect(*get_user(s, 7), 200, "MISS")
            os.kill(rs.p.pid, signal.SIGSTOP)
            try:
                c = connect(s.port, timeout=5)
                body = b'{"name": "Ada"}'
                c.sendall(b"PUT /api/users/7 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                          b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                deadline = time.monotonic() + 5
                while user_calls(s, 7) < 2:  # the PUT reached user-service: answer held
                    assert time.monotonic() < deadline, "the PUT never reached user-service"
                    time.sleep(0.01)
                c.settimeout(0.1)
                try:
                    assert c.recv(1) == b"", "the answer left before the DEL was confirmed"
                except socket.timeout:
                    pass  # held, as it should be
                c.close()
                time.sleep(0.6)  # the DEL's deadline passes with nobody waiting
            finally:
                os.kill(rs.p.pid, signal.SIGCONT)
            st, h, b = get_user(s, 7)
            assert st == 200 and h.get("x-cache") == "MISS", (st, h, b[:200])
            st, h, b = get(s, "/api/users/7", {"Content-Type": "application/json"}, "PUT",
                           b'{"name": "Ada"}')
            assert st == 200, (st, h, b[:200])


# ---- answers passed through faithfully (issue 10 §5) ---------------------------------------
# user-service is told what to answer for a path by mockd's PUT /__script (a cached GET
# carries no client header, so X-Mock-* cannot reach it).

def script_user(s, uid, status=200, headers=(), body=""):
    s.mock("user-service").script("/users/%s" % uid, status, headers, body)


def get_all(s, path, method="GET"):
    """GET on a new connection; (status, [(name, value)] as sent, body): repeats kept."""
    c = connect(s.port, timeout=10)
    try:
        c.sendall(("%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                   % (method, path)).encode())
        r, _ = read_response(c, head_request=(method == "HEAD"))
        return r.status, r.headers, r.body
    finally:
        c.close()


def all_named(headers, name):
    return [v for k, v in headers if k.lower() == name.lower()]


DOC = '{"id":"h1","name":"Ada"}'


def test_cache_upstream_headers_kept_on_miss_and_hit():
    """ETag, Cache-Control, Content-Type, Location, Vary, Last-Modified, Expires come from
    the upstream on the MISS and, stored with the copy, on every HIT (with Age); the stored
    value is version 2 in Redis."""
    kept = [("ETag", '"v7"'), ("Cache-Control", "public, max-age=600"),
            ("Content-Type", "application/json; charset=utf-8"), ("Location", "/api/users/h1"),
            ("Vary", "Accept-Encoding"), ("Last-Modified", "Tue, 01 Dec 2026 10:00:00 GMT"),
            ("Expires", "Wed, 02 Dec 2026 10:00:00 GMT")]
    with RedisServer() as rs:
        with cache_stack(rs.port) as s:
            script_user(s, "h1", 200, kept + [("X-Internal", "not kept")], DOC)
            for want in ("MISS", "HIT", "HIT"):
                st, h, b = get(s, "/api/users/h1")
                expect(st, h, b, 200, want)
                assert b == DOC.encode(), b
                for k, v in kept:
                    assert h.get(k.lower()) == v, (want, k, h)
                assert "x-internal" not in h, h
                assert h.get("x-gateway-upstream") == "user-service", h
                assert ("age" in h) == (want == "HIT"), (want, h)
                time.sleep(SETTLE)
            assert user_calls(s, "h1") == 1
            v = resp(rs.port, "GET", KEY + "h1")
            assert v[8:11] == b"v2 " and b'ETag: "v7"\r\n' in v, v


def test_cache_3xx_204_and_non_json_200_passed_through_uncached():
    """A 301 with Location, a 204 and a 200 text/html answer are the client's as the
    upstream gave them (status, headers, body), X-Cache: BYPASS, and are never stored: the
    next GET reaches user-service again. (Before: 502.)"""
    with cache_stack(None) as s:
        script_user(s, "r1", 301, [("Location", "/api/users/7"), ("Cache-Control", "max-age=60"),
                                   ("Content-Type", "text/plain")], "moved")
        script_user(s, "n1", 204, [("ETag", '"e204"')])
        script_user(s, "t1", 200, [("Content-Type", "text/html"), ("ETag", '"t"')],
                    "<p>not json</p>")
        for n in (1, 2):
            st, h, b = get(s, "/api/users/r1")
            assert (st, h.get("location"), h.get("content-type"), b) == \
                (301, "/api/users/7", "text/plain", b"moved"), (st, h, b)
            assert h.get("x-cache") == "BYPASS" and h.get("x-gateway-upstream") == "user-service", h
            st, h, b = get(s, "/api/users/n1")
            assert (st, h.get("etag"), b) == (204, '"e204"', b""), (st, h, b)
            assert h.get("x-cache") == "BYPASS", h
            st, h, b = get(s, "/api/users/t1")
            assert (st, h.get("content-type"), b) == (200, "text/html", b"<p>not json</p>"), \
                (st, h, b)
            assert h.get("x-cache") == "BYPASS" and h.get("etag") == '"t"', h
            for uid in ("r1", "n1", "t1"):
                assert user_calls(s, uid) == n, (uid, n, s.mock("user-service").stats())
        # HEAD of a passed-through answer: its head, no body
        st, hs, b = get_all(s, "/api/users/r1", "HEAD")
        assert st == 301 and b == b"" and all_named(hs, "Location") == ["/api/users/7"], (st, hs)
        assert metrics(s).get("gateway_cache_bypass_total") == 7, metrics(s)
        # 404 negative caching is unchanged
        expect(*get_user(s, "missing-p"), 404, "MISS")
        expect(*get_user(s, "missing-p"), 404, "HIT")


def test_cache_no_store_private_set_cookie_never_stored():
    """Cache-Control no-store or private (any case, among other directives), no-cache,
    max-age=0, an Expires in the past or not a date, and Set-Cookie: passed to the client
    (every Set-Cookie line), never stored: each GET reaches user-service, X-Cache: BYPASS,
    and nothing is in Redis. (Before: stored, then HIT.)"""
    cases = {
        "ns": [("Cache-Control", "public, No-Store, max-age=60")],
        "pv": [("Cache-Control", 'max-age=60, PRIVATE="Set-Cookie"')],
        "ck": [("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; HttpOnly")],
        "nc": [("Cache-Control", "no-cache")],
        "m0": [("Cache-Control", "max-age=0")],
        "e0": [("Expires", "0")],
        "ep": [("Expires", "Thu, 01 Jan 1970 00:00:00 GMT")],
    }
    with RedisServer() as rs:
        with cache_stack(rs.port) as s:
            for uid, hs in cases.items():
                script_user(s, uid, 200, hs + [("Content-Type", "application/json")],
                            '{"id":"%s"}' % uid)
            for n in (1, 2):
                for uid, hs in cases.items():
                    st, got, b = get_all(s, "/api/users/%s" % uid)
                    assert st == 200 and b == ('{"id":"%s"}' % uid).encode(), (uid, st, b)
                    assert all_named(got, "X-Cache") == ["BYPASS"], (uid, got)
                    for name in ("Cache-Control", "Set-Cookie", "Expires"):
                        want = [v for k, v in hs if k == name]
                        assert all_named(got, name) == want, (uid, name, got)
                    time.sleep(SETTLE)
                    assert user_calls(s, uid) == n, (uid, n)
                    assert resp(rs.port, "EXISTS", KEY + uid) == 0, uid
            # max-age wins over an Expires in the past; an Expires far ahead keeps the ttl
            script_user(s, "mx", 200, [("Expires", "0"), ("Cache-Control", "max-age=60")], DOC)
            script_user(s, "ef", 200, [("Expires", "Fri, 01 Jan 2100 00:00:00 GMT")], DOC)
            for uid in ("mx", "ef"):
                expect(*get(s, "/api/users/%s" % uid), 200, "MISS", uid)
                time.sleep(SETTLE)
                expect(*get(s, "/api/users/%s" % uid), 200, "HIT", uid)


def test_cache_no_store_answer_deletes_older_copy():
    """A path whose upstream now says no-store loses its stored copy: it cannot come back
    as a STALE answer when the upstream fails later."""
    with RedisServer() as rs:
        with cache_stack(rs.port, cache={"ttl_ms": 200}) as s:
            script_user(s, "d1", 200, [("Content-Type", "application/json")], DOC)
            expect(*get(s, "/api/users/d1"), 200, "MISS")
            time.sleep(0.3)  # past the ttl, inside the stale window
            script_user(s, "d1", 200, [("Cache-Control", "no-store")], DOC)
            expect(*get(s, "/api/users/d1"), 200, "BYPASS")
            time.sleep(SETTLE)
            assert resp(rs.port, "EXISTS", KEY + "d1") == 0
            script_user(s, "d1", 503, [("Content-Type", "application/json")], '{"e":1}')
            st, h, b = get(s, "/api/users/d1")
            assert st == 503 and h.get("x-cache") is None, (st, h, b)


def fresh_for(s, uid, fresh_s, what):
    """GET /api/users/UID: a MISS; again: a HIT when answered within FRESH_S of the first
    GET's start (a slower answer proves nothing either way and is not asserted); once FRESH_S
    + 0.3 s passed since the MISS was answered: a MISS. Load never makes it fail, only
    skips the HIT check (printed)."""
    t0 = time.monotonic()
    expect(*get(s, "/api/users/%s" % uid), 200, "MISS", what)
    t1 = time.monotonic()
    st, h, b = get(s, "/api/users/%s" % uid)
    if time.monotonic() - t0 < fresh_s:
        expect(st, h, b, 200, "HIT", what + ": within the fresh time")
    else:
        print("    %s: second GET after %.2f s, HIT not checked" % (what, time.monotonic() - t0))
    time.sleep(max(0, t1 + fresh_s + 0.3 - time.monotonic()))
    expect(*get(s, "/api/users/%s" % uid), 200, "MISS", what + ": after the fresh time")


def test_cache_max_age_below_ttl_caps_the_copy():
    """An upstream max-age (s-maxage wins over it) below the route's ttl is the copy's fresh
    time: HIT within it, MISS after it; the copy is kept stale_ms longer (Redis PTTL, which
    was ttl + stale before). A max-age above the ttl does not extend it."""
    with RedisServer() as rs:
        with cache_stack(rs.port, cache={"ttl_ms": 60000, "stale_ms": 5000}) as s:
            script_user(s, "m1", 200, [("Cache-Control", "max-age=1")], DOC)
            script_user(s, "s1", 200, [("Cache-Control", "max-age=600, s-maxage=1")], DOC)
            for uid in ("m1", "s1"):
                fresh_for(s, uid, 1.0, uid)
                assert user_calls(s, uid) == 2, uid
                time.sleep(SETTLE)
                pttl = resp(rs.port, "PTTL", KEY + uid)
                assert 0 < pttl <= 1000 + 5000, (uid, "max-age 1 s + stale 5 s", pttl)
    with cache_stack(None, cache={"ttl_ms": 1000}) as s:
        script_user(s, "l1", 200, [("Cache-Control", "max-age=600")], DOC)
        fresh_for(s, "l1", 1.0, "ttl_ms 1000 despite max-age=600")


def test_cache_old_and_foreign_values_in_redis():
    """A version 1 value ("<status> <fetched us>\\n<body>", older gateways) is served as
    before; a value whose header block is malformed, names a header the gateway does not
    keep, or carries Set-Cookie is a miss (fetched, then overwritten); never a crash."""
    def put(uid, value):
        now_ms = int(time.time() * 1000)
        resp(rs.port, "SET", KEY + uid, now_ms.to_bytes(8, "big") + value, "PX", "60000")

    with RedisServer() as rs:
        with cache_stack(rs.port) as s:
            us = int(time.time() * 1e6)
            put("o1", b"200 %d\n{\"old\":true}" % us)
            st, h, b = get(s, "/api/users/o1")
            expect(st, h, b, 200, "HIT", "version 1 value")
            assert b == b'{"old":true}' and h.get("content-type") == "application/json", (h, b)
            bad = {
                "b1": b"v2 200 %d 60000 99999\n{}" % us,                  # header bytes past the end
                "b2": b"v2 200 %d 60000 11\nX-Evil: 1\r\n{}" % us,       # not a kept header
                "b3": b"v2 200 %d 60000 15\nSet-Cookie: a\r\n{}" % us,
                "b4": b"v2 200 %d 60000 16\nETag: x\r\nETag: y{}" % us,   # no CRLF at the end
                "b5": b"v2 302 %d 60000 0\n" % us,                        # not a stored status
                "b6": b"v2 200 -5 60000 0\n{}",
            }
            for uid, v in bad.items():
                put(uid, v)
                st, h, b = get(s, "/api/users/%s" % uid)
                expect(st, h, b, 200, "MISS", uid)
                assert "x-evil" not in h and "set-cookie" not in h, (uid, h)
                assert json.loads(b)["id"] == uid, (uid, b)
                assert user_calls(s, uid) == 1, uid
            assert s.gw.p.poll() is None


def test_cache_set_cookie_only_to_the_client_that_fetched():
    """Concurrent misses share one fetch; an answer with Set-Cookie goes with its cookies to
    the client whose lookup fetched it only, without them to the ones that joined."""
    with cache_stack(None, user_args=["--latency-ms", "1500"]) as s:
        script_user(s, "c1", 200, [("Set-Cookie", "sid=one"), ("ETag", '"c"')], DOC)
        res = [None] * 3

        def one(i):
            res[i] = get_all(s, "/api/users/c1")

        ts = [threading.Thread(target=one, args=(i,)) for i in range(3)]
        ts[0].start()
        deadline = time.monotonic() + 5
        while user_calls(s, "c1") < 1:  # the first one's fetch is under way (1.5 s) ...
            assert time.monotonic() < deadline, "the first GET never reached user-service"
            time.sleep(0.01)
        for t in ts[1:]:  # ... and the others join it
            t.start()
        for t in ts:
            t.join(10)
        assert user_calls(s, "c1") == 1, s.mock("user-service").stats()
        for st, hs, b in res:
            assert st == 200 and b == DOC.encode() and all_named(hs, "ETag") == ['"c"'], (st, hs)
        cookies = sorted(len(all_named(hs, "Set-Cookie")) for _, hs, _ in res)
        assert cookies == [0, 0, 1], res
