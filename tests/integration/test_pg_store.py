"""The PostgreSQL route store: two gateways on one database converge on every change made
through either (LISTEN/NOTIFY), keep serving the last good table when PostgreSQL goes away,
start from the cache file while it is down, and reload when it is back."""
import json
import os
import shutil
import subprocess
import time

from harness import BUILD, ROOT, Postgres, Proc, Stack, free_port, request, wait_port, wait_until

TOKEN = "test-token"


def admin(port, method, path, body=None):
    hdr = {"Authorization": "Bearer " + TOKEN}
    data = json.dumps(body).encode() if body is not None else b""
    if data:
        hdr["Content-Type"] = "application/json"
    st, h, b = request(port, method, path, headers=hdr, body=data)
    return st, (json.loads(b) if b.strip() else None)


def version(port):
    st, doc = admin(port, "GET", "/admin/routes")
    assert st == 200, (st, doc)
    return doc["version"]


def migrate(pg):
    cp = subprocess.run([os.path.join(ROOT, BUILD, "gatewayctl"), "db", "migrate", "--pg", pg.conninfo(),
                         "--dir", os.path.join(ROOT, "conf", "sql")], capture_output=True, timeout=60)
    assert cp.returncode == 0, cp.stderr.decode()


class Second:
    """A second gateway with the first one's configuration on other ports."""

    def __init__(self, s, name):
        self.conf = json.loads(json.dumps(s.conf))
        self.port, self.admin_port = free_port(), free_port()
        self.conf["listen"] = "127.0.0.1:%d" % self.port
        self.conf["admin"]["listen"] = "127.0.0.1:%d" % self.admin_port
        self.conf["log"] = {"access": "off"}
        self.path = os.path.join(s.tmp, name + ".json")
        with open(self.path, "w") as f:
            json.dump(self.conf, f)
        self.tmp = s.tmp
        self.name = name
        self.start()

    def start(self):
        self.proc = Proc([os.path.join(ROOT, BUILD, "gateway"), "-c", self.path],
                         os.path.join(self.tmp, self.name + ".log"))
        wait_port(self.port)
        wait_port(self.admin_port)
        # ready once its first table is in force (from the cache file or the database)
        wait_until(lambda: request(self.admin_port, "GET", "/readyz")[0] == 200, 10,
                   "%s ready" % self.name, step=0.01)

    def stop(self):
        return self.proc.stop()


def pg_stack(pg):
    s = Stack(upstreams={"legacy": 1, "order-service": 1}, start=False)
    s.conf["routes"] = {"source": "postgres", "conninfo": pg.conninfo(), "cache_file": "routes.cache.json"}
    s.write()
    s.start()
    wait_until(lambda: request(s.admin_port, "GET", "/readyz")[0] == 200, 10, "gateway ready", step=0.01)
    return s


ORDERS = {"path": "/api/orders/{id}", "upstream": "legacy",
          "rewrites": {"order-service": {"template": "/orders/{id}"}}}


def test_two_instances_converge_and_survive_postgres_going_away():
    with Postgres() as pg:
        migrate(pg)
        with pg_stack(pg) as s:
            b = Second(s, "gw-b")
            try:
                # an empty store: no table yet is a clear 503, and /readyz says not ready
                st, h, body = request(s.port, "GET", "/api/orders/1")
                assert st in (404, 503), (st, body)

                # a change through A is in force on A at once and on B within a second
                t0 = time.time()
                st, doc = admin(s.admin_port, "PUT", "/admin/routes/orders", ORDERS)
                assert st == 200, (st, doc)
                v = doc["version"]
                assert version(s.admin_port) == v
                wait_until(lambda: version(b.admin_port) == v, 1.0, "B at version %d" % v, step=0.01)
                t_b = time.time()
                print("  B converged %.1f ms after A's answer" % ((t_b - t0) * 1000))
                st, h, _ = request(b.port, "GET", "/api/orders/5")
                assert st == 200 and h["x-gateway-upstream"] == "legacy", (st, h)

                # and through B: A follows
                st, doc = admin(b.admin_port, "PATCH", "/admin/routes/orders", {"upstream": "order-service"})
                assert st == 200, (st, doc)
                v2 = doc["version"]
                wait_until(lambda: version(s.admin_port) == v2, 1.0, "A at version %d" % v2)
                st, h, _ = request(s.port, "GET", "/api/orders/6")
                assert st == 200 and h["x-gateway-upstream"] == "order-service", (st, h)
                assert s.mock("order-service").stats()["by_path"].get("/orders/6") == 1

                # a change committed by anyone (psql) reaches both within 100 ms, typically
                t0 = time.time()
                pg.sql("UPDATE gateway_routes SET doc = jsonb_set(doc, '{upstream}', '\"legacy\"') WHERE id = 'orders'")
                for port in (s.port, b.port):
                    wait_until(lambda: request(port, "GET", "/api/orders/7")[1]["x-gateway-upstream"] == "legacy",
                             1.0, "the psql change on :%d" % port)
                print("  psql change in force on both after %.1f ms" % ((time.time() - t0) * 1000))

                # the audit trail holds who did what
                st, hist = admin(s.admin_port, "GET", "/admin/routes/history")
                assert st == 200 and hist["changes"][0]["action"] == "patch", hist
                assert hist["changes"][0]["who"] == "admin"

                # PostgreSQL goes away: both keep serving the last table; changes are refused
                cur = version(s.admin_port)
                pg.pause()
                time.sleep(0.3)
                for port in (s.port, b.port):
                    st, h, _ = request(port, "GET", "/api/orders/8")
                    assert st == 200 and h["x-gateway-upstream"] == "legacy"
                st, doc = admin(s.admin_port, "PATCH", "/admin/routes/orders", {"upstream": "order-service"})
                assert st == 503, (st, doc)

                # B restarts while the database is down: it serves from the cache file
                assert b.stop() == 0
                b.start()
                st, h, _ = request(b.port, "GET", "/api/orders/9")
                assert st == 200 and h["x-gateway-upstream"] == "legacy", (st, h)
                assert version(b.admin_port) == cur

                # the database is back: both reconnect and take changes again
                pg.resume()
                wait_until(lambda: admin(s.admin_port, "PATCH", "/admin/routes/orders",
                                       {"upstream": "order-service"})[0] == 200, 10, "A writing again")
                v3 = version(s.admin_port)
                wait_until(lambda: version(b.admin_port) == v3, 10, "B reconnected at version %d" % v3)
                st, h, _ = request(b.port, "GET", "/api/orders/10")
                assert h["x-gateway-upstream"] == "order-service"
            finally:
                assert b.stop() == 0
