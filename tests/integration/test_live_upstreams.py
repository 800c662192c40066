"""Upstreams are live (issue 12 section 0): defined in the routes source next to the routes,
changed through /admin/upstreams/{name} without a restart, validated with the routes that use
them, audited, and in force like a route change: a request in flight keeps the definition it
started with, and the pools of a replaced definition drain (idle connections closed at once,
busy ones closed after their answer instead of being pooled).

The pool behaviour is watched from the upstream's side: a small keep-alive HTTP server here
records every connection it accepted and when the gateway closed it."""
import json
import os
import socket
import threading
import time

from harness import BUILD, ROOT, Mockd, Proc, Skip, Stack, free_port, metrics, request, wait_port, wait_until

import subprocess

GATEWAY = os.path.join(ROOT, BUILD, "gateway")
AUTH = {"Authorization": "Bearer test-token"}


def admin(s, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else b""
    hs = dict(AUTH)
    if body is not None:
        hs["Content-Type"] = "application/json"
    st, h, b = request(s.admin_port, method, path, headers=hs, body=data)
    return st, (json.loads(b) if b.strip() else None)


class WatchedUpstream:
    """HTTP/1.1 keep-alive server answering NAME as the body. /slow/* answers after 0.6 s.
    Records accepted connections and which of them the peer closed."""

    def __init__(self, name):
        self.name = name
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.accepted = 0
        self.closed = 0
        self.requests = 0
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = c.recv(65536)
                    if not d:
                        with self.lock:
                            self.closed += 1
                        return
                    buf += d
                head, _, buf = buf.partition(b"\r\n\r\n")
                path = head.split(b" ")[1]
                with self.lock:
                    self.requests += 1
                if path.startswith(b"/slow/"):
                    time.sleep(0.6)
                body = self.name.encode()
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
                          % (len(body), body))
        except OSError:
            with self.lock:
                self.closed += 1
        finally:
            c.close()

    def counts(self):
        with self.lock:
            return self.accepted, self.closed, self.requests

    def stop(self):
        self.stopping = True
        self.sock.close()


def keepalive_get(port, path, n):
    """N GETs on one client connection; returns the bodies."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    out = []
    try:
        buf = b""
        for _ in range(n):
            s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
            while b"\r\n\r\n" not in buf:
                buf += s.recv(65536)
            head, _, buf = buf.partition(b"\r\n\r\n")
            cl = int([l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
            while len(buf) < cl:
                buf += s.recv(65536)
            out.append(buf[:cl].decode())
            buf = buf[cl:]
    finally:
        s.close()
    return out


def test_upstream_added_used_and_removed_through_the_admin_api():
    """PUT adds an upstream (no restart), a route is flipped to it and traffic arrives there;
    the routes file and the history carry it; DELETE of an upstream still in use is 409 naming
    the referrers; once unused, DELETE removes it. Fails without the change: PUT is 404."""
    routes = [{"id": "users", "path": "/api/users/**", "upstream": "legacy"},
              {"id": "legacy", "path": "/**", "upstream": "legacy"}]
    with Stack(upstreams={"legacy": 1}, routes=routes) as s:
        new = Mockd(s.tmp, "new-service")
        try:
            st, b = admin(s, "PUT", "/admin/upstreams/new-service",
                          {"endpoints": ["127.0.0.1:%d" % new.port], "connect_timeout_ms": 500})
            assert st == 200, (st, b)
            st, b = admin(s, "GET", "/admin/upstreams/new-service")
            assert st == 200 and b["source"] == "routes", b
            assert b["definition"]["endpoints"] == ["127.0.0.1:%d" % new.port], b
            st, b = admin(s, "GET", "/admin/upstreams")
            names = {u["name"]: u["source"] for u in b["upstreams"]}
            assert names == {"legacy": "gateway.json", "new-service": "routes"}, names
            with open(os.path.join(s.tmp, "routes.json")) as f:
                disk = json.load(f)
            assert disk["upstreams"]["new-service"]["endpoints"] == ["127.0.0.1:%d" % new.port], disk

            # a cutover plan towards it (step 0: a shadow) names it too
            st, b = admin(s, "POST", "/admin/cutovers", {"route": "users", "target": "new-service"})
            assert st == 200, (st, b)
            st, b = admin(s, "DELETE", "/admin/upstreams/new-service")
            assert st == 409 and b["referrers"] == ['cutovers["users"].target'], (st, b)
            st, b = admin(s, "GET", "/admin/upstreams/new-service")
            assert b["used_by"] == ['routes["users"].shadow', 'cutovers["users"].target'], b
            st, b = admin(s, "POST", "/admin/cutovers/users/abort", {})
            assert st == 200, (st, b)
            new.reset()

            st, b = admin(s, "PATCH", "/admin/routes/users", {"upstream": "new-service"})
            assert st == 200, (st, b)
            st, h, body = request(s.port, "GET", "/api/users/1")
            assert st == 200 and h["x-gateway-upstream"] == "new-service", (st, h, body)
            assert new.stats()["requests"] == 1

            # in use: 409, naming what uses it
            st, b = admin(s, "DELETE", "/admin/upstreams/new-service")
            assert st == 409, (st, b)
            assert b["referrers"] == ['routes["users"].upstream'], b
            assert "new-service" in b["error"], b
            # a definition that does not validate: 422 with the path of the bad field
            st, b = admin(s, "PATCH", "/admin/upstreams/new-service", {"endpoints": ["nope"]})
            assert st == 422 and "upstreams.new-service.endpoints[0]: invalid address" in b["error"], b
            st, b = admin(s, "PATCH", "/admin/upstreams/new-service", {"max_in_flight": 5})
            assert st == 422 and "upstreams.new-service.max_in_flight: only in gateway.json" in b["error"], b

            st, b = admin(s, "PATCH", "/admin/routes/users", {"upstream": "legacy"})
            assert st == 200, (st, b)
            st, b = admin(s, "DELETE", "/admin/upstreams/new-service")
            assert st == 200, (st, b)
            st, b = admin(s, "GET", "/admin/upstreams/new-service")
            assert st == 404, (st, b)
            st, b = admin(s, "DELETE", "/admin/upstreams/legacy")
            assert st == 409 and "gateway.json" in b["error"], (st, b)

            st, b = admin(s, "GET", "/admin/routes/history")
            ups = [(c["action"], c["who"], c.get("upstream")) for c in b["changes"] if c.get("upstream")]
            assert ups == [("upstream-delete", "admin", "new-service"),
                           ("upstream-put", "admin", "new-service")], ups
        finally:
            new.proc.stop()


def test_upstream_change_drains_pools_in_flight_request_keeps_its_definition():
    """svc moves from A to B while a slow request is in flight on A: that request is answered
    by A, then its connection is closed rather than pooled; A's idle pooled connection is
    closed at once; new requests go to B. Fails without the pool drain (A's connections stay
    open for the pool's idle timeout, 30 s)."""
    a, b = WatchedUpstream("A"), WatchedUpstream("B")
    routes = [{"id": "svc", "path": "/**", "upstream": "svc"}]
    try:
        with Stack(upstreams={"legacy": 1}, routes=routes, start=False) as s:
            s.routes["upstreams"] = {"svc": {"endpoints": ["127.0.0.1:%d" % a.port]}}
            s.write()
            s.start()
            # two connections to A in the pool: two slow requests at once
            ts = [threading.Thread(target=request, args=(s.port, "GET", "/slow/%d" % i)) for i in range(2)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(5)
            assert a.counts() == (2, 0, 2), a.counts()
            # a third slow request takes one of them; the other stays idle in the pool
            slow = {}
            t = threading.Thread(target=lambda: slow.update(r=request(s.port, "GET", "/slow/3")))
            t.start()
            wait_until(lambda: a.counts()[2] == 3, 5, "the slow request reached A")
            st, body = admin(s, "PUT", "/admin/upstreams/svc", {"endpoints": ["127.0.0.1:%d" % b.port]})
            assert st == 200, (st, body)
            assert keepalive_get(s.port, "/y", 2) == ["B", "B"]
            # the idle one is closed at once
            wait_until(lambda: a.counts()[1] >= 1, 5, "A's idle pooled connection closed")
            t.join(5)
            st, h, body = slow["r"]
            assert st == 200 and body == b"A", (st, body)  # the definition it started with
            # the busy one finished its answer and was then closed, not pooled
            wait_until(lambda: a.counts()[1] == 2, 5, "A's busy connection closed")
            assert keepalive_get(s.port, "/z", 1) == ["B"]
            assert a.counts() == (2, 2, 3), a.counts()
    finally:
        a.stop()
        b.stop()


def test_routes_file_upstreams_win_over_gateway_json_and_are_checked():
    """A routes-file definition of a gateway.json upstream wins; deleting it goes back to
    gateway.json's. gateway --check reports a bad routes-file upstream as FILE: path: reason."""
    with Stack(upstreams={"legacy": 1}, routes=[{"id": "all", "path": "/**", "upstream": "legacy"}],
               start=False) as s:
        other = Mockd(s.tmp, "other")
        try:
            s.routes["upstreams"] = {"legacy": {"endpoints": ["127.0.0.1:%d" % other.port]}}
            s.write()
            cp = subprocess.run([GATEWAY, "-c", s.conf_path, "--check"], capture_output=True, timeout=20)
            assert cp.returncode == 0, cp.stderr
            s.start()
            request(s.port, "GET", "/a")
            assert other.stats()["requests"] == 1 and s.mock("legacy").stats()["requests"] == 0
            st, b = admin(s, "DELETE", "/admin/upstreams/legacy")
            assert st == 200, (st, b)
            request(s.port, "GET", "/a")
            assert s.mock("legacy").stats()["requests"] == 1 and other.stats()["requests"] == 1
        finally:
            other.proc.stop()
        rpath = os.path.join(s.tmp, "routes.json")
        for ups, want in (
                ({"user-service": {"endpoints": ["127.0.0.1:99999"]}},
                 ': upstreams.user-service.endpoints[0]: invalid port "99999"'),
                ({"user-service": {"endpoints": []}},
                 ": upstreams.user-service.endpoints: must be a non-empty array"),
                ({"bad name": {"endpoints": ["127.0.0.1:1"]}}, ": upstreams: invalid upstream name"),
                ({"svc": {"endpoints": ["127.0.0.1:1"], "queue": {"max": 1}}},
                 ": upstreams.svc.queue: only in gateway.json")):
            with open(rpath, "w") as f:
                json.dump({"upstreams": ups, "routes": [{"id": "all", "path": "/**", "upstream": "legacy"}]}, f)
            cp = subprocess.run([GATEWAY, "-c", s.conf_path, "--check"], capture_output=True, timeout=20)
            line = cp.stderr.decode().splitlines()[0]
            assert cp.returncode == 1 and line.startswith(rpath + want), (line, want)
        # a route naming an upstream that only the routes file defines is valid
        with open(rpath, "w") as f:
            json.dump({"upstreams": {"svc": {"endpoints": ["127.0.0.1:1"]}},
                       "routes": [{"id": "all", "path": "/**", "upstream": "svc"}]}, f)
        cp = subprocess.run([GATEWAY, "-c", s.conf_path, "--check"], capture_output=True, timeout=20)
        assert cp.returncode == 0, cp.stderr


def test_gatewayctl_upstreams_commands():
    """gatewayctl upstreams set/list/show/delete drive /admin/upstreams; routes history shows
    the upstream change with who and action."""
    ctl = os.path.join(ROOT, BUILD, "gatewayctl")
    with Stack(upstreams={"legacy": 1}, routes=[{"id": "all", "path": "/**", "upstream": "legacy"}]) as s:
        def run(*args):
            cp = subprocess.run([ctl, "--admin", "http://127.0.0.1:%d" % s.admin_port, "--token",
                                 "test-token"] + list(args), capture_output=True, timeout=20)
            return cp.returncode, cp.stdout.decode(), cp.stderr.decode()
        port = s.mock("legacy").port
        rc, out, err = run("upstreams", "set", "svc", "127.0.0.1:%d,localhost:%d" % (port, port))
        assert rc == 0 and out.startswith("svc: changed"), (rc, out, err)
        rc, out, err = run("upstreams", "list")
        lines = [l.split() for l in out.splitlines()]
        assert lines[0] == ["NAME", "SOURCE", "ENDPOINTS", "USED", "BY"], out
        assert ["legacy", "gateway.json", "127.0.0.1:%d" % port, 'routes["all"].upstream,legacy_upstream'] in lines, out
        assert ["svc", "routes", "127.0.0.1:%d,localhost:%d" % (port, port), "-"] in lines, out
        rc, out, err = run("upstreams", "set", "svc", "--json", '{"endpoints": ["127.0.0.1:%d"], "host": "svc.internal"}' % port)
        assert rc == 0, (out, err)
        rc, out, err = run("upstreams", "show", "svc")
        assert rc == 0 and json.loads(out)["definition"]["host"] == "svc.internal", out
        rc, out, err = run("upstreams", "delete", "legacy")
        assert rc == 1 and "gateway.json" in err, (rc, out, err)
        rc, out, err = run("upstreams", "delete", "svc")
        assert rc == 0 and out.startswith("svc: removed"), (rc, out, err)
        rc, out, err = run("upstreams", "set", "svc")
        assert rc == 2, (rc, out, err)
        rc, out, err = run("routes", "history")
        rows = [l for l in out.splitlines() if "upstream svc" in l]
        assert len(rows) == 3 and "upstream-delete" in rows[0] and "admin" in rows[0], out


def test_upstream_with_a_non_pem_ca_file_is_refused():
    """A tls.ca_file that loads no CA certificate is refused with the definition (the client
    context is built where the definition is read), naming the field; before, the PUT was
    accepted and every connection to the upstream failed with 502."""
    import tempfile
    with Stack(upstreams={"legacy": 1}, routes=[{"id": "all", "path": "/**", "upstream": "legacy"}]) as s:
        with tempfile.NamedTemporaryFile("w", suffix=".pem") as f:
            f.write("this is not a certificate\n")
            f.flush()
            st, doc = admin(s, "PUT", "/admin/upstreams/secure",
                            {"endpoints": ["127.0.0.1:%d" % s.mock("legacy").port],
                             "tls": {"ca_file": f.name}})
            assert st == 422 and "upstreams.secure.tls.ca_file: " in doc["error"] and \
                "no CA certificate" in doc["error"], (st, doc)
            st, doc = admin(s, "GET", "/admin/upstreams/secure")
            assert st == 404, (st, doc)


def test_gatewayctl_upstreams_set_puts_only_when_missing():
    """gatewayctl upstreams set NAME ENDPOINTS defines the upstream (PUT) only when the GET
    answers 404: any other answer (here a 503) fails without replacing a definition it could
    not read."""
    import http.server
    seen = []

    class H(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            seen.append(self.command)
            n = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(n)
            body = b'{"error": "busy"}'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        do_GET = do_PUT = do_PATCH = _answer

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        ctl = os.path.join(ROOT, BUILD, "gatewayctl")
        cp = subprocess.run([ctl, "--admin", "http://127.0.0.1:%d" % srv.server_address[1], "--token",
                             "test-token", "upstreams", "set", "svc", "127.0.0.1:9"],
                            capture_output=True, timeout=20)
        err = cp.stderr.decode()
        assert cp.returncode == 1 and "HTTP 503" in err, (cp.returncode, err)
        assert seen == ["GET"], seen
    finally:
        srv.shutdown()
        srv.server_close()


# ---- names re-resolved in the background ------------------------------------------------------
#
# The gateway runs in its own mount namespace (util-linux unshare -m, as root) where a hosts
# file and an nsswitch.conf ("hosts: files") of this test are bind-mounted over /etc's: the
# test then moves a name by rewriting that file, with no DNS server, no network and nothing of
# the machine's /etc touched. glibc reads the hosts file on every lookup. Where unshare or
# the bind mount is not allowed the test is skipped (harness.Skip).

def _unshare_works(tmp):
    probe = os.path.join(tmp, "probe")
    with open(probe, "w") as f:
        f.write("127.0.0.1 probe.test\n")
    try:
        cp = subprocess.run(["unshare", "-m", "sh", "-c",
                             'mount --bind "$0" /etc/hosts && getent hosts probe.test', probe],
                            capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return cp.returncode == 0 and b"probe.test" in cp.stdout


def test_endpoint_names_re_resolved_every_address_used_last_good_kept():
    """svc.test resolves to 127.0.0.1 and ::1: both get requests (round robin over every
    address). Moved to 127.0.0.2 in the hosts file: the traffic follows without a restart.
    Removed from it: the lookup fails (counted), the last good address stays in use. Fails
    without the background resolver: only the load-time address (127.0.0.1) is ever used."""
    with Stack(upstreams={"legacy": 1}, routes=[{"id": "all", "path": "/**", "upstream": "svc"}],
               start=False) as s:
        if os.geteuid() != 0 or not _unshare_works(s.tmp):
            raise Skip("unshare -m with a bind-mounted /etc/hosts is not available here")
        port = free_port()
        mocks = {}
        for key, listen in (("v4", "127.0.0.1"), ("v6", "[::1]"), ("moved", "127.0.0.2")):
            m = Mockd.__new__(Mockd)
            m.port, m.name = port, key
            m.proc = Proc([os.path.join(ROOT, BUILD, "mockd"), "--listen", "%s:%d" % (listen, port),
                           "--name", key], os.path.join(s.tmp, "mockd-%s.log" % key))
            mocks[key] = m
        s.mocks["svc"] = list(mocks.values())  # stopped with the stack
        hosts = os.path.join(s.tmp, "hosts")
        nss = os.path.join(s.tmp, "nsswitch.conf")
        with open(nss, "w") as f:
            f.write("hosts: files\n")

        def write_hosts(lines):
            with open(hosts, "w") as f:  # in place: the bind mount sees the same file
                f.write("127.0.0.1 localhost\n" + "".join(l + "\n" for l in lines))
        write_hosts(["127.0.0.1 svc.test", "::1 svc.test"])
        s.routes["upstreams"] = {"svc": {"endpoints": ["svc.test:%d" % port], "resolve_ms": 100}}
        s.write()
        s.gw = Proc(["unshare", "-m", "sh", "-c",
                     'mount --bind "$0" /etc/hosts && mount --bind "$1" /etc/nsswitch.conf && '
                     'shift 1 && exec "$@"', hosts, nss, os.path.join(ROOT, BUILD, "gateway"),
                     "-c", s.conf_path], os.path.join(s.tmp, "gateway.log"))
        wait_port(s.port)
        wait_port(s.admin_port)
        for m in mocks.values():
            wait_until(lambda: _stats(m) is not None, 5, "mockd %s up" % m.name)

        def served():
            return {k: _stats(m)["requests"] for k, m in mocks.items()}
        # both addresses of the name are used
        wait_until(lambda: request(s.port, "GET", "/echo/x")[0] == 200 and
                   served()["v4"] > 0 and served()["v6"] > 0, 10, "requests on both addresses")
        assert served()["moved"] == 0
        key = 'gateway_upstream_resolved_addresses{endpoint="svc.test:%d"}' % port
        assert metrics(s)[key] == 2, metrics(s)

        # the name moves: the traffic follows
        write_hosts(["127.0.0.2 svc.test"])
        wait_until(lambda: request(s.port, "GET", "/echo/x")[0] == 200 and served()["moved"] > 0, 10,
                   "requests on the moved address")
        before = served()
        for _ in range(10):
            assert request(s.port, "GET", "/echo/y")[0] == 200
        after = served()
        assert after["moved"] - before["moved"] == 10, (before, after)
        assert metrics(s)[key] == 1

        # the name is gone: lookups fail, the last good address stays in use
        failed0 = metrics(s)['gateway_upstream_resolutions_total{result="failed"}']
        write_hosts([])
        wait_until(lambda: metrics(s)['gateway_upstream_resolutions_total{result="failed"}'] > failed0,
                   10, "a failed lookup counted")
        before = served()
        for _ in range(5):
            assert request(s.port, "GET", "/echo/z")[0] == 200
        assert served()["moved"] - before["moved"] == 5
        out = s.gw.output()
        assert "resolve svc.test:%d failed" % port in out and "stay in use" in out, out[-2000:]


def _stats(m):
    """mockd M's /__stats, asked at the address it listens on (None while it is not up)."""
    host = {"v4": "127.0.0.1", "v6": "::1", "moved": "127.0.0.2"}[m.name]
    try:
        c = socket.create_connection((host, m.port), timeout=5)
    except OSError:
        return None
    try:
        c.sendall(b"GET /__stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            d = c.recv(65536)
            if not d:
                break
            data += d
    finally:
        c.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return json.loads(body) if head.split(b" ")[1] == b"200" else None


# ---- the PostgreSQL store ----------------------------------------------------------------------

def test_pg_store_keeps_upstreams_after_migration_000003():
    """Before migration 000003 an upstream change answers 501 (the store would drop it).
    Migrated while the gateways run (its NOTIFY makes them load again), a PUT through A is
    stored in gateway_upstreams with its audit row and in force on B too; a route moved to it
    is served by it on both; DELETE while in use is 409; migrating down is refused while an
    upstream is stored."""
    from harness import Postgres
    from test_pg_store import Second, pg_stack

    def migrate(pg, *extra, rc=0):
        cp = subprocess.run([os.path.join(ROOT, BUILD, "gatewayctl"), "db", "migrate", "--pg", pg.conninfo(),
                             "--dir", os.path.join(ROOT, "conf", "sql")] + list(extra),
                            capture_output=True, timeout=60)
        assert cp.returncode == rc, cp.stderr.decode()
        return cp.stderr.decode()

    with Postgres() as pg:
        migrate(pg, "--to", "2")
        with pg_stack(pg) as s:
            b = Second(s, "gw-b")
            try:
                svc = {"endpoints": ["127.0.0.1:%d" % s.mock("order-service").port]}
                st, doc = admin(s, "PUT", "/admin/upstreams/svc", svc)
                assert st == 501 and "000003" in doc["error"], (st, doc)
                migrate(pg)
                wait_until(lambda: admin(s, "PUT", "/admin/upstreams/svc", svc)[0] == 200, 10,
                           "A storing upstreams after the migration")
                st, doc = admin(s, "PUT", "/admin/routes/orders",
                                {"path": "/api/orders/{id}", "upstream": "svc",
                                 "rewrite": {"template": "/orders/{id}"}})
                assert st == 200, (st, doc)
                v = doc["version"]
                rows = pg.sql("SELECT name || ' ' || (doc->'endpoints'->>0) FROM gateway_upstreams")
                assert rows.strip() == "svc 127.0.0.1:%d" % s.mock("order-service").port, rows
                sb = {"admin_port": b.admin_port}
                wait_until(lambda: admin(type("B", (), sb), "GET", "/admin/routes")[1]["version"] >= v,
                           5, "B at version %d" % v)
                for port in (s.port, b.port):
                    st, h, _ = request(port, "GET", "/api/orders/3")
                    assert st == 200 and h["x-gateway-upstream"] == "svc", (port, st, h)
                st, doc = admin(type("B", (), sb), "GET", "/admin/upstreams/svc")
                assert st == 200 and doc["source"] == "routes", doc
                st, doc = admin(s, "DELETE", "/admin/upstreams/svc")
                assert st == 409 and doc["referrers"] == ['routes["orders"].upstream'], (st, doc)
                st, hist = admin(s, "GET", "/admin/routes/history")
                ups = [(c["action"], c["upstream"]) for c in hist["changes"] if c.get("upstream")]
                assert ups == [("upstream-put", "svc")], hist
                # the down migration is refused while upstreams are stored (a route naming
                # one would fail every load); once they are deleted it runs, and the gateways
                # read without the table again (changes 501)
                err = migrate(pg, "--down", "--to", "2", rc=1)
                assert "gateway_upstreams is not empty" in err, err
                assert pg.sql("SELECT count(*) FROM gateway_upstreams").strip() == "1"
                assert admin(s, "DELETE", "/admin/routes/orders")[0] == 200
                assert admin(s, "DELETE", "/admin/upstreams/svc")[0] == 200
                migrate(pg, "--down", "--to", "2")
                wait_until(lambda: admin(s, "PUT", "/admin/upstreams/svc", svc)[0] == 501, 10,
                           "A back to no upstream table")
            finally:
                assert b.stop() == 0
