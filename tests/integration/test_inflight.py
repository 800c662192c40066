"""Concurrency limits (issue 13 §2): upstreams.NAME.max_in_flight (a worker's share:
max / workers) with an optional bounded queue {max, timeout_ms}; above it 503 with
Retry-After at once (or after the queue wait); a route's max_in_flight counted across the
process. Slow answers come from mockd's X-Mock-Latency-Ms; what reached the upstream is
proven by /__stats; no test asserts a duration, only outcomes and their order."""
import json
import os
import subprocess
import tempfile
import threading
import shutil

from harness import BUILD, ROOT, Stack, metrics, request


def _routes(extra=None):
    r = {"id": "users", "path": "/api/users/**", "upstream": "user-service",
         "rewrite": {"strip_prefix": "/api"}}
    r.update(extra or {})
    return [r, {"id": "legacy", "path": "/**", "upstream": "legacy"}]


def _parallel(port, n, latency_ms, path="/api/users/1"):
    """N requests at once on N connections; returns [(status, headers, body)] in the order
    the answers came back."""
    out = []
    lock = threading.Lock()
    go = threading.Barrier(n)

    def one():
        go.wait()
        st, h, b = request(port, "GET", path, headers={"X-Mock-Latency-Ms": str(latency_ms)},
                           timeout=30)
        with lock:
            out.append((st, h, b))
    ts = [threading.Thread(target=one) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def _conf(max_in_flight, queue=None):
    up = {"max_in_flight": max_in_flight}
    if queue:
        up["queue"] = queue
    return {"upstreams": {"user-service": up}}


def test_upstream_max_in_flight_sheds_503_at_once():
    with Stack(routes=_routes(), gw_conf=_conf(2)) as s:
        got = _parallel(s.port, 5, 1500)
        sts = [g[0] for g in got]
        assert sorted(sts) == [200, 200, 503, 503, 503], sts
        assert sts[:3] == [503] * 3, sts  # the refusals did not wait for the slow answers
        st, h, b = got[0]
        doc = json.loads(b)
        assert doc["status"] == 503 and "max_in_flight" in doc["error"], doc
        assert h["retry-after"] == "1" and h["x-gateway-upstream"] == "gateway", h
        assert s.mock("user-service").stats()["requests"] == 2
        m = metrics(s)
        assert m['gateway_upstream_shed_total{upstream="user-service",reason="full"}'] == 3, m
        assert m['gateway_upstream_in_flight{upstream="user-service"}'] == 0, m  # released
        assert request(s.port, "GET", "/api/users/2")[0] == 200
        assert request(s.port, "GET", "/other")[0] != 503  # another upstream: no limit


def test_upstream_queue_waits_then_serves_and_sheds_beyond_it():
    with Stack(routes=_routes(), gw_conf=_conf(1, {"max": 2, "timeout_ms": 20000})) as s:
        got = _parallel(s.port, 4, 400)
        sts = [g[0] for g in got]
        assert sts == [503, 200, 200, 200], sts  # one over the queue: refused first
        assert s.mock("user-service").stats()["requests"] == 3
        m = metrics(s)
        assert m['gateway_upstream_queued_total{upstream="user-service"}'] == 2, m
        assert m['gateway_upstream_shed_total{upstream="user-service",reason="full"}'] == 1, m
        assert m['gateway_upstream_in_flight{upstream="user-service"}'] == 0, m


def test_upstream_queue_timeout_503():
    with Stack(routes=_routes(), gw_conf=_conf(1, {"max": 1, "timeout_ms": 200})) as s:
        got = _parallel(s.port, 2, 3000)
        sts = [g[0] for g in got]
        assert sts == [503, 200], sts
        assert "timed out" in json.loads(got[0][2])["error"], got[0]
        assert got[0][1]["retry-after"] == "1"
        m = metrics(s)
        assert m['gateway_upstream_shed_total{upstream="user-service",reason="queue_timeout"}'] == 1, m
        assert s.mock("user-service").stats()["requests"] == 1


def test_route_max_in_flight_across_workers():
    with Stack(routes=_routes({"max_in_flight": 1}), workers=2) as s:
        got = _parallel(s.port, 3, 1500)
        sts = [g[0] for g in got]
        assert sts == [503, 503, 200], sts
        assert "route busy" in json.loads(got[0][2])["error"]
        assert metrics(s)['gateway_route_shed_total{route="users"}'] == 2
        assert request(s.port, "GET", "/api/users/3")[0] == 200  # the slot came back


def test_shadow_shed_when_candidate_at_limit():
    """The shadow's candidate at its max_in_flight: copies are skipped, the client's request
    is served by the primary all the same."""
    routes = [{"id": "users", "path": "/api/users/**", "upstream": "legacy",
               "shadow": {"upstream": "user-service", "percent": 100}},
              {"id": "direct", "path": "/direct/**", "upstream": "user-service",
               "rewrite": {"strip_prefix": "/direct"}}]
    with Stack(routes=routes, gw_conf=_conf(1)) as s:
        holder = threading.Thread(target=request, args=(s.port, "GET", "/direct/users/1"),
                                  kwargs={"headers": {"X-Mock-Latency-Ms": "1500"}, "timeout": 30})
        holder.start()
        from harness import wait_until
        wait_until(lambda: metrics(s)['gateway_upstream_in_flight{upstream="user-service"}'] == 1,
                   10, "the candidate's slot taken")
        assert request(s.port, "GET", "/api/users/1")[0] == 200
        holder.join()
        m = metrics(s)
        assert m['gateway_upstream_shed_total{upstream="user-service",reason="shadow"}'] == 1, m
        assert s.mock("legacy").stats()["requests"] == 1
        assert s.mock("user-service").stats()["requests"] == 1  # only the holder


def test_queue_without_max_in_flight_rejected():
    d = tempfile.mkdtemp(prefix="gwcheck-if-")
    try:
        conf = {"listen": "127.0.0.1:1", "workers": 1,
                "upstreams": {"legacy": {"endpoints": ["127.0.0.1:9"], "queue": {"max": 5}}},
                "routes": {"source": "file", "file": "routes.json"}}
        with open(os.path.join(d, "gateway.json"), "w") as f:
            json.dump(conf, f)
        with open(os.path.join(d, "routes.json"), "w") as f:
            json.dump({"routes": [{"id": "a", "path": "/**", "upstream": "legacy"}]}, f)
        cp = subprocess.run([os.path.join(ROOT, BUILD, "gateway"), "-c",
                             os.path.join(d, "gateway.json"), "--check"],
                            capture_output=True, text=True, timeout=30)
        line = (cp.stdout + cp.stderr).strip().splitlines()[0]
        assert cp.returncode == 1
        assert line == "%s/gateway.json: upstreams.legacy.queue: needs max_in_flight" % d, line
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_fallback_shed_when_its_upstream_at_limit():
    """The fallback's upstream (legacy) at its max_in_flight: a failing primary's request is
    not replayed there (the client gets the primary's 5xx); with the slot free it is."""
    ups = {"legacy": 1, "user-service": ["--error-rate", "1"]}
    routes = [{"id": "users", "path": "/api/users/**", "upstream": "user-service",
               "rewrite": {"strip_prefix": "/api"}, "fallback": {"upstream": "legacy"}},
              {"id": "legacy", "path": "/**", "upstream": "legacy"}]
    with Stack(upstreams=ups, routes=routes, gw_conf={"upstreams": {"legacy": {"max_in_flight": 1}}}) as s:
        holder = threading.Thread(target=request, args=(s.port, "GET", "/api/orders/1"),
                                  kwargs={"headers": {"X-Mock-Latency-Ms": "1500"}, "timeout": 30})
        holder.start()
        from harness import wait_until
        wait_until(lambda: metrics(s)['gateway_upstream_in_flight{upstream="legacy"}'] == 1,
                   10, "legacy's slot taken")
        st, h, _ = request(s.port, "GET", "/api/users/1")
        assert st == 500 and h["x-gateway-upstream"] == "user-service", (st, h)
        holder.join()
        m = metrics(s)
        assert m['gateway_upstream_shed_total{upstream="legacy",reason="fallback"}'] == 1, m
        st, h, _ = request(s.port, "GET", "/api/users/1")  # the slot is free: it falls back
        assert st == 200 and h["x-gateway-upstream"] == "legacy", (st, h)
        wait_until(lambda: metrics(s)['gateway_upstream_in_flight{upstream="legacy"}'] == 0,
                   10, "legacy's slots released")


def test_composition_max_in_flight():
    """A composition's max_in_flight (composers.json): answers being composed at once in the
    process; above it 503 at once, the legs are not called for the refused ones."""
    import copy
    from test_compose import SHIPPED, comp_stack, healthy
    comps = copy.deepcopy(SHIPPED)
    c = comps["compositions"][0]
    c["max_in_flight"] = 1
    c["deadline_ms"] = 20000
    for leg in c["legs"]:
        leg["timeout_ms"] = 10000
    with comp_stack(healthy(**{"order-service": ["--latency-ms", "1500"]}), comps=comps,
                    alt=()) as s:
        got = _parallel(s.port, 3, 0, path="/api/orders/42/details")
        sts = [g[0] for g in got]
        assert sts == [503, 503, 200], sts
        assert "composition busy" in json.loads(got[0][2])["error"], got[0]
        assert got[0][1]["retry-after"] == "1"
        assert s.mock("order-service").stats()["requests"] == 1
        assert metrics(s)['gateway_route_shed_total{route="%s"}' % c["id"]] == 2
        st, _, _ = request(s.port, "GET", "/api/orders/42/details", timeout=30)
        assert st == 200  # the slot came back
