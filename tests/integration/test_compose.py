"""Composition engine (issue 4): the shipped order-details composition (conf/composers.json)
answered by the gateway from three legs resolved through the live route table.

Layout: order-service (/orders/{id}), user-service (/users/{id}) and logistics-service
(/shipments?order_id={id}), each its own mockd so faults come from the command line (legs do
not forward X-Mock-* headers). Faults are put on a leg by flipping its route to an upstream
named "bad" (a faulty mockd, a tiny in-test upstream, or a port nobody listens on) over the
admin API, so one stack serves every case of one fault kind.

What reached an upstream is proven by mockd's /__stats. Every wait is bounded; timings are
printed and asserted as generous upper bounds (+300 ms over the contract), with a lower bound
only where it proves a timeout was honoured rather than skipped."""
import json
import os
import socket
import struct
import threading
import time

from harness import BUILD, ROOT, SLACK_SCALE, Mockd, Proc, Stack, connect, free_port, metrics, read_response, request, wait_port

TOKEN = "test-token"
SLACK = 0.3 * SLACK_SCALE  # seconds over a contract figure an upper bound allows
FAST = 0.25          # a leg failing at once (refused, 500, bad JSON, circuit open) costs less

with open(os.path.join(ROOT, "conf", "composers.json")) as _f:
    SHIPPED = json.load(_f)
_LEGS = {l["name"]: l for l in SHIPPED["compositions"][0]["legs"]}
ORDER_TIMEOUT = _LEGS["order"]["timeout_ms"] / 1e3        # 0.5
USER_TIMEOUT = _LEGS["user"]["timeout_ms"] / 1e3          # 0.3
SHIP_TIMEOUT = _LEGS["shipment"]["timeout_ms"] / 1e3      # 0.3
DEADLINE = SHIPPED["compositions"][0]["deadline_ms"] / 1e3  # 1.0
COMP = SHIPPED["compositions"][0]["id"]                   # order-details


# ---- helpers ----------------------------------------------------------------------------

def comp_routes(alt=("bad",)):
    """The three leg routes, each with rewrites for its service and for every ALT upstream
    (so a flip to "bad" or "legacy" keeps a sensible path)."""
    def rw(own, rule):
        d = {own: rule}
        for a in alt:
            d[a] = rule
        return d
    return [
        {"id": "orders", "path": "/api/orders/{id}", "upstream": "order-service",
         "rewrites": rw("order-service", {"template": "/orders/{id}"})},
        {"id": "shipments", "path": "/api/orders/{id}/shipment", "upstream": "logistics-service",
         "rewrites": rw("logistics-service", {"template": "/shipments?order_id={id}"})},
        {"id": "users", "path": "/api/users/**", "upstream": "user-service",
         "rewrites": rw("user-service", {"strip_prefix": "/api"})},
        {"id": "legacy", "path": "/**", "upstream": "legacy"},
    ]


def comp_stack(mocks, extra=None, comps=None, alt=("bad",), workers=1):
    """A started Stack with compositions. mocks: Stack upstreams (mockd-backed); extra:
    {upstream: conf dict} merged into gateway.json (endpoints for non-mockd upstreams,
    breaker, down_ms, ...)."""
    s = Stack(upstreams=mocks, routes=comp_routes(alt), workers=workers, start=False)
    try:
        for name, opts in (extra or {}).items():
            s.conf["upstreams"].setdefault(name, {}).update(opts)
        with open(os.path.join(s.tmp, "composers.json"), "w") as f:
            json.dump(comps or SHIPPED, f)
        s.conf["composers"] = "composers.json"
        s.write()
        s.start()
    except Exception:
        s.stop()
        raise
    return s


def healthy(**over):
    m = {"legacy": 1, "order-service": 1, "user-service": 1, "logistics-service": 1}
    m.update(over)
    return m


def admin(s, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    hs = {"Authorization": "Bearer " + TOKEN}
    if data:
        hs["Content-Type"] = "application/json"
    st, _, b = request(s.admin_port, method, path, hs, data)
    return st, b


def flip(s, rid, upstream):
    st, b = admin(s, "PATCH", "/admin/routes/" + rid, {"upstream": upstream})
    assert st == 200, (rid, upstream, st, b)


def m_outcome(m, outcome):
    return m.get('gateway_compositions_total{outcome="%s"}' % outcome, 0)


def m_degraded(m, leg, comp=COMP):
    return m.get('gateway_composition_degraded_legs_total{composition="%s",leg="%s"}' % (comp, leg), 0)


def m_circuit(m, upstream):
    return m.get('gateway_circuit_state{upstream="%s"}' % upstream)


def compose(s, oid, method="GET", timeout=10.0, headers=None):
    """(status, headers, body bytes, seconds)."""
    t = time.monotonic()
    st, h, b = request(s.port, method, "/api/orders/%s/details" % oid, headers, timeout=timeout)
    return st, h, b, time.monotonic() - t


def stats(m):
    return m.stats()


def n_requests(m):
    return sum(m.stats()["by_path"].values())


def check_full(oid, doc):
    """order, user and shipment all present and consistent with each other."""
    assert doc["order"] is not None and doc["order"]["id"] == str(oid), doc
    uid = doc["order"]["user_id"]
    assert doc["user"] is not None and doc["user"]["id"] == uid, doc
    assert doc["shipment"] is not None and doc["shipment"]["order_id"] == str(oid), doc
    assert doc["degraded"] == [], doc


def check_degraded(st, h, b, oid, null_legs, degraded):
    """200 with NULL_LEGS null, the others present, "degraded" == DEGRADED (leg order) and
    the same list in X-Composition-Degraded (absent when empty)."""
    assert st == 200, (st, h, b[:300])
    assert h.get("content-type", "").startswith("application/json"), h
    doc = json.loads(b)
    assert set(doc) == {"order", "user", "shipment", "degraded"}, doc
    for leg in ("order", "user", "shipment"):
        if leg in null_legs:
            assert doc[leg] is None, (leg, doc)
        else:
            assert doc[leg] is not None, (leg, doc)
    assert doc["order"]["id"] == str(oid), doc
    if doc["user"] is not None:
        assert doc["user"]["id"] == doc["order"]["user_id"], doc
    if doc["shipment"] is not None:
        assert doc["shipment"]["order_id"] == str(oid), doc
    assert doc["degraded"] == degraded, doc
    if degraded:
        assert h.get("x-composition-degraded") == ",".join(degraded), h
    else:
        assert "x-composition-degraded" not in h, h
    return doc


def check_error(st, h, b, status, leg):
    """A gateway-made JSON error for a failed required leg (or a passed-through 4xx) that
    names the leg."""
    assert st == status, (st, h, b[:300])
    assert h.get("content-type", "").startswith("application/json"), h
    doc = json.loads(b)
    assert doc["status"] == status, doc
    assert isinstance(doc["error"], str) and leg in doc["error"], doc
    assert doc["request_id"] == h.get("x-request-id"), (doc, h)
    assert "x-composition-degraded" not in h, h
    return doc


class PyUpstream:
    """A tiny HTTP/1.1 upstream: respond(path) -> (status, body bytes). Keep-alive."""

    def __init__(self, respond):
        self.respond = respond
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.paths = []
        self.heads = []
        self.lock = threading.Lock()
        self.stopping = False
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, c):
        c.settimeout(5)
        buf = b""
        try:
            while not self.stopping:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        return
                    buf += d
                head, _, buf = buf.partition(b"\r\n\r\n")
                path = head.split(b"\r\n")[0].split(b" ")[1].decode()
                with self.lock:
                    self.paths.append(path)
                    self.heads.append(head.decode("latin-1"))
                status, body = self.respond(path)
                c.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                          % (status, len(body)) + body)
        except OSError:
            return
        finally:
            c.close()

    def close(self):
        self.stopping = True
        self.sock.close()
        for t in self.threads:
            t.join(2)


def mockd_on_port(tmp, name, port, extra=()):
    m = Mockd.__new__(Mockd)
    m.port, m.name = port, name
    m.proc = Proc([os.path.join(ROOT, BUILD, "mockd"), "--listen", "127.0.0.1:%d" % port,
                   "--name", name] + list(extra), os.path.join(tmp, "mockd-%s-%d.log" % (name, port)))
    wait_port(port)
    return m


# ---- 1. the healthy composition, HEAD, a missing order ------------------------------------

def test_compose_healthy_shape_and_dependency():
    with comp_stack(healthy(), alt=()) as s:
        st, h, b, t = compose(s, 42)
        print("    healthy composition: %.1f ms" % (t * 1e3))
        assert st == 200, (st, h, b)
        doc = check_degraded(st, h, b, 42, (), [])
        check_full(42, doc)
        assert list(doc) == ["order", "user", "shipment", "degraded"], list(doc)
        assert h.get("x-gateway-upstream") == "gateway", h
        assert h.get("x-request-id"), h
        uid = doc["order"]["user_id"]
        # the legs reached the services with the rewritten paths; user's id came from the order
        assert stats(s.mock("order-service"))["by_path"] == {"/orders/42": 1}
        assert stats(s.mock("user-service"))["by_path"] == {"/users/%s" % uid: 1}
        assert stats(s.mock("logistics-service"))["by_path"] == {"/shipments": 1}
        assert stats(s.mock("legacy"))["by_path"] == {}
        # the parts equal what the routes answer directly
        for path, part in (("/api/orders/42", "order"), ("/api/users/" + uid, "user"),
                           ("/api/orders/42/shipment", "shipment")):
            st2, _, b2 = request(s.port, "GET", path)
            assert st2 == 200 and json.loads(b2) == doc[part], (path, b2, doc[part])
        # another order has another user
        st, h, b, _ = compose(s, 43)
        doc2 = check_degraded(st, h, b, 43, (), [])
        assert stats(s.mock("user-service"))["by_path"].get("/users/%s" % doc2["order"]["user_id"]) == 1

        # a missing order: 404 naming the order leg; the dependent user leg never runs
        nu = n_requests(s.mock("user-service"))
        st, h, b, t = compose(s, "missing-7")
        check_error(st, h, b, 404, "order")
        assert n_requests(s.mock("user-service")) == nu
        m = metrics(s)
        assert m_outcome(m, "ok") == 2 and m_outcome(m, "failed") == 1 and m_outcome(m, "degraded") == 0, \
            {k: v for k, v in m.items() if "composition" in k}


def test_compose_head():
    with comp_stack(healthy(), alt=()) as s:
        c = connect(s.port)
        try:
            get = "GET /api/orders/9/details HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            head = "HEAD /api/orders/9/details HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            c.sendall(get)
            r1, buf = read_response(c)
            assert r1.status == 200, (r1.status, r1.body)
            c.sendall(head)
            r2, buf = read_response(c, head_request=True, buf=buf)
            assert r2.status == 200, (r2.status, r2.headers)
            assert (r2.header("content-type") or "").startswith("application/json"), r2.headers
            cl = r2.header("content-length")
            print("    HEAD: Content-Length %s (GET body %d bytes)" % (cl, len(r1.body)))
            assert cl is None or int(cl) == len(r1.body), (cl, len(r1.body))
            # no body followed the HEAD answer: the next answer on the connection parses
            c.sendall(get)
            r3, buf = read_response(c, buf=buf)
            assert r3.status == 200 and json.loads(r3.body) == json.loads(r1.body), r3.body[:200]
            assert buf == b"", buf[:100]
        finally:
            c.close()


# ---- 2. faults, one leg at a time and all optional legs together ---------------------------

def fault_matrix(kind, bad_mock=None, bad_conf=None, slow=False, order_status=502):
    """One stack; the "bad" upstream has the fault. Each leg is flipped to it in turn:
    user, shipment, user+shipment (200 degraded), then order (ORDER_STATUS)."""
    mocks = healthy()
    if bad_mock is not None:
        mocks["bad"] = bad_mock
    extra = {"bad": dict(bad_conf or {})}
    extra["bad"]["breaker"] = {"failures": 1000, "cooldown_ms": 1}  # not under test here
    extra["bad"].setdefault("down_ms", 0)
    figures = []
    with comp_stack(mocks, extra=extra) as s:
        st, h, b, _ = compose(s, 100)
        check_full(100, check_degraded(st, h, b, 100, (), []))

        def optional_case(oid, legs, bound):
            st, h, b, t = compose(s, oid)
            figures.append("%s=%.0fms" % ("+".join(legs), t * 1e3))
            check_degraded(st, h, b, oid, legs, list(legs))
            assert t < bound, "%s %s: degraded answer after %.3f s (bound %.3f s)" % (kind, legs, t, bound)
            if slow:  # the leg's own timeout was honoured, not cut short
                assert t > min(USER_TIMEOUT, SHIP_TIMEOUT) - 0.03, (kind, legs, t)

        bound = (USER_TIMEOUT + SLACK) if slow else FAST
        flip(s, "users", "bad")
        optional_case(101, ("user",), bound)
        flip(s, "users", "user-service")
        flip(s, "shipments", "bad")
        optional_case(102, ("shipment",), (SHIP_TIMEOUT + SLACK) if slow else FAST)
        flip(s, "users", "bad")
        optional_case(103, ("user", "shipment"), (max(USER_TIMEOUT, SHIP_TIMEOUT) + SLACK) if slow else FAST)
        flip(s, "users", "user-service")
        flip(s, "shipments", "logistics-service")

        # the required leg: an error naming it; the user leg (waiting on it) never runs
        flip(s, "orders", "bad")
        nu = n_requests(s.mock("user-service"))
        st, h, b, t = compose(s, 104)
        figures.append("order=%.0fms" % (t * 1e3))
        check_error(st, h, b, order_status, "order")
        assert h.get("x-gateway-upstream") == "gateway", h
        obound = (ORDER_TIMEOUT + SLACK) if slow else FAST
        assert t < obound, "%s order: answer after %.3f s (bound %.3f s)" % (kind, t, obound)
        if slow:
            assert t > ORDER_TIMEOUT - 0.03, (kind, t)
        assert n_requests(s.mock("user-service")) == nu, "the user leg ran without its order"
        flip(s, "orders", "order-service")

        # healthy again
        st, h, b, _ = compose(s, 105)
        check_full(105, check_degraded(st, h, b, 105, (), []))
        m = metrics(s)
        got = (m_outcome(m, "ok"), m_outcome(m, "degraded"), m_outcome(m, "failed"),
               m_degraded(m, "user"), m_degraded(m, "shipment"))
        assert got == (2, 3, 1, 2, 2), \
            "%s: (ok, degraded, failed, degraded user, degraded shipment) = %r" % (kind, got)
        assert m_circuit(m, "user-service") == 0 and m_circuit(m, "order-service") == 0, m
    print("    %s: %s" % (kind, ", ".join(figures)))


def test_compose_fault_slow():
    # answers after 700 ms: beyond every leg's timeout, within the deadline
    fault_matrix("slow", bad_mock=["--latency-ms", "700"], slow=True, order_status=504)


def test_compose_fault_hung():
    fault_matrix("hung", bad_mock=["--hang-rate", "1"], slow=True, order_status=504)


def test_compose_fault_refused():
    fault_matrix("refused", bad_conf={"endpoints": ["127.0.0.1:%d" % free_port()]})


def test_compose_fault_500():
    fault_matrix("500", bad_mock=["--error-rate", "1"])


def test_compose_fault_reset():
    fault_matrix("reset", bad_mock=["--reset-rate", "1"])


def test_compose_fault_invalid_json():
    up = PyUpstream(lambda path: (200, b'{"id": "1", "user_id": "u-1", '))
    try:
        fault_matrix("invalid JSON", bad_conf={"endpoints": ["127.0.0.1:%d" % up.port]})
        assert up.paths, "the broken upstream was never asked"
    finally:
        up.close()


# ---- 3. parallel legs, the overall deadline ------------------------------------------------

def test_compose_legs_parallel():
    with comp_stack(healthy(**{"user-service": ["--latency-ms", "200"],
                               "logistics-service": ["--latency-ms", "200"]}), alt=()) as s:
        request(s.port, "GET", "/api/orders/1")  # warm the pool
        t = time.monotonic()
        st, _, _ = request(s.port, "GET", "/api/orders/2")
        order_t = time.monotonic() - t
        assert st == 200
        times = []
        for oid in (3, 4, 5):
            st, h, b, t = compose(s, oid)
            check_full(oid, check_degraded(st, h, b, oid, (), []))
            times.append(t)
        print("    order leg alone %.1f ms; compositions %s ms (sequential would be >= 400)"
              % (order_t * 1e3, ", ".join("%.0f" % (x * 1e3) for x in times)))
        for t in times:
            assert 0.19 < t < 0.2 + order_t + 0.15, "composition took %.3f s: legs not in parallel?" % t


def test_compose_deadline_cuts_legs():
    """deadline 700 ms; the order leg takes 500 ms; the user leg (timeout 700 ms, hung) is
    cut by the deadline at ~700 ms, not by its own timeout at ~1200 ms."""
    comps = {"compositions": [{
        "id": COMP, "path": "/api/orders/{id}/details", "deadline_ms": 700,
        "legs": [{"name": "order", "url": "/api/orders/{id}", "required": True, "timeout_ms": 600},
                 {"name": "user", "url": "/api/users/{order.user_id}", "timeout_ms": 700},
                 {"name": "shipment", "url": "/api/orders/{id}/shipment", "timeout_ms": 700}]}]}
    with comp_stack(healthy(**{"order-service": ["--latency-ms", "500"],
                               "user-service": ["--hang-rate", "1"]}), comps=comps, alt=()) as s:
        st, h, b, t = compose(s, 7)
        print("    deadline 700 ms: degraded answer after %.1f ms" % (t * 1e3))
        check_degraded(st, h, b, 7, ("user",), ["user"])
        assert 0.67 < t < 0.7 + SLACK, t
        assert n_requests(s.mock("user-service")) == 1


# ---- 4. the order leg follows the cutover --------------------------------------------------

def test_compose_follows_route_flip():
    # legacy has no rewrite on the orders route: it is asked /api/orders/N as the client would
    with comp_stack(healthy(), alt=()) as s:
        st, h, b, _ = compose(s, 11)
        check_full(11, check_degraded(st, h, b, 11, (), []))
        assert stats(s.mock("order-service"))["by_path"] == {"/orders/11": 1}
        assert stats(s.mock("legacy"))["by_path"] == {}
        flip(s, "orders", "legacy")
        st, h, b, _ = compose(s, 12)
        doc = check_degraded(st, h, b, 12, (), [])
        check_full(12, doc)
        assert stats(s.mock("legacy"))["by_path"] == {"/api/orders/12": 1}
        assert stats(s.mock("order-service"))["by_path"] == {"/orders/11": 1}
        # the user leg still goes where its route says
        assert stats(s.mock("user-service"))["by_path"].get("/users/" + doc["order"]["user_id"]) == 1
        flip(s, "orders", "order-service")
        compose(s, 13)
        assert stats(s.mock("order-service"))["by_path"] == {"/orders/11": 1, "/orders/13": 1}
        assert stats(s.mock("legacy"))["by_path"] == {"/api/orders/12": 1}


# ---- 5. circuit breaker --------------------------------------------------------------------

BREAKER = {"failures": 3, "cooldown_ms": 1000}


def test_compose_breaker_opens_on_hung_upstream():
    with comp_stack(healthy(**{"user-service": ["--hang-rate", "1"]}), alt=(),
                    extra={"user-service": {"breaker": BREAKER}}) as s:
        fail_t = []
        for oid in (1, 2, 3):
            st, h, b, t = compose(s, oid)
            check_degraded(st, h, b, oid, ("user",), ["user"])
            fail_t.append(t)
        assert n_requests(s.mock("user-service")) == 3
        assert m_circuit(metrics(s), "user-service") == 1, "circuit not open after 3 failures"
        open_t = []
        for oid in (4, 5, 6):
            st, h, b, t = compose(s, oid)
            check_degraded(st, h, b, oid, ("user",), ["user"])
            open_t.append(t)
        print("    failing (timeout %d ms): %s ms; circuit open: %s ms" % (
            USER_TIMEOUT * 1e3, ", ".join("%.0f" % (x * 1e3) for x in fail_t),
            ", ".join("%.1f" % (x * 1e3) for x in open_t)))
        assert all(t > USER_TIMEOUT - 0.03 for t in fail_t), fail_t
        assert all(t < USER_TIMEOUT / 3 for t in open_t), "an open circuit still cost time: %r" % open_t
        assert n_requests(s.mock("user-service")) == 3, "a leg reached user-service through an open circuit"
        m = metrics(s)
        assert m_circuit(m, "user-service") == 1, m_circuit(m, "user-service")
        assert m_degraded(m, "user") == 6 and m_outcome(m, "degraded") == 6, m


def test_compose_breaker_recovers_after_cooldown():
    port = free_port()
    with comp_stack(healthy(), alt=(),
                    extra={"user-service": {"endpoints": ["127.0.0.1:%d" % port], "breaker": BREAKER,
                                            "down_ms": 0}}) as s:
        mock = None
        try:
            for oid in (1, 2, 3):
                st, h, b, t = compose(s, oid)
                check_degraded(st, h, b, oid, ("user",), ["user"])
            t_open = time.monotonic()
            assert m_circuit(metrics(s), "user-service") == 1, "circuit not open after 3 refused legs"
            # user-service comes up; within the cool-down the circuit still keeps legs away
            mock = mockd_on_port(s.tmp, "user-service-late", port)
            st, h, b, t = compose(s, 4)
            assert time.monotonic() - t_open < 0.9, "too slow to test within the cool-down"
            check_degraded(st, h, b, 4, ("user",), ["user"])
            assert n_requests(mock) == 0, "a leg went through an open circuit"
            # after the cool-down: the probe succeeds, the circuit closes
            time.sleep(max(0.0, t_open + BREAKER["cooldown_ms"] / 1e3 + 0.15 - time.monotonic()))
            st, h, b, t = compose(s, 5)
            check_full(5, check_degraded(st, h, b, 5, (), []))
            assert n_requests(mock) == 1
            assert m_circuit(metrics(s), "user-service") == 0
            st, h, b, t = compose(s, 6)
            check_full(6, check_degraded(st, h, b, 6, (), []))
            print("    recovered %.0f ms after the circuit opened" % ((time.monotonic() - t_open) * 1e3))
        finally:
            if mock:
                mock.proc.stop()


def test_compose_breaker_probe_cut_does_not_wedge():
    """A half-open probe leg cut before it answers (the run ended because the required leg
    failed, or the client left) must not keep the circuit half-open for good: a later
    composition gets a probe through and, the upstream being healthy, the circuit closes."""
    pu, ps = free_port(), free_port()
    br = {"breaker": {"failures": 3, "cooldown_ms": 500}, "down_ms": 0}
    extra = {"user-service": dict(br, endpoints=["127.0.0.1:%d" % pu]),
             "logistics-service": dict(br, endpoints=["127.0.0.1:%d" % ps])}
    mocks = []
    with comp_stack({"legacy": 1, "order-service": 1}, alt=(), extra=extra) as s:
        try:
            for oid in (1, 2, 3):
                st, h, b, _ = compose(s, oid)
                check_degraded(st, h, b, oid, ("user", "shipment"), ["user", "shipment"])
            m = metrics(s)
            assert m_circuit(m, "user-service") == 1 and m_circuit(m, "logistics-service") == 1, m
            # both come up, slow enough for their probe to be cut, within the legs' timeouts
            mocks = [mockd_on_port(s.tmp, "user-late", pu, ["--latency-ms", "200"]),
                     mockd_on_port(s.tmp, "ship-late", ps, ["--latency-ms", "200"])]
            time.sleep(0.6)
            # the shipment probe goes out; the order is missing: the run ends, the probe is cut
            st, h, b, _ = compose(s, "missing-1")
            check_error(st, h, b, 404, "order")
            # the user probe goes out after the order; the client leaves: the probe is cut
            c = connect(s.port)
            c.sendall(b"GET /api/orders/4/details HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.06)
            c.close()
            probes = (n_requests(mocks[0]), n_requests(mocks[1]))
            # within a few cool-downs a composition must come back whole
            t0 = time.monotonic()
            doc = None
            while time.monotonic() - t0 < 2.5:
                st, h, b, _ = compose(s, 5)
                assert st == 200, (st, b)
                doc = json.loads(b)
                if not doc["degraded"]:
                    break
                time.sleep(0.2)
            m = metrics(s)
            states = (m_circuit(m, "user-service"), m_circuit(m, "logistics-service"))
            print("    probes cut (user, shipment requests seen): %r; after %.1f s: degraded %r, "
                  "circuit states %r" % (probes, time.monotonic() - t0, doc["degraded"], states))
            assert doc["degraded"] == [], \
                "circuit stuck after a cut probe: degraded %r, gateway_circuit_state (user, logistics) %r" \
                % (doc["degraded"], states)
            assert states == (0, 0), states
        finally:
            for mk in mocks:
                mk.proc.stop()


# ---- 6. 4xx pass-through, 404 on an optional leg -------------------------------------------

def test_compose_4xx_passthrough_and_optional_404():
    mode = {"orders": 200, "users": 200, "shipments": 200}

    def respond(path):
        for k in mode:
            if path.startswith("/" + k):
                st = mode[k]
                break
        else:
            return 404, b'{"error":"no such path"}'
        if st != 200:
            return st, b'{"error":"upstream says %d"}' % st
        if path.startswith("/orders/"):
            oid = path.split("/")[2]
            return 200, json.dumps({"id": oid, "user_id": "u-" + oid}).encode()
        if path.startswith("/users/"):
            return 200, json.dumps({"id": path.split("/")[2], "name": "n"}).encode()
        oid = path.split("order_id=")[1]
        return 200, json.dumps({"order_id": oid, "status": "shipped"}).encode()

    up = PyUpstream(respond)
    ep = {"endpoints": ["127.0.0.1:%d" % up.port]}
    try:
        with comp_stack({"legacy": 1}, alt=(), extra={"order-service": dict(ep), "user-service": dict(ep),
                                                    "logistics-service": dict(ep)}) as s:
            st, h, b, _ = compose(s, 1, headers={"X-Request-Id": "rid-compose-1"})
            doc = check_degraded(st, h, b, 1, (), [])
            assert doc["user"] == {"id": "u-1", "name": "n"}, doc
            assert sorted(up.paths) == ["/orders/1", "/shipments?order_id=1", "/users/u-1"], up.paths
            assert h.get("x-request-id") == "rid-compose-1", h
            for head in up.heads:  # every leg carries the client's request id
                assert "\r\nx-request-id: rid-compose-1" in head.lower(), head
            for leg, key in (("user", "users"), ("shipment", "shipments"), ("order", "orders")):
                for code in (403, 429, 400):
                    mode[key] = code
                    st, h, b, _ = compose(s, 2)
                    check_error(st, h, b, code, leg)
                mode[key] = 200
            # an optional part that does not exist is null, not degraded
            mode["users"] = 404
            st, h, b, _ = compose(s, 3)
            check_degraded(st, h, b, 3, ("user",), [])
            mode["users"] = 200
            mode["shipments"] = 404
            st, h, b, _ = compose(s, 4)
            check_degraded(st, h, b, 4, ("shipment",), [])
            mode["users"] = 404
            st, h, b, _ = compose(s, 5)
            check_degraded(st, h, b, 5, ("user", "shipment"), [])
            mode["users"] = mode["shipments"] = 200
            mode["orders"] = 404
            st, h, b, _ = compose(s, 6)
            check_error(st, h, b, 404, "order")
            # no answer above listed a leg as degraded: a passed-through 4xx is the answer,
            # not a null part, and a 404 part is null but not degraded
            m = metrics(s)
            got = (m_outcome(m, "ok"), m_outcome(m, "degraded"), m_outcome(m, "failed"),
                   m_degraded(m, "order"), m_degraded(m, "user"), m_degraded(m, "shipment"))
            assert got == (4, 0, 10, 0, 0, 0), \
                "(ok, degraded, failed, degraded order, user, shipment) = %r" % (got,)
    finally:
        up.close()


# ---- 7. client gone mid-way; 200 at once ---------------------------------------------------

def test_compose_client_disconnect():
    with comp_stack(healthy(**{"user-service": ["--hang-rate", "1"],
                               "logistics-service": ["--latency-ms", "150"]}), alt=(), workers=2) as s:
        for i in range(20):
            c = connect(s.port)
            c.sendall(b"GET /api/orders/%d/details HTTP/1.1\r\nHost: x\r\n\r\n" % (i + 1))
            time.sleep(0.02 + 0.005 * (i % 5))
            if i % 2:  # abortive close (RST)
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
        # a client that sends and half-closes, then leaves
        c = connect(s.port)
        c.sendall(b"GET /api/orders/99/details HTTP/1.1\r\nHost: x\r\n\r\n")
        c.shutdown(socket.SHUT_WR)
        c.close()
        time.sleep(USER_TIMEOUT + 0.2)  # every cut run's legs would have timed out by now
        assert s.gw.p.poll() is None, "gateway died:\n" + s.gw.output()[-2000:]
        for oid in (50, 51):
            st, h, b, t = compose(s, oid)
            check_degraded(st, h, b, oid, ("user",), ["user"])
        st, _, _ = request(s.port, "GET", "/api/orders/52")
        assert st == 200
        assert request(s.admin_port, "GET", "/healthz")[0] == 200


def test_compose_200_concurrent():
    n = 200
    with comp_stack(healthy(), alt=(), workers=2) as s:
        barrier = threading.Barrier(n, timeout=20)
        results, errors, lock = {}, [], threading.Lock()

        def run(k):
            oid = 1000 + k
            try:
                barrier.wait()
                st, h, b, t = compose(s, oid, timeout=15)
                check_full(oid, check_degraded(st, h, b, oid, (), []))
                with lock:
                    results[oid] = t
            except Exception as e:  # noqa: BLE001 -- every failure counts
                with lock:
                    errors.append("%d: %r" % (oid, e))

        t0 = time.monotonic()
        ts = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        wall = time.monotonic() - t0
        assert not any(t.is_alive() for t in ts), "client threads stuck"
        assert not errors, errors[:5]
        assert len(results) == n, len(results)
        lat = sorted(results.values())
        print("    %d concurrent compositions in %.2f s; p50 %.1f ms, max %.1f ms"
              % (n, wall, lat[n // 2] * 1e3, lat[-1] * 1e3))
        for name in ("order-service", "user-service", "logistics-service"):
            assert n_requests(s.mock(name)) == n, (name, n_requests(s.mock(name)))
        m = metrics(s)
        assert m_outcome(m, "ok") == n and m_outcome(m, "degraded") == 0, m
