"""The router: one decision per request, then one handler (composition, cached lookup,
proxy) gets that request's body, drain and abort. Each handler lets go of its state when
its client leaves; a connection carries requests for different handlers in turn."""
import json
import socket
import struct
import time

from harness import connect, metrics, read_response, request, wait_until
from test_cache import cache_stack, m_cache, user_calls


def req_bytes(method, path, headers=(), body=b""):
    hs = [("Host", "gw.test")] + list(headers)
    if body:
        hs.append(("Content-Length", str(len(body))))
    raw = "%s %s HTTP/1.1\r\n" % (method, path) + "".join("%s: %s\r\n" % kv for kv in hs) + "\r\n"
    return raw.encode("latin-1") + body


def log_lines(s):
    with open(s.access_log) as f:
        return [json.loads(l) for l in f if l.strip()]


def test_client_leaving_during_cached_lookup_miss():
    """Clients of a cached route leave while the lookup's upstream fetch is under way (six
    on one key, coalesced; four on keys of their own): each is logged as 499, and the fetch
    goes on for the cache — the next GET of each key costs no second upstream call. Under
    GW_VALGRIND=1 the gateway's exit shows nothing of theirs was leaked."""
    with cache_stack(user_args=["--latency-ms", "1000"]) as s:
        clients = []
        for i in range(10):
            c = connect(s.port)
            uid = 7 if i < 6 else i + 2  # 7 x6, then 8, 9, 10, 11
            c.sendall(req_bytes("GET", "/api/users/%d" % uid))
            clients.append(c)
        # every lookup is under way: 5 misses (one per key) and 5 joined the one on key 7
        wait_until(lambda: (lambda m: m_cache(m, "miss") == 5 and
                            m.get("gateway_cache_coalesced_total", 0) == 5)(metrics(s)),
                   20, "the ten lookups to start")
        for i, c in enumerate(clients):
            if i % 2:  # abortive close (RST)
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
        gone = wait_until(lambda: [e for e in log_lines(s) if e.get("status") == 499] if
                          len([e for e in log_lines(s) if e.get("status") == 499]) == 10 else None,
                          20, "ten 499 lines")
        assert all(e.get("route") == "users" for e in gone), gone
        assert s.gw.p.poll() is None, "gateway died:\n" + s.gw.output()[-2000:]
        for uid in (7, 8, 11):
            # the first one joins the fetch still under way or hits what it stored
            st, h, _ = request(s.port, "GET", "/api/users/%d" % uid)
            assert st == 200 and h.get("x-cache") in ("MISS", "HIT"), (uid, st, h)
            st, h, b = request(s.port, "GET", "/api/users/%d" % uid)
            assert st == 200 and h.get("x-cache") == "HIT", (uid, st, h)
            assert json.loads(b)["id"] == str(uid), b
            assert user_calls(s, uid) == 1, (uid, s.mock("user-service").stats())


def test_one_connection_carries_requests_for_every_handler():
    """Pipelined on one connection, in one write: a composition, a cached GET, a proxied POST
    with a body, a composition again, a dot-segment path the router refuses, and a proxied GET.
    Each is answered in order by its own handler: the handler chosen for one request does not
    stay on the connection for the next."""
    with cache_stack(composers=True) as s:
        body = b'{"note":"pipelined"}'
        data = (req_bytes("GET", "/api/orders/1/details") +
                req_bytes("GET", "/api/users/3") +
                req_bytes("POST", "/echo/post", [("Content-Type", "application/json")], body) +
                req_bytes("GET", "/api/orders/2/details") +
                req_bytes("GET", "/api/%2e%2e/admin") +
                req_bytes("GET", "/api/orders/2"))
        c = connect(s.port, timeout=15)
        c.sendall(data)
        rs, rest = [], b""
        for _ in range(6):
            r, rest = read_response(c, buf=rest)
            rs.append(r)
        c.close()
        assert rest == b""
        comp1, cached, post, comp2, dots, proxied = rs
        for r, oid in ((comp1, "1"), (comp2, "2")):
            assert r.status == 200 and r.header("x-gateway-upstream") == "gateway", (r.status, r.headers)
            d = r.json()
            assert d["order"]["id"] == oid and d["degraded"] == [], d
        assert cached.status == 200 and cached.header("x-cache") == "MISS", (cached.status, cached.headers)
        assert cached.json()["id"] == "3"
        assert post.status == 200 and post.header("x-gateway-upstream") == "legacy", (post.status, post.headers)
        d = post.json()
        assert d["method"] == "POST" and d["url"] == "/echo/post" and d["body_bytes"] == len(body), d
        assert dots.status == 400, (dots.status, dots.body)
        assert proxied.status == 200 and proxied.header("x-gateway-upstream") == "order-service"
        assert proxied.json()["id"] == "2"
