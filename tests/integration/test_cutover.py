"""Cutover control (issue 3): admin auth and named tokens, the route table over the admin API,
flips under load, file edits and reloads, write-back with an audit trail, split / sticky /
override / rollback, validation, shadow, fallback, and memory over 1,000 reloads.

Routing is proven three ways: X-Gateway-Upstream, X-Mock-Name (which mockd answered) and
mockd's /__stats by_path (legacy sees /api/orders/N, order-service sees /orders/N). Every wait
is bounded; timings are printed and asserted with a wide margin only."""
import json
import os
import re
import threading
import time

from harness import SANITIZED, Stack, connect, free_port, metrics, read_response, request, wait_port

TOKEN = "test-token"
AUTH = {"Authorization": "Bearer " + TOKEN}
UPS3 = {"legacy": 1, "user-service": 1, "order-service": 1}
ORDER_REWRITES = {"order-service": {"template": "/orders/{id}"}}


def orders_route(**extra):
    r = {"id": "orders", "path": "/api/orders/{id}", "upstream": "legacy",
         "rewrites": dict(ORDER_REWRITES)}
    r.update(extra)
    return r


def base_routes(**extra):
    return [orders_route(**extra),
            {"id": "users", "path": "/api/users/{id}", "upstream": "user-service",
             "rewrites": {"user-service": {"strip_prefix": "/api"}}},
            {"id": "legacy", "path": "/**", "upstream": "legacy"}]


# ---- helpers ----------------------------------------------------------------------------

def stack(**kw):
    """A started Stack whose admin listener is open too (the harness waits for the proxy
    port only, and the gateway opens the admin listener after its workers')."""
    s = Stack(**kw)
    try:
        wait_port(s.admin_port)
    except Exception:
        s.stop()
        raise
    return s


class Conn:
    """One keep-alive client connection; reconnects only when the server said close."""

    def __init__(self, port, timeout=10.0):
        self.port, self.timeout, self.s, self.buf = port, timeout, None, b""

    def req(self, method, path, headers=None, body=b""):
        if self.s is None:
            self.s = connect(self.port, self.timeout)
            self.buf = b""
        hs = {"Host": "127.0.0.1:%d" % self.port}
        hs.update(headers or {})
        if body:
            hs["Content-Length"] = str(len(body))
        raw = "%s %s HTTP/1.1\r\n" % (method, path) + "".join("%s: %s\r\n" % kv for kv in hs.items()) + "\r\n"
        try:
            self.s.sendall(raw.encode("latin-1") + body)
            r, self.buf = read_response(self.s, method == "HEAD", self.buf)
        except Exception:
            self.close()
            raise
        if (r.header("connection") or "").lower() == "close":
            self.close()
        return r

    def close(self):
        if self.s is not None:
            self.s.close()
        self.s, self.buf = None, b""


def admin(s, method, path, body=None, token=TOKEN, raw=None):
    """(status, headers, parsed JSON body or None) from the admin listener."""
    hs = {"Authorization": "Bearer " + token} if token else {}
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else b"")
    if data:
        hs["Content-Type"] = "application/json"
    st, h, b = request(s.admin_port, method, path, hs, data)
    try:
        doc = json.loads(b) if b else None
    except ValueError:
        doc = None
    return st, h, doc, b


def table(s):
    st, _, doc, b = admin(s, "GET", "/admin/routes")
    assert st == 200, (st, b)
    return doc


def version(s):
    return table(s)["version"]


def route_of(doc, rid):
    for r in doc["routes"]:
        if r["id"] == rid:
            return r
    return None


def patch(s, rid, body, token=TOKEN):
    st, _, doc, b = admin(s, "PATCH", "/admin/routes/" + rid, body, token=token)
    assert st == 200, (st, b)
    return doc


def history(s, limit=None):
    st, _, doc, b = admin(s, "GET", "/admin/routes/history" + ("?limit=%d" % limit if limit else ""))
    assert st == 200, (st, b)
    return doc["changes"]


def wait_for(pred, timeout, step=0.01):
    """Polls PRED until it returns something true or TIMEOUT passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


def routes_path(s):
    return os.path.join(s.tmp, "routes.json")


def write_routes_atomic(s, doc_or_text):
    text = doc_or_text if isinstance(doc_or_text, str) else json.dumps(doc_or_text)
    p = routes_path(s)
    tmp = p + ".edit-tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, p)


def gw_log(s):
    return s.gw.output()


def access_lines(s):
    try:
        with open(s.access_log) as f:
            return [json.loads(l) for l in f if l.strip()]
    except FileNotFoundError:
        return []


def side_of(r):
    """Which upstream answered, checked three ways; raises on any disagreement."""
    up = r.header("X-Gateway-Upstream")
    mock = r.header("X-Mock-Name") or ""
    assert r.status == 200, (r.status, r.body[:300])
    assert up in ("legacy", "order-service"), up
    assert mock == up + "-0", (up, mock)
    return up


def check_stats_shape(s, n_legacy, n_order):
    """legacy served only /api/orders/N, order-service only /orders/N, in these numbers."""
    lp = s.mock("legacy").stats()["by_path"]
    op = s.mock("order-service").stats()["by_path"]
    assert all(re.fullmatch(r"/api/orders/\d+", k) for k in lp), lp
    assert all(re.fullmatch(r"/orders/\d+", k) for k in op), op
    assert sum(lp.values()) == n_legacy, (sum(lp.values()), n_legacy)
    assert sum(op.values()) == n_order, (sum(op.values()), n_order)


class Load:
    """N threads sending GET /api/orders/K on keep-alive connections until stopped.
    Records (t_send, upstream) per response and every failure."""

    def __init__(self, port, threads=4, headers=None):
        self.port, self.headers = port, headers or {}
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.records = []   # (t_send, upstream)
        self.failures = []
        self.ts = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, i):
        c = Conn(self.port, timeout=5.0)
        n = 0
        recs = []
        while not self.stop_ev.is_set():
            oid = (i * 1000 + n) % 50 + 1
            n += 1
            t = time.monotonic()
            try:
                r = c.req("GET", "/api/orders/%d" % oid, self.headers)
                up = side_of(r)
                body = json.loads(r.body)
                assert body["id"] == str(oid), body
                recs.append((t, up))
            except Exception as e:  # noqa: BLE001 -- every failure counts
                with self.lock:
                    self.failures.append("%s: %r" % (oid, e))
        c.close()
        with self.lock:
            self.records.extend(recs)

    def start(self):
        for t in self.ts:
            t.start()
        return self

    def stop(self):
        self.stop_ev.set()
        for t in self.ts:
            t.join(15)
        assert not any(t.is_alive() for t in self.ts), "load thread stuck"


def parallel_requests(port, n, threads, make):
    """N requests over THREADS keep-alive connections; make(k) -> (path, headers).
    Returns [(k, Response)]."""
    out, errs, lock = [], [], threading.Lock()

    def run(t):
        c = Conn(port)
        mine = []
        for k in range(t, n, threads):
            path, hs = make(k)
            try:
                mine.append((k, c.req("GET", path, hs)))
            except Exception as e:  # noqa: BLE001
                with lock:
                    errs.append(repr(e))
        c.close()
        with lock:
            out.extend(mine)

    ts = [threading.Thread(target=run, args=(t,), daemon=True) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errs, errs[:5]
    assert len(out) == n, (len(out), n)
    return out


# ---- 1. admin auth ----------------------------------------------------------------------

ADMIN_CALLS = [
    ("GET", "/admin/routes", None), ("GET", "/admin/routes/orders", None),
    ("GET", "/admin/routes/history", None), ("PUT", "/admin/routes/orders", orders_route()),
    ("PATCH", "/admin/routes/orders", {"upstream": "order-service"}),
    ("DELETE", "/admin/routes/orders", None), ("POST", "/admin/rollback", {}),
    ("POST", "/admin/reload", None), ("GET", "/admin/nothing-here", None), ("GET", "/admin/", None),
]


def test_admin_auth_required():
    with stack(upstreams=UPS3, routes=base_routes()) as s:
        v0 = version(s)
        bad = [None, "Bearer wrong", "Bearer test-toke", "Bearer test-token2", "Basic dGVzdC10b2tlbg==",
               "bearer", "Bearer "]
        for method, path, body in ADMIN_CALLS:
            for auth in bad:
                hs = {"Authorization": auth} if auth else {}
                data = json.dumps(body).encode() if body is not None else b""
                st, h, b = request(s.admin_port, method, path, hs, data)
                assert st == 401, (method, path, auth, st, b)
                assert h.get("content-type", "").startswith("application/json"), h
                try:
                    doc = json.loads(b)
                except ValueError:
                    raise AssertionError("401 body is not JSON: %r" % b)
                assert doc.get("status") == 401 and doc.get("error"), doc
        # nothing changed behind the 401s
        assert version(s) == v0
        assert history(s) == []
        for path in ("/healthz", "/readyz", "/metrics"):
            st, _, b = request(s.admin_port, "GET", path)
            assert st == 200, (path, st, b)
        assert json.loads(request(s.admin_port, "GET", "/readyz")[2])["status"] == "ready"


def test_named_token_in_history():
    s = Stack(upstreams=UPS3, routes=base_routes(), start=False)
    try:
        s.conf["admin"]["tokens"] = {"alice": "a-token"}
        s.write()
        s.start()
        wait_port(s.admin_port)
    except Exception:
        s.stop()
        raise
    with s:
        st, _, _, b = admin(s, "GET", "/admin/routes", token="a-token")
        assert st == 200, b
        assert admin(s, "GET", "/admin/routes", token="b-token")[0] == 401
        patch(s, "orders", {"upstream": "order-service"}, token="a-token")
        patch(s, "orders", {"upstream": "legacy"}, token=TOKEN)
        h = history(s)
        assert [e["who"] for e in h] == ["admin", "alice"], h
        with open(routes_path(s) + ".history.jsonl") as f:
            lines = [json.loads(l) for l in f]
        assert [e["who"] for e in lines] == ["alice", "admin"], lines


# ---- 2. the table over the admin API, route_version in the access log -------------------

def test_routes_view_and_versions():
    with stack(upstreams=UPS3, routes=base_routes()) as s:
        doc = table(s)
        assert doc["source"] == "file", doc
        assert isinstance(doc["version"], int), doc
        assert [r["id"] for r in doc["routes"]] == ["orders", "users", "legacy"], doc
        assert route_of(doc, "orders")["rewrites"] == ORDER_REWRITES, doc
        st, _, one, b = admin(s, "GET", "/admin/routes/orders")
        assert st == 200 and one["id"] == "orders" and one["upstream"] == "legacy", b
        assert admin(s, "GET", "/admin/routes/nope")[0] == 404
        v0 = doc["version"]
        st, h0, _ = request(s.port, "GET", "/api/orders/1")
        assert st == 200
        res = patch(s, "orders", {"upstream": "order-service"})
        assert res["version"] == v0 + 1, res
        assert version(s) == v0 + 1
        st, h1, _ = request(s.port, "GET", "/api/orders/1")
        assert st == 200 and h1["x-gateway-upstream"] == "order-service", h1
        assert patch(s, "orders", {"upstream": "legacy"})["version"] == v0 + 2
        assert version(s) == v0 + 2
        assert metrics(s)["gateway_route_table_version"] == v0 + 2
        want = {h0["x-request-id"]: v0, h1["x-request-id"]: v0 + 1}

        def found():
            got = {l["request_id"]: l for l in access_lines(s) if l.get("request_id") in want}
            return got if len(got) == len(want) else None
        got = wait_for(found, 3.0, 0.05)
        assert got, "access log lines never appeared: %r" % access_lines(s)[-3:]
        for rid, v in want.items():
            assert got[rid]["route_version"] == v, (got[rid], v)
            assert got[rid]["route"] == "orders", got[rid]


# ---- 3. flip under continuous load ------------------------------------------------------

def _flip_check(records, t_resp, new_side, label):
    """Requests sent after t_resp must all have gone to NEW_SIDE."""
    after = sorted((t, up) for t, up in records if t > t_resp)
    assert after, "no requests after the %s" % label
    stale = [t - t_resp for t, up in after if up != new_side]
    first_new = min((t for t, up in after if up == new_side), default=None)
    lag = max(stale) if stale else 0.0
    print("    %s: first request on %s sent %.1f ms after the PATCH response; %d stale after it "
          "(last %.1f ms after)" % (label, new_side, (first_new - t_resp) * 1e3 if first_new else -1,
                                    len(stale), lag * 1e3))
    assert lag < 1.0, "%s: a request sent %.3f s after the PATCH response still went to the old side" % (label, lag)
    return len(stale)


def test_flip_under_load():
    with stack(upstreams=UPS3, routes=base_routes(), workers=2) as s:
        load = Load(s.port, threads=4).start()
        try:
            time.sleep(0.5)
            patch(s, "orders", {"upstream": "order-service"})
            t1 = time.monotonic()
            time.sleep(0.8)
            t2_sent = time.monotonic()  # from here on legacy may answer again
            patch(s, "orders", {"upstream": "legacy"})
            t2 = time.monotonic()
            time.sleep(0.5)
        finally:
            load.stop()
        n = len(load.records)
        elapsed = 1.8
        print("    %d requests, %.0f req/s, %d failures" % (n, n / elapsed, len(load.failures)))
        assert not load.failures, load.failures[:5]
        assert n / elapsed > 300, "load too thin to prove anything: %d requests" % n
        # only requests sent before the flip back was asked for (its PATCH can take a while on
        # a loaded box: one sent during it may rightly go to legacy)
        stale1 = _flip_check([x for x in load.records if x[0] < t2_sent], t1, "order-service",
                             "flip to order-service")
        stale2 = _flip_check(load.records, t2, "legacy", "flip back to legacy")
        n_leg = sum(1 for _, u in load.records if u == "legacy")
        n_ord = n - n_leg
        assert n_leg and n_ord, (n_leg, n_ord)
        check_stats_shape(s, n_leg, n_ord)
        assert stale1 == 0 and stale2 == 0, "requests sent after the PATCH response went to the old side"


# ---- 4. file edits and reloads ----------------------------------------------------------

def test_file_edit_rename_over():
    with stack(upstreams=UPS3, routes=base_routes()) as s:
        v0 = version(s)
        assert request(s.port, "GET", "/api/orders/3")[1]["x-gateway-upstream"] == "legacy"
        write_routes_atomic(s, {"routes": base_routes(upstream="order-service")})
        t0 = time.monotonic()

        def flipped():
            st, h, _ = request(s.port, "GET", "/api/orders/3")
            return st == 200 and h["x-gateway-upstream"] == "order-service"
        ok = wait_for(flipped, 3.0)
        dt = time.monotonic() - t0
        print("    file rename-over in force after %.0f ms" % (dt * 1e3))
        assert ok, "the renamed-over routes.json was never picked up"
        assert dt < 1.0, dt
        assert version(s) > v0
        # a file carrying an older "version" never moves the version backwards
        for up in ("legacy", "order-service", "legacy"):
            patch(s, "orders", {"upstream": up})
        v1 = version(s)
        write_routes_atomic(s, {"version": 1, "routes": base_routes(upstream="order-service")})
        assert wait_for(lambda: version(s) > v1, 3.0), (v1, version(s))
        # written in place (truncate + write) is seen too
        with open(routes_path(s), "w") as f:
            json.dump({"routes": base_routes()}, f)
        assert wait_for(lambda: request(s.port, "GET", "/api/orders/3")[1]["x-gateway-upstream"] == "legacy", 3.0)


def test_file_invalid_rejected_old_table_serves():
    with stack(upstreams=UPS3, routes=base_routes()) as s:
        v0 = version(s)
        failed0 = metrics(s)['gateway_route_reloads_total{result="failed"}']
        bad = {"routes": base_routes(upstream="nope")}
        write_routes_atomic(s, bad)
        ok = wait_for(lambda: metrics(s)['gateway_route_reloads_total{result="failed"}'] > failed0, 3.0, 0.05)
        assert ok, "failed reload not counted"
        log = gw_log(s)
        lines = [l for l in log.splitlines() if "routes.json" in l and 'routes[0].upstream' in l]
        assert lines, "no log line naming the file and the field:\n" + log[-1500:]
        assert "nope" in lines[-1], lines
        # the old table keeps serving
        assert version(s) == v0
        st, h, _ = request(s.port, "GET", "/api/orders/4")
        assert st == 200 and h["x-gateway-upstream"] == "legacy", (st, h)
        # reload by hand: 422 with the error
        st, _, doc, b = admin(s, "POST", "/admin/reload")
        assert st == 422, (st, b)
        assert "routes[0].upstream" in doc["error"] and "routes.json" in doc["error"], doc
        assert metrics(s)['gateway_route_reloads_total{result="failed"}'] >= failed0 + 2
        assert version(s) == v0
        # syntactically broken JSON: rejected the same way
        write_routes_atomic(s, '{"routes": [')
        st, _, doc, b = admin(s, "POST", "/admin/reload")
        assert st == 422 and "routes.json" in doc["error"], (st, b)
        assert version(s) == v0
        # valid again: 200 {"reloaded": true, "version": N}
        write_routes_atomic(s, {"routes": base_routes(upstream="order-service")})
        st, _, doc, b = admin(s, "POST", "/admin/reload")
        assert st == 200, (st, b)
        assert doc["reloaded"] is True and doc["version"] > v0, doc
        assert doc["version"] == version(s), (doc, version(s))
        st, h, _ = request(s.port, "GET", "/api/orders/4")
        assert h["x-gateway-upstream"] == "order-service", h


def test_sighup_reloads():
    import signal
    with stack(upstreams=UPS3, routes=base_routes()) as s:
        # edit without a watcher event mattering: SIGHUP must pick it up regardless
        write_routes_atomic(s, {"routes": base_routes(upstream="order-service")})
        os.kill(s.gw.pid, signal.SIGHUP)
        assert wait_for(lambda: request(s.port, "GET", "/api/orders/2")[1]["x-gateway-upstream"]
                        == "order-service", 3.0)


# ---- 5. admin changes written back with an audit trail ----------------------------------

def test_patch_written_back_with_history():
    with stack(upstreams=UPS3, routes=base_routes()) as s:
        v0 = version(s)
        r1 = patch(s, "orders", {"upstream": "order-service"})
        with open(routes_path(s)) as f:
            disk = json.load(f)
        assert route_of(disk, "orders")["upstream"] == "order-service", disk
        assert route_of(disk, "orders")["rewrites"] == ORDER_REWRITES, disk
        assert route_of(disk, "users")["upstream"] == "user-service", disk
        r2 = patch(s, "orders", {"split": {"legacy": 70, "order-service": 30}})
        with open(routes_path(s)) as f:
            disk = json.load(f)
        assert route_of(disk, "orders")["split"] == {"legacy": 70, "order-service": 30}, disk
        with open(routes_path(s) + ".history.jsonl") as f:
            lines = [json.loads(l) for l in f if l.strip()]
        assert len(lines) == 2, lines
        e = lines[0]
        assert e["who"] == "admin" and e["action"] == "patch" and e["route_id"] == "orders", e
        assert e["old"]["upstream"] == "legacy" and e["new"]["upstream"] == "order-service", e
        assert e["version"] == r1["version"] == v0 + 1, (e, r1)
        assert "split" not in lines[0]["new"] and lines[1]["new"]["split"] == {"legacy": 70, "order-service": 30}
        assert lines[1]["version"] == r2["version"] == v0 + 2
        h = history(s)
        assert [x["version"] for x in h] == [v0 + 2, v0 + 1], h  # newest first
        assert h[1]["old"] == e["old"] and h[1]["new"] == e["new"], (h, e)
        assert len(history(s, limit=1)) == 1


# ---- 6. split and sticky ----------------------------------------------------------------

def test_split_share():
    with stack(upstreams=UPS3, routes=base_routes(split={"legacy": 90, "order-service": 10})) as s:
        t0 = time.monotonic()
        res = parallel_requests(s.port, 10000, 4, lambda k: ("/api/orders/%d" % (k % 50 + 1), None))
        dt = time.monotonic() - t0
        n_ord = sum(1 for _, r in res if side_of(r) == "order-service")
        share = n_ord / len(res)
        print("    10000 requests in %.1f s; order-service share %.2f%%" % (dt, share * 100))
        assert 0.085 <= share <= 0.115, share
        check_stats_shape(s, len(res) - n_ord, n_ord)


def test_sticky_header():
    with stack(upstreams=UPS3, routes=base_routes(split={"legacy": 50, "order-service": 50},
                                                   sticky={"header": "X-User-Id"})) as s:
        users = ["user-%d" % i for i in range(200)]
        res = parallel_requests(s.port, 2000, 4,
                                lambda k: ("/api/orders/%d" % (k % 7 + 1), {"X-User-Id": users[k % 200]}))
        sides = {}
        for k, r in res:
            sides.setdefault(users[k % 200], set()).add(side_of(r))
        switched = [u for u, v in sides.items() if len(v) != 1]
        assert not switched, "users that switched sides: %r" % switched[:10]
        n_ord = sum(1 for v in sides.values() if "order-service" in v)
        print("    200 sticky users: %d on order-service, %d on legacy" % (n_ord, 200 - n_ord))
        assert 0 < n_ord < 200
        assert 50 <= n_ord <= 150, n_ord
        # sticky across table versions: an unrelated change keeps every user on their side
        patch(s, "orders", {"override": {}})
        res = parallel_requests(s.port, 200, 4,
                                lambda k: ("/api/orders/1", {"X-User-Id": users[k]}))
        moved = [users[k] for k, r in res if {side_of(r)} != sides[users[k]]]
        assert not moved, "users moved by an unrelated change: %r" % moved[:10]
        # without the header: random, both sides
        res = parallel_requests(s.port, 200, 2, lambda k: ("/api/orders/1", None))
        assert len({side_of(r) for _, r in res}) == 2


def test_sticky_cookie():
    with stack(upstreams=UPS3, routes=base_routes(split={"legacy": 50, "order-service": 50},
                                                   sticky={"cookie": "uid"})) as s:
        users = ["u%d" % i for i in range(24)]
        sides = {}
        c = Conn(s.port)
        for rnd in range(10):
            for u in users:
                cookie = ("a=1; uid=%s; z=2" % u) if rnd % 3 == 0 else ('uid="%s"' % u) if rnd % 3 == 1 \
                    else ("uid=%s" % u)
                r = c.req("GET", "/api/orders/5", {"Cookie": cookie})
                sides.setdefault(u, set()).add(side_of(r))
        c.close()
        switched = [u for u, v in sides.items() if len(v) != 1]
        assert not switched, switched
        n_ord = sum(1 for v in sides.values() if "order-service" in v)
        print("    24 cookie users: %d on order-service" % n_ord)
        assert 0 < n_ord < len(users), n_ord


# ---- 7. override ------------------------------------------------------------------------

def test_override_header():
    # order-service is in the route as a 0-weight split side (policy.h: the override may name
    # the primary, a split side, the shadow or the fallback upstream)
    with stack(upstreams=UPS3, routes=base_routes(override={},
                                                   split={"legacy": 100, "order-service": 0})) as s:
        H = "X-Gateway-Upstream-Override"
        st, h, _ = request(s.port, "GET", "/api/orders/11", {H: "order-service"})
        assert st == 200 and h["x-gateway-upstream"] == "order-service", h
        assert s.mock("order-service").stats()["by_path"] == {"/orders/11": 1}
        for v in ("user-service", "nope", "Order-Service", "order-service2", ""):
            st, h, _ = request(s.port, "GET", "/api/orders/12", {H: v})
            assert st == 200 and h["x-gateway-upstream"] == "legacy", (v, h)
        st, h, _ = request(s.port, "GET", "/api/orders/12")
        assert h["x-gateway-upstream"] == "legacy"
        assert s.mock("order-service").stats()["requests"] == 1
        assert s.mock("user-service").stats()["requests"] == 0
        # a route without "override" ignores the header
        st, h, _ = request(s.port, "GET", "/api/users/1", {H: "legacy"})
        assert h["x-gateway-upstream"] == "user-service", h


def test_policy_header_values_ignore_trailing_ows():
    """RFC 9110 5.5: a field value has no leading or trailing whitespace, so "X: v " names v
    for the override header and is the same sticky key as "v"."""
    with stack(upstreams=UPS3, routes=base_routes(override={}, split={"legacy": 50, "order-service": 50},
                                                   sticky={"header": "X-User-Id"})) as s:
        H = "X-Gateway-Upstream-Override"
        for v in ("order-service", " order-service", "order-service ", "order-service\t"):
            st, h, _ = request(s.port, "GET", "/api/orders/1", {H: v})
            assert h["x-gateway-upstream"] == "order-service", (repr(v), h["x-gateway-upstream"])
        moved = []
        for i in range(40):
            u = "user-%d" % i
            a = request(s.port, "GET", "/api/orders/1", {"X-User-Id": u})[1]["x-gateway-upstream"]
            b = request(s.port, "GET", "/api/orders/1", {"X-User-Id": u + "  "})[1]["x-gateway-upstream"]
            if a != b:
                moved.append(u)
        assert not moved, "sticky users moved by trailing whitespace: %r" % moved


# ---- 8. rollback ------------------------------------------------------------------------

def test_rollback_all_and_one():
    routes = base_routes(upstream="order-service") + [
        {"id": "ships", "path": "/api/ships/**", "upstream": "order-service",
         "split": {"legacy": 1, "order-service": 1}, "sticky": {"header": "X-User-Id"}}]
    with stack(upstreams=UPS3, routes=routes) as s:
        v0 = version(s)
        st, _, doc, b = admin(s, "POST", "/admin/rollback", {})
        assert st == 200, (st, b)
        assert version(s) == v0 + 1, (version(s), v0)
        t = table(s)
        for r in t["routes"]:
            assert r["upstream"] == "legacy", r
            assert "split" not in r and "sticky" not in r, r
        assert route_of(t, "orders")["rewrites"] == ORDER_REWRITES
        h = history(s)
        assert sorted(e["route_id"] for e in h) == ["orders", "ships", "users"], h
        assert all(e["action"] == "rollback-all" and e["version"] == v0 + 1 for e in h), h
        st, hh, _ = request(s.port, "GET", "/api/users/5")
        assert st == 200 and hh["x-gateway-upstream"] == "legacy"
        assert s.mock("legacy").stats()["by_path"] == {"/api/users/5": 1}
        with open(routes_path(s)) as f:
            assert all(r["upstream"] == "legacy" for r in json.load(f)["routes"])
        # one route
        patch(s, "orders", {"upstream": "order-service"})
        patch(s, "users", {"upstream": "user-service"})
        v1 = version(s)
        st, _, doc, b = admin(s, "POST", "/admin/rollback", {"id": "orders"})
        assert st == 200, (st, b)
        assert version(s) == v1 + 1
        t = table(s)
        assert route_of(t, "orders")["upstream"] == "legacy"
        assert route_of(t, "users")["upstream"] == "user-service"
        h = history(s)
        assert h[0]["route_id"] == "orders" and h[0]["action"] == "rollback" and h[0]["version"] == v1 + 1, h[0]
        assert h[1]["action"] == "patch", h[1]
        st, _, doc, b = admin(s, "POST", "/admin/rollback", {"id": "nope"})
        assert st == 404, (st, b)
        assert version(s) == v1 + 1


# ---- 9. validation ----------------------------------------------------------------------

def test_put_validation():
    with stack(upstreams=UPS3, routes=base_routes()) as s:
        v0 = version(s)
        with open(routes_path(s)) as f:
            disk0 = f.read()
        cases = [
            (orders_route(upstream="nope"), "upstream"),
            (orders_route(path="api/orders/{id}"), "path"),
            (orders_route(path="/api/or*ders"), "path"),
            (orders_route(split={"legacy": 50, "nope": 50}), "split"),
            (orders_route(sticky={"header": "X-User-Id"}), "sticky"),
            (dict(orders_route(), id="other"), "id"),
        ]
        for body, field in cases:
            st, _, doc, b = admin(s, "PUT", "/admin/routes/orders", body)
            assert st == 422, (body, st, b)
            assert field in doc["error"], (field, doc)
            assert doc["status"] == 422, doc
        st, _, doc, b = admin(s, "PATCH", "/admin/routes/orders", {"upstream": "nope"})
        assert st == 422 and "upstream" in doc["error"], (st, b)
        assert version(s) == v0
        assert route_of(table(s), "orders")["upstream"] == "legacy"
        with open(routes_path(s)) as f:
            assert f.read() == disk0
        assert history(s) == []
        st, _, doc, b = admin(s, "PATCH", "/admin/routes/nope", {"upstream": "legacy"})
        assert st == 404, (st, b)
        for raw in (b"{not json", b"[1, 2]", b'{"a": 1, "a": 2}'):
            st, _, doc, b = admin(s, "PUT", "/admin/routes/orders", raw=raw)
            assert st == 400, (raw, st, b)
            st, _, doc, b = admin(s, "PATCH", "/admin/routes/orders", raw=raw)
            assert st == 400, (raw, st, b)
        assert version(s) == v0
        # a valid PUT of a new id appends the route
        st, _, doc, b = admin(s, "PUT", "/admin/routes/ships",
                              {"path": "/api/ships/**", "upstream": "order-service"})
        assert st == 200 and version(s) == v0 + 1, (st, b)
        assert [r["id"] for r in table(s)["routes"]][-1] == "ships"
        st, h, _ = request(s.port, "GET", "/api/ships/x")
        assert h["x-gateway-upstream"] == "order-service", h


# ---- 10. shadow (proxy.c: may not be implemented yet) -----------------------------------

def test_shadow_compares_equal():
    with stack(upstreams=UPS3, routes=base_routes(shadow={"upstream": "order-service"})) as s:
        m0 = metrics(s)
        c = Conn(s.port)
        for i in range(20):
            r = c.req("GET", "/api/orders/%d" % (i + 1))
            assert r.status == 200 and r.header("X-Gateway-Upstream") == "legacy", r.headers
            assert r.header("X-Mock-Name") == "legacy-0"
        c.close()
        got = wait_for(lambda: sum(s.mock("order-service").stats()["by_path"].values()) >= 20, 3.0, 0.05)
        op = s.mock("order-service").stats()["by_path"]
        assert got, "shadow copies never reached order-service: %r" % op
        assert set(op) == {"/orders/%d" % (i + 1) for i in range(20)}, op
        assert wait_for(lambda: metrics(s)["gateway_shadow_comparisons_total"]
                        >= m0["gateway_shadow_comparisons_total"] + 20, 3.0, 0.05)
        assert metrics(s)["gateway_shadow_mismatches_total"] == 0
        assert sum(s.mock("legacy").stats()["by_path"].values()) == 20
        # POST is not in the default shadow methods: no copy
        st, h, _ = request(s.port, "POST", "/api/orders/99", {"Content-Type": "application/json"}, b"{}")
        assert h["x-gateway-upstream"] == "legacy", (st, h)
        request(s.port, "GET", "/api/orders/98")
        assert wait_for(lambda: "/orders/98" in s.mock("order-service").stats()["by_path"], 3.0, 0.05)
        assert "/orders/99" not in s.mock("order-service").stats()["by_path"]


def test_shadow_mismatch_counted_and_logged():
    ups = {"legacy": 1, "user-service": 1, "order-service": ["--error-rate", "1"]}
    with stack(upstreams=ups, routes=base_routes(shadow={"upstream": "order-service"})) as s:
        ids = []
        for i in range(5):
            st, h, b = request(s.port, "GET", "/api/orders/%d" % (i + 1))
            assert st == 200 and h["x-gateway-upstream"] == "legacy", (st, h)
            ids.append(h["x-request-id"])
        ok = wait_for(lambda: metrics(s)["gateway_shadow_mismatches_total"] >= 5, 3.0, 0.05)
        assert ok, "mismatches not counted: %r" % metrics(s).get("gateway_shadow_mismatches_total")
        assert s.mock("order-service").stats()["requests"] >= 5
        # event lines are buffered and written off the loop (flushed every 200 ms)
        wait_for(lambda: all(i in gw_log(s) for i in ids), 3.0, 0.05)
        log = gw_log(s)
        missing = [i for i in ids if i not in log]
        assert not missing, "no log line with request ids %r:\n%s" % (missing, log[-1500:])


def test_shadow_hang_does_not_slow_client():
    ups = {"legacy": 1, "user-service": 1, "order-service": ["--hang-rate", "1"]}
    with stack(upstreams=ups, routes=base_routes(shadow={"upstream": "order-service"}),
               gw_conf={"upstreams": {"order-service": {"response_timeout_ms": 3000}}}) as s:
        c = Conn(s.port, timeout=5.0)
        times = []
        for i in range(50):
            t = time.monotonic()
            r = c.req("GET", "/api/orders/%d" % (i % 10 + 1))
            times.append(time.monotonic() - t)
            assert r.status == 200 and r.header("X-Gateway-Upstream") == "legacy", r.headers
        c.close()
        times.sort()
        print("    with a hung shadow: p50 %.1f ms, p99 %.1f ms, max %.1f ms"
              % (times[25] * 1e3, times[49] * 1e3, times[-1] * 1e3))
        assert times[-1] < 1.0, times[-1]
        assert wait_for(lambda: s.mock("order-service").stats()["requests"] >= 1, 2.0, 0.05), \
            "no shadow copy reached the hung upstream"


# ---- 11. fallback (proxy.c: may not be implemented yet) ---------------------------------

def test_fallback_on_connect_failure():
    dead = "127.0.0.1:%d" % free_port()
    with stack(upstreams={"legacy": 1, "user-service": 1},
               routes=base_routes(upstream="order-service", fallback={"upstream": "legacy"}),
               gw_conf={"upstreams": {"order-service": {"endpoints": [dead]}}}) as s:
        # POST first, while the endpoint is not yet marked down: not replayed, 502
        st, h, b = request(s.port, "POST", "/api/orders/22", {"Content-Type": "application/json"}, b"{}")
        assert st == 502, (st, h, b)
        assert s.mock("legacy").stats()["requests"] == 0
        st, h, b = request(s.port, "GET", "/api/orders/21")
        assert st == 200, (st, h, b)
        assert h["x-gateway-upstream"] == "legacy", h
        assert json.loads(b)["id"] == "21"
        assert s.mock("legacy").stats()["by_path"] == {"/api/orders/21": 1}
        # the dead endpoint is now known to be down ("no healthy endpoint"): still unreachable,
        # so GETs keep falling back rather than getting a 503
        for i in range(5):
            st, h, b = request(s.port, "GET", "/api/orders/%d" % (30 + i))
            assert st == 200 and h["x-gateway-upstream"] == "legacy", (i, st, b)
        # POST to the dead primary is still never replayed
        st, h, b = request(s.port, "POST", "/api/orders/22", {"Content-Type": "application/json"}, b"{}")
        assert st in (502, 503), (st, h, b)
        assert "/api/orders/22" not in s.mock("legacy").stats()["by_path"]


def test_fallback_on_5xx():
    ups = {"legacy": 1, "user-service": 1, "order-service": ["--error-rate", "1"]}
    with stack(upstreams=ups, routes=base_routes(upstream="order-service",
                                                  fallback={"upstream": "legacy"})) as s:
        st, h, b = request(s.port, "GET", "/api/orders/23")
        assert st == 200 and h["x-gateway-upstream"] == "legacy", (st, h, b)
        assert s.mock("order-service").stats()["by_path"] == {"/orders/23": 1}
        assert s.mock("legacy").stats()["by_path"] == {"/api/orders/23": 1}


# ---- 12. 1,000 reloads under load, memory flat ------------------------------------------

# 10,000 on the plain build (the RSS check); fewer under ASan, where each costs 4x as much
N_RELOADS = 2000 if SANITIZED else 10000


def test_ten_thousand_reloads_under_load_rss_flat():
    with stack(upstreams=UPS3, routes=base_routes(), workers=2) as s:
        ac = Conn(s.admin_port)

        def reload_or_flip(i):
            if i % 2 == 0:
                r = ac.req("POST", "/admin/reload", AUTH)
            else:
                up = "order-service" if i % 4 == 1 else "legacy"
                r = ac.req("PATCH", "/admin/routes/orders", dict(AUTH, **{"Content-Type": "application/json"}),
                           json.dumps({"upstream": up}).encode())
            assert r.status == 200, (i, r.status, r.body)
        load = Load(s.port, threads=2).start()
        try:
            for i in range(100):  # warm up allocators, pools, the history file
                reload_or_flip(i)
            time.sleep(0.2)
            rss0 = s.gw.rss_kib("VmRSS")
            v0 = version(s)
            t0 = time.monotonic()
            for i in range(N_RELOADS):
                reload_or_flip(i)
            dt = time.monotonic() - t0
            time.sleep(0.3)
            rss1 = s.gw.rss_kib("VmRSS")
            v1 = version(s)
        finally:
            load.stop()
            ac.close()
        print("    %d reloads/flips in %.1f s under %d requests; VmRSS %d KiB -> %d KiB (%+d KiB)"
              % (N_RELOADS, dt, len(load.records), rss0, rss1, rss1 - rss0))
        assert not load.failures, (len(load.failures), load.failures[:5])
        assert len(load.records) > 500, len(load.records)
        assert v1 >= v0 + N_RELOADS, (v0, v1)
        if not SANITIZED:  # ASan keeps freed memory in quarantine: RSS says nothing there
            assert rss1 - rss0 < 5 * 1024, (rss0, rss1)
        n_leg = sum(1 for _, u in load.records if u == "legacy")
        check_stats_shape(s, n_leg, len(load.records) - n_leg)


def test_shadow_post_bodies_when_the_route_opts_in():
    """A route that lists POST in its shadow methods gets POST bodies copied to the candidate
    (Content-Length and chunked), compared like any answer; without the opt-in, POST is not
    shadowed (test_shadow_compares_equal)."""
    ups = {"legacy": 1, "user-service": 1, "order-service": 1}
    routes = [{"id": "echo", "path": "/echo", "upstream": "legacy",
               "shadow": {"upstream": "order-service", "methods": ["POST"],
                          "ignore_fields": ["name", "headers"]}},
              {"id": "legacy", "path": "/**", "upstream": "legacy"}]
    with stack(upstreams=ups, routes=routes) as s:
        body = os.urandom(100000)
        st, h, b = request(s.port, "POST", "/echo", body=body)
        assert st == 200 and h["x-gateway-upstream"] == "legacy", (st, h)
        assert json.loads(b)["body_bytes"] == len(body)
        c = connect(s.port)
        c.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                  b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        r, _ = read_response(c)
        c.close()
        assert r.status == 200 and json.loads(r.body)["body_bytes"] == 11
        ok = wait_for(lambda: metrics(s).get('gateway_shadow_route_comparisons_total{route="echo"}', 0) >= 2, 3.0, 0.05)
        m = metrics(s)
        assert ok, m
        assert m.get('gateway_shadow_route_mismatches_total{route="echo"}', 0) == 0, m
        # the candidate received both bodies, whole
        st = s.mock("order-service").stats()
        assert st["by_path"].get("/echo") == 2 and st["body_bytes"] == len(body) + 11, st
