"""Operator-facing behaviour: --check, graceful drain, the access log, environment overrides,
SIGHUP reload. Waits are bounded polls on something observable (a log line, a mockd counter,
a refused connect), never a bare sleep that a passing run depends on."""
import copy
import functools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from harness import BUILD, DEFAULT_ROUTES, ROOT, Stack, connect, free_port, read_response, request, wait_until

GATEWAY = os.path.join(ROOT, BUILD, "gateway")


def run_gateway(args, env=None, timeout=10):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([GATEWAY] + args, cwd=ROOT, env=e, capture_output=True, timeout=timeout)


def first_line(cp):
    text = (cp.stderr or cp.stdout).decode("utf-8", "replace")
    return text.splitlines()[0] if text.strip() else ""


# ---- 6. --check ----------------------------------------------------------------------------

CHECK_DIRS = []


def _check_dir(conf=None, routes=None, raw_conf=None, raw_routes=None):
    """A config dir for --check (removed when the test ends)."""
    d = tempfile.mkdtemp(prefix="gwcheck-")
    CHECK_DIRS.append(d)
    base = {
        "listen": "127.0.0.1:%d" % free_port(),
        "workers": 1,
        "upstreams": {"legacy": {"endpoints": ["127.0.0.1:9101"]},
                      "user-service": {"endpoints": ["127.0.0.1:9102"]}},
        "log": {"access": "access.log"},
        "routes": {"source": "file", "file": "routes.json"},
    }
    if conf is not None:
        base = conf(base) or base
    rts = {"routes": [{"id": "users", "path": "/api/users/**", "upstream": "user-service",
                       "rewrite": {"strip_prefix": "/api"}},
                      {"id": "legacy", "path": "/**", "upstream": "legacy"}]}
    if routes is not None:
        rts = routes(rts) or rts
    cpath = os.path.join(d, "gateway.json")
    with open(cpath, "w") as f:
        f.write(raw_conf if raw_conf is not None else json.dumps(base))
    with open(os.path.join(d, "routes.json"), "w") as f:
        f.write(raw_routes if raw_routes is not None else json.dumps(rts))
    return d, cpath, base


def removes_check_dirs(fn):
    @functools.wraps(fn)
    def run():
        try:
            fn()
        finally:
            while CHECK_DIRS:
                shutil.rmtree(CHECK_DIRS.pop(), ignore_errors=True)
    return run


ERR_LINE = re.compile(r"^(?P<file>[^ ]+): (?P<path>[^:]+): (?P<reason>.+)$")


def _expect_check_error(cpath, file, path_re):
    cp = run_gateway(["-c", cpath, "--check"])
    line = first_line(cp)
    assert cp.returncode == 1, (cp.returncode, cp.stdout, cp.stderr)
    m = ERR_LINE.match(line)
    assert m, "not FILE: json.path: reason: %r" % line
    assert m.group("file") == file, (line, file)
    assert re.fullmatch(path_re, m.group("path")), (line, path_re)
    return line


@removes_check_dirs
def test_ops_check_valid_config_exits_0_and_opens_nothing():
    d, cpath, conf = _check_dir()
    # hold the listen port: --check must not try to bind it
    host, port = conf["listen"].rsplit(":", 1)
    holder = socket.socket()
    holder.bind((host, int(port)))
    holder.listen(1)
    try:
        cp = run_gateway(["-c", cpath, "--check"])
        assert cp.returncode == 0, (cp.returncode, cp.stdout, cp.stderr)
    finally:
        holder.close()
    assert not os.path.exists(os.path.join(d, "access.log")), "--check opened the access log"
    with socket.socket() as probe:
        assert probe.connect_ex((host, int(port))) != 0, "--check left a listener behind"


@removes_check_dirs
def test_ops_check_unknown_upstream_in_route():
    def bad(r):
        r["routes"][0]["upstream"] = "nope"
    d, cpath, _ = _check_dir(routes=bad)
    line = _expect_check_error(cpath, os.path.join(d, "routes.json"), r"routes\[0\]\.upstream")
    assert '"nope"' in line, line


@removes_check_dirs
def test_ops_check_bad_json():
    d, cpath, _ = _check_dir(raw_conf='{"listen": "127.0.0.1:1", ')
    _expect_check_error(cpath, cpath, r"line \d+ column \d+|\(root\)")


@removes_check_dirs
def test_ops_check_missing_listen():
    d, cpath, _ = _check_dir(conf=lambda c: c.pop("listen") and None)
    line = _expect_check_error(cpath, cpath, r"listen")
    assert "required" in line, line


@removes_check_dirs
def test_ops_check_bad_port():
    for listen in ("127.0.0.1:70000", "127.0.0.1:http", "127.0.0.1"):
        d, cpath, _ = _check_dir(conf=lambda c: c.update(listen=listen))
        _expect_check_error(cpath, cpath, r"listen")

    def bad_ep(c):
        c["upstreams"]["legacy"]["endpoints"] = ["127.0.0.1:0"]
    d, cpath, _ = _check_dir(conf=bad_ep)
    _expect_check_error(cpath, cpath, r"upstreams\.legacy\.endpoints(\[0\]|\.0)")


@removes_check_dirs
def test_ops_check_unknown_field():
    d, cpath, _ = _check_dir(conf=lambda c: c.update(bogus=1))
    line = _expect_check_error(cpath, cpath, r"bogus")

    def bad_up(c):
        c["upstreams"]["legacy"]["retries"] = 3
    d, cpath, _ = _check_dir(conf=bad_up)
    _expect_check_error(cpath, cpath, r"upstreams\.legacy\.retries")

    def bad_route(r):
        r["routes"][1]["weight"] = 3
    d, cpath, _ = _check_dir(routes=bad_route)
    _expect_check_error(cpath, os.path.join(d, "routes.json"), r"routes\[1\]\.weight")


@removes_check_dirs
def test_ops_check_routes_file_missing():
    d, cpath, _ = _check_dir(conf=lambda c: c["routes"].update(file="nope.json"))
    cp = run_gateway(["-c", cpath, "--check"])
    line = first_line(cp)
    assert cp.returncode == 1, (cp.returncode, cp.stderr)
    m = ERR_LINE.match(line)
    assert m, "not FILE: json.path: reason: %r" % line
    # either the config names its field, or the routes file names itself
    assert (m.group("file") == cpath and m.group("path") == "routes.file") or \
        m.group("file") == os.path.join(d, "nope.json"), line


@removes_check_dirs
def test_ops_check_duplicate_route_id():
    def dup(r):
        r["routes"][1]["id"] = "users"
    d, cpath, _ = _check_dir(routes=dup)
    line = _expect_check_error(cpath, os.path.join(d, "routes.json"), r"routes\[1\]\.id")
    assert "duplicate" in line, line


# ---- 7. graceful drain -----------------------------------------------------------------

def test_ops_sigterm_drains_inflight_then_exits_0():
    with Stack(upstreams={"legacy": 1}, routes=[{"id": "all", "path": "/**", "upstream": "legacy"}],
               gw_conf={"shutdown": {"drain_timeout_ms": 10000}}) as s:
        idle = connect(s.port)  # a keep-alive client between requests
        idle.sendall(b"GET /echo/first HTTP/1.1\r\nHost: x\r\n\r\n")
        r, _ = read_response(idle)
        assert r.status == 200
        slow = connect(s.port)
        slow.sendall(b"GET /echo/slow HTTP/1.1\r\nHost: x\r\nX-Mock-Latency-Ms: 1500\r\n\r\n")
        wait_until(lambda: s.mock("legacy").stats()["by_path"].get("/echo/slow"), 5, "mockd to get the slow request")

        t0 = time.time()
        os.kill(s.gw.pid, signal.SIGTERM)

        def refused():
            try:
                c = socket.create_connection(("127.0.0.1", s.port), timeout=0.5)
            except (ConnectionRefusedError, ConnectionResetError):
                return True  # a connect caught in the backlog as the listener closes is reset
            c.close()
            return False
        wait_until(refused, 1.0, "new connections to be refused after SIGTERM")
        assert time.time() - t0 < 1.4, "listener still open while the slow request was in flight"

        idle.settimeout(3)
        try:
            assert idle.recv(1) == b"", "an idle keep-alive connection got bytes during drain"
        except ConnectionResetError:
            pass
        idle.close()

        slow.settimeout(5)
        r, _ = read_response(slow)
        slow.close()
        assert r.status == 200, (r.status, r.body)
        assert json.loads(r.body)["url"] == "/echo/slow"
        assert (r.header("connection") or "").lower() == "close", r.headers

        rc = s.gw.p.wait(timeout=5)
        took = time.time() - t0
        assert rc == 0, rc
        assert took < 5, "exit took %.2fs (deadline 10 s): drain waited for nothing" % took
        assert "draining" in s.gw.output()


def test_ops_sigterm_drain_deadline_cuts_hung_request():
    with Stack(upstreams={"legacy": 1}, routes=[{"id": "all", "path": "/**", "upstream": "legacy"}],
               gw_conf={"shutdown": {"drain_timeout_ms": 300}}) as s:
        hung = connect(s.port)
        hung.sendall(b"GET /echo/hang HTTP/1.1\r\nHost: x\r\nX-Mock-Hang: 1\r\n\r\n")
        wait_until(lambda: s.mock("legacy").stats()["by_path"].get("/echo/hang"), 5, "mockd to get the hung request")
        t0 = time.time()
        os.kill(s.gw.pid, signal.SIGTERM)
        rc = s.gw.p.wait(timeout=5)
        took = time.time() - t0
        assert rc == 0, rc
        assert 0.25 <= took < 2.5, took
        hung.settimeout(2)
        data = b""
        try:
            while True:
                d = hung.recv(65536)
                if not d:
                    break
                data += d
        except ConnectionResetError:
            pass
        hung.close()
        assert not data.startswith(b"HTTP/1.1 200"), data[:200]


# ---- 8. access log -------------------------------------------------------------------------

LOG_KEYS = {"time", "request_id", "client", "method", "proto", "path", "route", "upstream", "status",
            "bytes_in", "bytes_out", "upstream_ms", "total_ms"}


def read_log(path):
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read().decode("utf-8")
    return [json.loads(l) for l in data.splitlines() if l.strip()]


def test_ops_access_log_one_json_line_per_request():
    routes = [{"id": "users", "path": "/api/users/**", "upstream": "user-service", "rewrite": {"strip_prefix": "/api"}},
              {"id": "echo", "path": "/echo/**", "upstream": "legacy"}]
    with Stack(routes=routes) as s:
        st, h, body1 = request(s.port, "GET", "/api/users/7?x=1", headers={"X-Request-Id": "log-1"})
        assert st == 200
        payload = b"p" * 1000
        st, h, body2 = request(s.port, "POST", "/echo/p", headers={"X-Request-Id": "log-2"}, body=payload)
        assert st == 200
        st, h, body3 = request(s.port, "GET", "/nope", headers={"X-Request-Id": "log-3"})
        assert st == 404
        wait_until(lambda: len(read_log(s.access_log)) >= 3, 5, "3 access log lines")
        time.sleep(0.5)  # two more flush periods: nothing else may appear
        lines = read_log(s.access_log)
        assert len(lines) == 3, lines
        by_id = {l["request_id"]: l for l in lines}
        assert set(by_id) == {"log-1", "log-2", "log-3"}, lines
        for l in lines:
            assert LOG_KEYS <= set(l), LOG_KEYS - set(l)
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)", l["time"]), l["time"]
            assert l["client"].startswith("127.0.0.1"), l["client"]
            assert isinstance(l["total_ms"], (int, float)) and l["total_ms"] >= 0, l

        a = by_id["log-1"]
        assert a["method"] == "GET" and a["path"].startswith("/api/users/7"), a
        assert a["route"] == "users" and a["upstream"] == "user-service" and a["status"] == 200, a
        assert a["bytes_out"] >= len(body1), (a, len(body1))
        assert isinstance(a["upstream_ms"], (int, float)) and 0 <= a["upstream_ms"] <= a["total_ms"], a

        b = by_id["log-2"]
        assert b["method"] == "POST" and b["path"] == "/echo/p", b
        assert b["route"] == "echo" and b["upstream"] == "legacy" and b["status"] == 200, b
        assert b["bytes_in"] >= len(payload), b
        assert b["bytes_out"] >= len(body2), b

        c = by_id["log-3"]
        assert c["status"] == 404 and c["upstream"] == "gateway" and c["upstream_ms"] is None, c
        assert c["path"] == "/nope", c


def test_ops_access_log_keepalive_requests_each_logged():
    with Stack(routes=[{"id": "all", "path": "/**", "upstream": "legacy"}]) as s:
        c = connect(s.port)
        for i in range(5):
            c.sendall(b"GET /echo/%d HTTP/1.1\r\nHost: x\r\nX-Request-Id: ka-%d\r\n\r\n" % (i, i))
            r, _ = read_response(c)
            assert r.status == 200
        c.close()
        wait_until(lambda: len(read_log(s.access_log)) >= 5, 5, "5 access log lines")
        time.sleep(0.5)
        lines = read_log(s.access_log)
        assert [l["request_id"] for l in lines] == ["ka-%d" % i for i in range(5)], lines
        assert [l["path"] for l in lines] == ["/echo/%d" % i for i in range(5)], lines


def test_ops_access_log_line_for_request_cut_by_client():
    """A client that leaves mid-response is still a request: it gets its line."""
    with Stack(routes=[{"id": "all", "path": "/**", "upstream": "legacy"}]) as s:
        c = connect(s.port)
        c.sendall(b"GET /bytes/200000000 HTTP/1.1\r\nHost: x\r\nX-Request-Id: cut-1\r\n\r\n")
        got = b""
        while b"\r\n\r\n" not in got:
            got += c.recv(65536)
        assert got.startswith(b"HTTP/1.1 200"), got[:100]
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()  # RST mid-body
        # a request after it, on a fresh connection, is logged in any case
        assert request(s.port, "GET", "/echo/after", headers={"X-Request-Id": "after-1"})[0] == 200
        wait_until(lambda: any(l["request_id"] == "after-1" for l in read_log(s.access_log)), 5,
                 "the next request's log line")
        time.sleep(0.5)
        ids = [l["request_id"] for l in read_log(s.access_log)]
        assert "cut-1" in ids, "no access log line for the request the client cut: %r" % ids


# ---- 9. environment overrides ----------------------------------------------------------------

def test_ops_env_gateway_listen_moves_listener():
    new_port = free_port()
    s = Stack(upstreams={"legacy": 1}, routes=[{"id": "all", "path": "/**", "upstream": "legacy"}],
              start=False, env={"GATEWAY_LISTEN": "127.0.0.1:%d" % new_port})
    conf_port = s.port
    s.port = new_port
    s.start()
    with s:
        st, h, body = request(new_port, "GET", "/echo/env")
        assert st == 200, (st, body)
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", conf_port)) != 0, "the file's listen address is open too"


def test_ops_env_empty_gateway_listen_is_unset():
    with Stack(upstreams={"legacy": 1}, routes=[{"id": "all", "path": "/**", "upstream": "legacy"}],
               env={"GATEWAY_LISTEN": ""}) as s:
        assert request(s.port, "GET", "/echo/x")[0] == 200


def test_ops_env_invalid_gateway_listen_exits_1():
    s = Stack(upstreams={"legacy": 1}, start=False)
    try:
        for bad in ("not-an-address", "127.0.0.1:99999", "127.0.0.1:"):
            for extra in ([], ["--check"]):
                cp = run_gateway(["-c", s.conf_path] + extra, env={"GATEWAY_LISTEN": bad}, timeout=10)
                line = first_line(cp)
                assert cp.returncode == 1, (bad, extra, cp.returncode, line)
                assert line.startswith("env GATEWAY_LISTEN: "), (bad, line)
                assert len(line) > len("env GATEWAY_LISTEN: "), line
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", s.port)) != 0
    finally:
        s.stop()


# ---- 10. SIGHUP reload -------------------------------------------------------------------

def _hup_and_wait(s, marker):
    before = s.gw.output().count(marker)
    os.kill(s.gw.pid, signal.SIGHUP)
    wait_until(lambda: s.gw.output().count(marker) > before, 5, "%r in the gateway log" % marker)


def test_ops_sighup_reloads_routes():
    # users -> user-service (strip /api), the rest -> legacy; a copy: the test edits it
    with Stack(routes=copy.deepcopy(DEFAULT_ROUTES)) as s:
        st, h, _ = request(s.port, "GET", "/api/users/1")
        assert st == 200 and h["x-gateway-upstream"] == "user-service"
        s.routes["routes"][0]["upstream"] = "legacy"
        s.write()
        _hup_and_wait(s, "routes reloaded")
        st, h, _ = request(s.port, "GET", "/api/users/1")
        assert st == 200 and h["x-gateway-upstream"] == "legacy", h
        assert s.mock("legacy").stats()["by_path"] == {"/users/1": 1}
        assert s.mock("user-service").stats()["requests"] == 1


def test_ops_sighup_invalid_routes_rejected_old_table_serves():
    with Stack(routes=copy.deepcopy(DEFAULT_ROUTES)) as s:
        routes_path = os.path.join(s.tmp, "routes.json")
        s.routes["routes"][0]["upstream"] = "no-such-upstream"
        s.write()
        _hup_and_wait(s, "reload rejected")
        line = [l for l in s.gw.output().splitlines() if "reload rejected" in l][-1]
        assert routes_path in line and "routes[0].upstream" in line, line
        st, h, _ = request(s.port, "GET", "/api/users/2")
        assert st == 200 and h["x-gateway-upstream"] == "user-service", h

        with open(routes_path, "w") as f:
            f.write('{"routes": [')
        _hup_and_wait(s, "reload rejected")
        line = [l for l in s.gw.output().splitlines() if "reload rejected" in l][-1]
        assert routes_path in line, line
        st, h, _ = request(s.port, "GET", "/api/users/3")
        assert st == 200 and h["x-gateway-upstream"] == "user-service", h
        assert s.mock("user-service").stats()["by_path"] == {"/users/2": 1, "/users/3": 1}
