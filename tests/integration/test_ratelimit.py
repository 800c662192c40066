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
        # the allowed answers carry the same headers (no Retry-After), counting down: after
        # the i-th of 5 at once, 4-i would still pass; the whole burst is back in i+1 hours
        for i, (st, h, _) in enumerate(got[:5]):
            assert "retry-after" not in h, h
            assert h["ratelimit-policy"] == '"limited";q=1;w=3600', h
            assert h["ratelimit"] == '"limited";r=%d;t=%d' % (4 - i, 3600 * (i + 1)), (i, h)
            assert (h["x-ratelimit-limit"], h["x-ratelimit-remaining"],
                    h["x-ratelimit-reset"]) == ("1", str(4 - i), str(3600 * (i + 1))), (i, h)
        # another route is not limited, and its answers carry no rate-limit headers
        st, hs, _ = request(s.port, "GET", "/other")
        assert st != 429 and not [k for k in hs if "ratelimit" in k], hs
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


def test_default_rate_limit_from_gateway_json():
    """rate_limits.default applies to every route without its own rate_limit; a route's own
    wins. The default counts per route (each route has its own buckets)."""
    routes = limited_routes({"rate": 1, "per": "1h", "burst": 1})
    conf = {"rate_limits": {"default": {"rate": 1, "per": "1h", "burst": 3}}}
    with Stack(routes=routes, gw_conf=conf) as s:
        own = [g[0] for g in keepalive_statuses(s.port, 3)]
        dflt = [g[0] for g in keepalive_statuses(s.port, 5, "/other")]
        assert own == [200, 429, 429], own
        assert [x == 429 for x in dflt] == [False] * 3 + [True] * 2, dflt
        got = keepalive_statuses(s.port, 1, "/other")[0]
        assert got[1]["ratelimit-policy"] == '"legacy";q=1;w=3600', got[1]
        m = metrics(s)
        assert rl_metric(m, "legacy", "limited") == 3, m


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


# ---- shared through Redis -----------------------------------------------------------------

def _redis():
    from test_cache import RedisServer
    return RedisServer()


def _redis_cmd(r, *args):
    from test_cache import resp
    return resp(r.port, *args)


def _shared_conf(r, instances=2, timeout_ms=50):
    return {"redis": "127.0.0.1:%d" % r.port,
            "rate_limits": {"instances": instances, "timeout_ms": timeout_ms}}


def _wait_mode(s, mode, workers):
    from harness import wait_until
    wait_until(lambda: metrics(s).get('gateway_ratelimit_workers{mode="%s"}' % mode) == workers,
               15, "%d worker(s) in rate-limit mode %s" % (workers, mode))


def _start_with_h2c(s):
    """Starts the unstarted Stack S with an h2c (HTTP/2 prior knowledge) listener beside its
    own; returns that listener's port (S is stopped when it cannot start)."""
    from harness import free_port, wait_port
    try:
        h2c = free_port()
        del s.conf["listen"]
        s.conf["listeners"] = [{"listen": "127.0.0.1:%d" % s.port},
                               {"listen": "127.0.0.1:%d" % h2c, "h2c": True}]
        s.write()
        s.start()
        wait_port(h2c)
        return h2c
    except Exception:
        s.stop()
        raise


def _script_calls(commandstats):
    """Script calls (EVALSHA + EVAL) in Redis's INFO commandstats text."""
    return sum(int(line.split("calls=")[1].split(",")[0])
               for line in commandstats.splitlines()
               if line.startswith(("cmdstat_evalsha:", "cmdstat_eval:")))


def _load(ports, n_per_thread, threads_per_port=2, path="/api/users/1", conns=4):
    """Keep-alive GETs from several threads against each port; returns the list of statuses."""
    res = []
    lock = threading.Lock()

    def client(port):
        out = []
        for _ in range(conns):
            out += [g[0] for g in keepalive_statuses(port, n_per_thread // conns, path)]
        with lock:
            res.extend(out)
    ts = [threading.Thread(target=client, args=(p,)) for p in ports for _ in range(threads_per_port)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return res


def test_shared_limit_exact_across_two_instances():
    """Two gateways (two workers each) on one Redis: 10,000 requests against one limit of
    burst 5,000 (1 per hour: nothing refills) - exactly 5,000 pass, spread over both (the
    issue's bar: within 1 % over 10,000 requests). Under ThreadSanitizer, which slows the
    gateway 5-15x, a quarter of it: what it checks there is the threads, not the count."""
    from harness import TSAN
    total = 2400 if TSAN else 10000  # a multiple of 16: 2 ports x 2 threads x 4 connections
    burst = total // 2
    r = _redis()
    routes = limited_routes({"rate": 1, "per": "1h", "burst": burst, "key": "route"})
    # a generous answer deadline: on a loaded box an answer later than 50 ms would be decided
    # by the fallback share (which has buckets of its own), and this test is about exactness
    conf = _shared_conf(r, timeout_ms=2000)
    try:
        with Stack(routes=routes, gw_conf=conf, workers=2) as a, \
                Stack(routes=routes, gw_conf=conf, workers=2) as b:
            _wait_mode(a, "shared", 2)
            _wait_mode(b, "shared", 2)
            res = _load([a.port, b.port], total // 4)
            assert len(res) == total and set(res) <= {200, 429}, sorted(set(res))
            passed = res.count(200)
            print("  shared limit: %d of %d passed (limit %d)" % (passed, total, burst))
            fb = [rl_metric(metrics(x), "limited", res_, "fallback", "route")
                  for x in (a, b) for res_ in ("allowed", "limited")]
            assert abs(passed - burst) <= burst // 100, (passed, "fallback decisions", fb)  # 1 %
            assert passed == burst, (passed, fb)  # and in fact exact: Redis decides every one
            ua = a.mock("user-service").stats()["requests"]
            ub = b.mock("user-service").stats()["requests"]
            assert ua + ub == burst and ua > 0 and ub > 0, (ua, ub)
            ma, mb = metrics(a), metrics(b)
            assert rl_metric(ma, "limited", "allowed", "shared", "route") + \
                rl_metric(mb, "limited", "allowed", "shared", "route") == burst
            assert rl_metric(ma, "limited", "allowed", "fallback", "route") == 0
            # the bucket is one Redis key, named by route, key class and value
            assert _redis_cmd(r, "EXISTS", "gw:rl:limited:route:") == 1
    finally:
        r.close()


def test_shared_limit_survives_script_flush():
    """SCRIPT FLUSH (or a restarted Redis) makes EVALSHA answer NOSCRIPT: that request is sent
    again as EVAL, which loads the script; the limit stays shared and exact."""
    r = _redis()
    try:
        with Stack(routes=limited_routes({"rate": 1, "per": "1h", "burst": 4}),
                   gw_conf=_shared_conf(r, timeout_ms=2000)) as s:
            _wait_mode(s, "shared", 1)
            first = keepalive_statuses(s.port, 2)
            assert _redis_cmd(r, "SCRIPT", "FLUSH") == "OK"
            rest = keepalive_statuses(s.port, 4)
            got = first + rest
            assert [g[0] for g in got] == [200] * 4 + [429] * 2, [g[0] for g in got]
            # allowed answers carry the remaining count the script decided
            assert [g[1]["x-ratelimit-remaining"] for g in got] == \
                ["3", "2", "1", "0", "0", "0"], [g[1] for g in got]
            assert got[1][1]["ratelimit"] == '"limited";r=2;t=7200', got[1][1]
            m = metrics(s)
            assert rl_metric(m, "limited", "allowed", "shared") == 4, m
            assert rl_metric(m, "limited", "limited", "shared") == 2, m
            assert rl_metric(m, "limited", "allowed", "fallback") == 0, m
    finally:
        r.close()


def test_redis_killed_mid_load_falls_back_to_local_share():
    """Redis killed under load: no 5xx and no 429 storm (a generous limit keeps passing
    everything); /metrics and the log say fallback; a tight limit then holds at burst /
    instances per instance; Redis back: shared again."""
    r = _redis()
    routes = limited_routes({"rate": 1, "per": "1h", "burst": 1000000, "key": "route"})
    routes.insert(1, {"id": "tight", "path": "/api/orders/**", "upstream": "user-service",
                      "rate_limit": {"rate": 1, "per": "1h", "burst": 10, "key": "route"}})
    try:
        with Stack(routes=routes, gw_conf=_shared_conf(r, instances=2), workers=2) as s:
            _wait_mode(s, "shared", 2)
            stop = threading.Event()
            seen = []

            def loader():
                while not stop.is_set():
                    seen.extend(g[0] for g in keepalive_statuses(s.port, 50))
            ts = [threading.Thread(target=loader) for _ in range(3)]
            for t in ts:
                t.start()
            try:
                from harness import wait_until
                wait_until(lambda: len(seen) > 300, 30, "load before the kill")
                r.kill()
                _wait_mode(s, "fallback", 2)
                n_kill = len(seen)
                wait_until(lambda: len(seen) > n_kill + 300, 30, "load after the kill")
            finally:
                stop.set()
                for t in ts:
                    t.join()
            assert set(seen) == {200}, sorted(set(seen))  # no 5xx, no 429 storm
            m = metrics(s)
            assert rl_metric(m, "limited", "allowed", "fallback", "route") > 0, m
            # the tight limit in fallback: burst 10 / 2 instances = 5 in this instance
            tight = [g[0] for g in keepalive_statuses(s.port, 8, "/api/orders/1")]
            assert tight == [200] * 5 + [429] * 3, tight
            assert "limits fall back to rate/2 per instance" in s.gw.output()
            r.start()
            _wait_mode(s, "shared", 2)
            assert "connected again: limits are shared" in s.gw.output()
            m0 = rl_metric(metrics(s), "tight", "allowed", "shared", "route")
            assert request(s.port, "GET", "/api/orders/1")[0] == 200  # a fresh shared bucket
            assert rl_metric(metrics(s), "tight", "allowed", "shared", "route") == m0 + 1
    finally:
        r.close()


def test_redis_hung_requests_decided_locally_within_timeout():
    """Redis stopped (SIGSTOP: connected, answering nothing): requests are decided by the
    local share after rate_limits.timeout_ms, none fails; SIGCONT: shared again."""
    import signal
    import time
    r = _redis()
    try:
        with Stack(routes=limited_routes({"rate": 1, "per": "1h", "burst": 100000}),
                   gw_conf=_shared_conf(r, timeout_ms=100)) as s:
            _wait_mode(s, "shared", 1)
            os.kill(r.p.pid, signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                got = [g[0] for g in keepalive_statuses(s.port, 20)]
                took = time.monotonic() - t0
            finally:
                os.kill(r.p.pid, signal.SIGCONT)
            assert got == [200] * 20, got
            print("  20 requests with Redis hung: %.3f s" % took)
            m = metrics(s)
            assert rl_metric(m, "limited", "allowed", "fallback") == 20, m
            _wait_mode(s, "shared", 1)
    finally:
        r.close()


def test_allowed_headers_over_http2():
    """An HTTP/2 client (h2c, curl --http2-prior-knowledge) gets the same rate-limit fields on
    its allowed answers and on the 429."""
    s = Stack(routes=limited_routes({"rate": 1, "per": "1h", "burst": 2}), start=False)
    h2c = _start_with_h2c(s)
    with s:
        got = []
        for _ in range(3):
            r = subprocess.run(["curl", "-sS", "--max-time", "10", "-D", "-", "-o", os.devnull,
                                "--http2-prior-knowledge",
                                "http://127.0.0.1:%d/api/users/1" % h2c],
                               capture_output=True, timeout=20)
            assert r.returncode == 0, r.stderr
            lines = [ln for ln in r.stdout.decode("latin-1").split("\r\n") if ln]
            assert lines[0].startswith("HTTP/2 "), lines
            got.append((int(lines[0].split()[1]),
                        {k.strip().lower(): v.strip() for k, _, v in
                         (ln.partition(":") for ln in lines[1:])}))
        assert [g[0] for g in got] == [200, 200, 429], got
        assert [g[1].get("x-ratelimit-remaining") for g in got] == ["1", "0", "0"], got
        assert got[0][1]["ratelimit"] == '"limited";r=1;t=3600', got[0]
        assert got[0][1]["ratelimit-policy"] == '"limited";q=1;w=3600', got[0]


def test_shared_limit_batches_a_turns_checks_exactly():
    """The checks a worker gets in one loop turn go to Redis as one script call (per batch of
    up to 128; per slot in a cluster): 100 requests on one HTTP/2 connection (their HEADERS
    arrive together) over two routes with shared limits of burst 20 and 30 - exactly 20 and
    30 pass, in a handful of script calls rather than 100."""
    r = _redis()
    routes = [
        {"id": "one", "path": "/api/users/1", "upstream": "user-service",
         "rewrite": {"strip_prefix": "/api"},
         "rate_limit": {"rate": 1, "per": "1h", "burst": 20, "key": "route"}},
        {"id": "two", "path": "/api/users/2", "upstream": "user-service",
         "rewrite": {"strip_prefix": "/api"},
         "rate_limit": {"rate": 1, "per": "1h", "burst": 30, "key": "route"}},
        {"id": "legacy", "path": "/**", "upstream": "legacy"}]
    s = Stack(routes=routes, gw_conf=_shared_conf(r, instances=1, timeout_ms=2000), workers=1,
              start=False)
    try:
        h2c = _start_with_h2c(s)
    except Exception:
        r.close()
        raise
    try:
        with s:
            _wait_mode(s, "shared", 1)
            uris = os.path.join(s.tmp, "uris.txt")
            with open(uris, "w") as f:
                for i in range(100):
                    f.write("http://127.0.0.1:%d/api/users/%d\n" % (h2c, 1 + i % 2))
            _redis_cmd(r, "CONFIG", "RESETSTAT")
            p = subprocess.run(["h2load", "-n", "100", "-c", "1", "-m", "100", "-i", uris],
                               capture_output=True, timeout=60)
            out = p.stdout.decode("utf-8", "replace")
            assert p.returncode == 0, out + p.stderr.decode()
            assert "status codes: 50 2xx, 0 3xx, 50 4xx, 0 5xx" in out, out
            m = metrics(s)
            assert rl_metric(m, "one", "allowed", "shared", "route") == 20, m
            assert rl_metric(m, "two", "allowed", "shared", "route") == 30, m
            assert rl_metric(m, "one", "limited", "shared", "route") == 30, m
            assert rl_metric(m, "two", "limited", "shared", "route") == 20, m
            stats = _redis_cmd(r, "INFO", "commandstats").decode()
            calls = _script_calls(stats)
            print("  100 checks in %d script calls (heartbeats included)" % calls)
            # one per turn that carried HEADERS, plus a NOSCRIPT retry and heartbeats
            assert 1 <= calls <= 25, stats
            assert _redis_cmd(r, "GET", "gw:rl:one:route:") is not None
    finally:
        r.close()


def test_shared_limit_redis_key_names():
    """A bucket's Redis key is gw:rl:ROUTE:CLASS:VALUE; a value over 200 bytes is replaced by
    '#' and its 64-bit hash in 16 hex digits (the key stays short; clients stay apart)."""
    r = _redis()
    routes = limited_routes({"rate": 1, "per": "1h", "burst": 5, "key": "header:X-Api-Key"})
    try:
        with Stack(routes=routes, gw_conf=_shared_conf(r, instances=1, timeout_ms=2000),
                   workers=1) as s:
            _wait_mode(s, "shared", 1)
            long_key = "k" * 300
            for key in ("alice", long_key, long_key + "x"):
                got = keepalive_statuses(s.port, 1, headers={"X-Api-Key": key})
                assert got[0][0] == 200, got
            keys = sorted(k.decode() if isinstance(k, bytes) else k
                          for k in _redis_keys(r, "gw:rl:limited:*"))
            assert "gw:rl:limited:h:alice" in keys, keys
            hashed = [k for k in keys if k.startswith("gw:rl:limited:h:#")]
            assert len(hashed) == 2, keys
            for k in hashed:
                assert len(k) == len("gw:rl:limited:h:#") + 16, k
                int(k[-16:], 16)
    finally:
        r.close()


def _redis_keys(r, pattern):
    """KEYS PATTERN over RESP (an array of bulk strings)."""
    import socket as so
    with so.create_connection(("127.0.0.1", r.port), timeout=2) as c:
        c.sendall(b"*2\r\n$4\r\nKEYS\r\n$%d\r\n%s\r\n" % (len(pattern), pattern.encode()))
        buf = b""
        while True:
            buf += c.recv(65536)
            lines = buf.split(b"\r\n")
            n = int(lines[0][1:])
            if len(lines) >= 1 + 2 * n + 1:
                return [lines[2 + 2 * i] for i in range(n)]


def test_shared_limit_batches_with_hundreds_outstanding():
    """Redis paused for a second while 400 HTTP/2 requests arrive on one limited route: every
    batch holds many requests of one key and more checks are outstanding than the limiter
    keeps for reuse (256), so waits are really freed as batches are answered. All 400 are
    decided by Redis, once each (a batch used to read its key's limit from a wait it had
    already let go: ASan reported a use-after-free)."""
    r = _redis()
    routes = [
        {"id": "one", "path": "/api/users/1", "upstream": "user-service",
         "rewrite": {"strip_prefix": "/api"},
         "rate_limit": {"rate": 1, "per": "1h", "burst": 1000, "key": "route"}},
        {"id": "legacy", "path": "/**", "upstream": "legacy"}]
    s = Stack(routes=routes, gw_conf=_shared_conf(r, instances=1, timeout_ms=5000), workers=1,
              start=False)
    try:
        h2c = _start_with_h2c(s)
    except Exception:
        r.close()
        raise
    try:
        with s:
            _wait_mode(s, "shared", 1)
            _redis_cmd(r, "CONFIG", "RESETSTAT")
            _redis_cmd(r, "CLIENT", "PAUSE", "1000", "ALL")
            p = subprocess.run(["h2load", "-n", "400", "-c", "4", "-m", "100",
                                "http://127.0.0.1:%d/api/users/1" % h2c],
                               capture_output=True, timeout=60)
            out = p.stdout.decode("utf-8", "replace")
            assert p.returncode == 0, out + p.stderr.decode()
            assert "status codes: 400 2xx, 0 3xx, 0 4xx, 0 5xx" in out, out
            m = metrics(s)
            assert rl_metric(m, "one", "allowed", "shared", "route") == 400, m
            assert rl_metric(m, "one", "allowed", "fallback", "route") == 0, m
            # Redis counted each exactly once: 600 of the burst of 1,000 are left
            got = subprocess.run(["curl", "-sS", "-D", "-", "-o", os.devnull,
                                  "http://127.0.0.1:%d/api/users/1" % s.port],
                                 capture_output=True, timeout=20).stdout.decode("latin-1")
            assert "X-RateLimit-Remaining: 599\r\n" in got, got
            # one batch out at a time: what came in while Redis was paused went in batches
            # of up to 128 once it answered (heartbeats and a NOSCRIPT retry included)
            stats = _redis_cmd(r, "INFO", "commandstats").decode()
            calls = _script_calls(stats)
            print("  400 checks with Redis paused: %d script calls" % calls)
            assert calls <= 12, stats
    finally:
        r.close()
