"""Rate limits (issue 13 §1): a route's "rate_limit" {rate, per, burst, key} is a GCRA limit
per key (client_ip, header:NAME or the whole route). Over it: 429 with the gateway's JSON
error, Retry-After, RateLimit-Policy / RateLimit and X-RateLimit-*; counted in /metrics per
route, key class, mode and result. Without Redis the limit is the process's (all workers
share it); with Redis it is exact across instances.

The limits here use a long period ("per": "1h") so that nothing refills during a test: the
number of requests that pass is exactly the burst, whatever the machine's speed. What reached
the upstream is proven by mockd's /__stats."""
import json
import os
import socket
import subprocess
import threading

from harness import BUILD, ROOT, Stack, connect, metrics, read_response, request


def limited_routes(rate_limit, extra=None):
    r = {"id": "limited", "path": "/api/users/**", "upstream": "user-service",
         "rewrite": {"strip_prefix": "/api"}, "rate_limit": rate_limit}
    r.update(extra or {})
    return [r, {"id": "legacy", "path": "/**", "upstream": "legacy"}]


def keepalive_statuses(port, n, path="/api/users/1", headers=None):
    """N GETs on one keep-alive connection; returns the list of (status, headers dict)."""
    s = connect(port)
    out = []
    buf = b""
    try:
        extra = "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
        for _ in range(n):
            s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (path, extra)).encode())
            r, buf = read_response(s, buf=buf)
            out.append((r.status, {k.lower(): v for k, v in r.headers}, r.body))
    finally:
        s.close()
    return out


def rl_metric(m, route, result, mode="local", key="client_ip"):
    return m.get('gateway_ratelimit_requests_total{route="%s",key="%s",mode="%s",result="%s"}'
                 % (route, key, mode, result), 0)


def test_local_limit_429_headers_and_metrics():
    with Stack(routes=limited_routes({"rate": 1, "per": "1h", "burst": 5})) as s:
        got = keepalive_statuses(s.port, 8)
        assert [g[0] for g in got] == [200] * 5 + [429] * 3, [g[0] for g in got]
        st, h, body = got[5]
        doc = json.loads(body)
        assert doc["status"] == 429 and doc["error"] == "rate limit exceeded", doc
        assert doc["request_id"] == h["x-request-id"], (doc, h)
        assert h["content-type"] == "application/json"
        assert h["x-gateway-upstream"] == "gateway"
        # 1 per hour, 5 at once: the next request is due in 3600 s, the whole burst in 5 h
        assert h["retry-after"] == "3600", h
        assert h["ratelimit-policy"] == '"limited";q=1;w=3600', h
        assert h["ratelimit"] == '"limited";r=0;t=18000', h
        assert (h["x-ratelimit-limit"], h["x-ratelimit-remaining"], h["x-ratelimit-reset"]) == \
            ("1", "0", "18000"), h
        assert s.mock("user-service").stats()["requests"] == 5
        # another route is not limited
        assert request(s.port, "GET", "/other")[0] != 429
        assert s.mock("legacy").stats()["requests"] == 1
        m = metrics(s)
        assert rl_metric(m, "limited", "allowed") == 5, m
        assert rl_metric(m, "limited", "limited") == 3, m


def test_local_limit_by_header_and_route_keys():
    routes = limited_routes({"rate": 1, "per": "1h", "burst": 2, "key": "header:X-Api-Key"})
    routes.insert(1, {"id": "whole", "path": "/api/orders/**", "upstream": "user-service",
                      "rate_limit": {"rate": 1, "per": "1h", "burst": 3, "key": "route"}})
    with Stack(routes=routes) as s:
        a = [g[0] for g in keepalive_statuses(s.port, 4, headers={"X-Api-Key": "a"})]
        b = [g[0] for g in keepalive_statuses(s.port, 4, headers={"X-Api-Key": "b"})]
        none = [g[0] for g in keepalive_statuses(s.port, 4)]  # no header: one shared key
        assert a == b == none == [200, 200, 429, 429], (a, b, none)
        # "route": every client counts against the same limit
        w = [request(s.port, "GET", "/api/orders/%d" % i, headers={"X-Api-Key": str(i)})[0]
             for i in range(5)]
        assert w == [200, 200, 200, 429, 429], w
        m = metrics(s)
        assert rl_metric(m, "limited", "limited", key="header") == 6, m
        assert rl_metric(m, "whole", "allowed", key="route") == 3, m


def test_local_limit_is_per_process_across_workers():
    """Four workers, new connections spread by SO_REUSEPORT: still exactly the burst."""
    with Stack(routes=limited_routes({"rate": 1, "per": "1h", "burst": 20}), workers=4) as s:
        res = []
        lock = threading.Lock()

        def client():
            for _ in range(15):
                st = request(s.port, "GET", "/api/users/7")[0]
                with lock:
                    res.append(st)
        ts = [threading.Thread(target=client) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert sorted(set(res)) == [200, 429], res
        assert res.count(200) == 20, res.count(200)
        assert s.mock("user-service").stats()["requests"] == 20


def _check(routes):
    import tempfile
    d = tempfile.mkdtemp(prefix="gwcheck-rl-")
    try:
        conf = {"listen": "127.0.0.1:1", "workers": 1,
                "upstreams": {"legacy": {"endpoints": ["127.0.0.1:9"]}},
                "routes": {"source": "file", "file": "routes.json"}}
        with open(os.path.join(d, "gateway.json"), "w") as f:
            json.dump(conf, f)
        with open(os.path.join(d, "routes.json"), "w") as f:
            json.dump({"routes": routes}, f)
        cp = subprocess.run([os.path.join(ROOT, BUILD, "gateway"), "-c",
                             os.path.join(d, "gateway.json"), "--check"],
                            capture_output=True, text=True, timeout=30)
        return cp.returncode, (cp.stdout + cp.stderr).strip().splitlines()[0], d
    finally:
        import shutil
        shutil.rmtree(d, ignore_errors=True)


def test_bad_rate_limit_config_rejected_with_file_route_field():
    base = {"id": "a", "path": "/**", "upstream": "legacy"}
    for rl, field, reason in [
            ({"rate": 0}, "rate_limit.rate", "must be an integer from 1 to 1000000"),
            ({"rate": 5, "key": "cookie:sid"}, "rate_limit.key", "unknown key kind"),
            ({"rate": 5, "per": "fortnight"}, "rate_limit.per", "must be a duration")]:
        rc, line, d = _check([dict(base, rate_limit=rl)])
        assert rc == 1, (rl, rc, line)
        want = "%s/routes.json: routes[0].%s: %s" % (d, field, reason)
        assert line.startswith(want), (line, want)
