"""WebSocket and other upgrades (issue 11 §3): a route's "upgrade" lets a client switch
protocols through the gateway; on the upstream's 101 the two connections become a tunnel
(http/tunnel.c) with backpressure, its own idle timeout, a graceful close on drain, and open
tunnels counted per route and upstream (/metrics, /admin/routes/{id}). Clients: Python's
`websockets` (Debian's python3-websockets) and raw sockets; upstream: mockd's /ws echo."""
import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import ssl
import sys
import time

sys.path.append("/usr/lib/python3/dist-packages")  # Debian's python3-websockets
import websockets  # noqa: E402

from harness import (Stack, connect, free_port, metrics, read_response, request,  # noqa: E402
                     wait_port, wait_until, SLACK_SCALE)
from test_tls import CA  # noqa: E402

TOKEN = {"Authorization": "Bearer test-token"}
UPS = {"legacy": 1, "user-service": 1, "pair": 1}


def routes(**chat):
    r = {"id": "chat", "path": "/chat/**", "upstream": "user-service", "upgrade": ["WebSocket"],
         "rewrite": {"template": "/ws/{**}"}}
    r.update(chat)
    return [
        r,
        # no "upgrade": an Upgrade header is hop-by-hop, the request plain HTTP/1.1
        {"id": "plain", "path": "/plain/**", "upstream": "user-service",
         "rewrite": {"template": "/ws/{**}"}},
        # every policy that could send an upgrade elsewhere or twice
        {"id": "policies", "path": "/pol/**", "upstream": "user-service", "upgrade": ["websocket"],
         "rewrite": {"template": "/ws/{**}"}, "shadow": {"upstream": "legacy", "percent": 100},
         "fallback": {"upstream": "legacy", "on": ["5xx", "connect"]}},
        {"id": "cached", "path": "/cached/**", "upstream": "user-service", "upgrade": ["websocket"],
         "rewrite": {"template": "/ws/{**}"}, "cache": True},
        {"id": "pair", "path": "/pair/**", "upstream": "pair", "upgrade": ["websocket"],
         "rewrite": {"template": "/ws/{**}"}, "fallback": {"upstream": "legacy", "on": ["connect"]}},
        {"id": "legacy", "path": "/**", "upstream": "legacy"},
    ]


def dead_port():
    p = free_port()  # nothing listens there: connect is refused
    return "127.0.0.1:%d" % p


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20 * SLACK_SCALE))


async def closed(ws, timeout=10):
    """Waits for WS to close, with no message first: its ConnectionClosed."""
    try:
        m = await asyncio.wait_for(ws.recv(), timeout)
    except websockets.exceptions.ConnectionClosed as e:
        return e
    raise AssertionError("a message came: %r" % m[:80])


def active(s, route="chat", upstream="user-service"):
    return metrics(s).get('gateway_tunnels_active{route="%s",upstream="%s"}' % (route, upstream), 0)


def admin_tunnels(s, route="chat"):
    st, _, body = request(s.admin_port, "GET", "/admin/routes/" + route, headers=TOKEN)
    assert st == 200, (st, body)
    return json.loads(body)


def ws_key():
    return base64.b64encode(os.urandom(16)).decode()


def upgrade_head(path, extra=""):
    return ("GET %s HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n" % (path, ws_key(), extra)).encode()


def read_head(sock):
    """Reads up to the end of a response head; returns (status, {name: value}, rest)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        assert d, "closed before a response head: %r" % buf
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    hs = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        hs[k.strip().lower()] = v.strip()
    return int(lines[0].split()[1]), hs, rest


def masked_frame(payload, opcode=2):
    mask = os.urandom(4)
    n = len(payload)
    h = bytes([0x80 | opcode])
    if n < 126:
        h += bytes([0x80 | n])
    elif n < 65536:
        h += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        h += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return h + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(payload))


def test_tunnel_websocket_echo_rewrite_counts_and_tls():
    """ws:// and wss:// (TLS listener) echo through the gateway: the route's rewrite applies
    to the upgrade request (mockd saw /ws/...), the 101 names the protocol and carries the
    gateway's headers, the access log line says 101, and the open tunnel is counted in
    /metrics and /admin/routes/{id} (and read back to 0 when it closes)."""
    import tempfile
    d = tempfile.mkdtemp(prefix="gwtun-")
    ca = CA(d)
    cf, kf = ca.leaf("localhost", ["localhost"])
    s = Stack(upstreams=UPS, routes=routes(), start=False)
    s.tls_port = free_port()
    del s.conf["listen"]
    s.conf["listeners"] = [{"listen": "127.0.0.1:%d" % s.port},
                           {"listen": "127.0.0.1:%d" % s.tls_port,
                            "tls": {"certificates": [{"cert": cf, "key": kf}]}}]
    s.write()
    try:
        with s:
            s.start()
            wait_port(s.tls_port)
            ctx = ssl.create_default_context(cafile=ca.pem)

            async def session(url, **kw):
                async with websockets.connect(url, **kw) as ws:
                    h = ws.response_headers
                    assert h["x-mock-ws-path"] == "/ws/room/1", dict(h)  # rewritten
                    assert h["upgrade"].lower() == "websocket" and h["x-gateway-upstream"] == "user-service", dict(h)
                    assert h.get("x-request-id"), dict(h)
                    await ws.send("hello")
                    assert await ws.recv() == "hello"
                    big = os.urandom(300000)
                    await ws.send(big)
                    assert await ws.recv() == big
                    # open: counted
                    assert active(s) == 1, metrics(s)
                    doc = admin_tunnels(s)
                    assert doc["tunnels"] == {"user-service": 1} and doc["upgrade"] == ["websocket"], doc
                    await ws.send("again")
                    assert await ws.recv() == "again"

            run(session("ws://127.0.0.1:%d/chat/room/1" % s.port))
            wait_until(lambda: active(s) == 0, 5, "the tunnel count back to 0")
            run(session("wss://localhost:%d/chat/room/1" % s.tls_port, ssl=ctx))
            wait_until(lambda: active(s) == 0, 5, "the TLS tunnel count back to 0")
            m = metrics(s)
            assert m['gateway_tunnels_total{route="chat",upstream="user-service"}'] == 2, m
            assert admin_tunnels(s)["tunnels"] == {"user-service": 0}
            wait_until(lambda: s.mock("user-service").stats()["ws_open"] == 0, 5, "mockd's side closed")
            # a PUT of what GET shows keeps "upgrade" (and drops the read-only "tunnels")
            doc = admin_tunnels(s)
            doc["tunnel_idle_timeout_ms"] = 12345
            st, _, body = request(s.admin_port, "PUT", "/admin/routes/chat", headers=TOKEN,
                                  body=json.dumps(doc).encode())
            assert st == 200, (st, body)
            st, _, body = request(s.admin_port, "PATCH", "/admin/routes/chat", headers=TOKEN,
                                  body=b'{"max_body_bytes": 1000}')
            assert st == 200, (st, body)
            doc = admin_tunnels(s)
            assert doc["upgrade"] == ["websocket"] and doc["tunnel_idle_timeout_ms"] == 12345, doc
            with open(os.path.join(s.tmp, "routes.json")) as f:  # the routes writer keeps both
                on_disk = [r for r in json.load(f)["routes"] if r["id"] == "chat"][0]
            assert on_disk["upgrade"] == ["websocket"] and on_disk["tunnel_idle_timeout_ms"] == 12345, on_disk
            def chat_lines():  # the access log is written off the loop
                with open(s.access_log) as f:
                    return [json.loads(l) for l in f if '"route":"chat"' in l]
            wait_until(lambda: len(chat_lines()) >= 2, 5, "the access log lines")
            assert [l["status"] for l in chat_lines()[:2]] == [101, 101], chat_lines()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_tunnel_refusals_stay_http():
    """Without "upgrade" the request goes as plain HTTP/1.1 (mockd sees no Upgrade and says
    400) and the connection carries the next request; an upstream refusing the upgrade (403)
    is passed on and the connection stays HTTP; a 101 to a request that did not ask for an
    upgrade is a 502, on a route with or without "upgrade"."""
    with Stack(upstreams=UPS, routes=routes()) as s:
        c = connect(s.port)
        try:
            c.sendall(upgrade_head("/plain/a"))
            r, rest = read_response(c)
            assert r.status == 400 and b"not a websocket handshake" in r.body, (r.status, r.body)
            hs = {k.lower(): v for k, v in r.headers}
            assert "upgrade" not in hs, hs
            c.sendall(upgrade_head("/chat/b", "X-Mock-Ws: refuse\r\n"))  # same connection
            r, rest = read_response(c, buf=rest)
            assert r.status == 403 and b"upgrade refused" in r.body, (r.status, r.body)
            hs = {k.lower(): v for k, v in r.headers}
            assert "upgrade" not in hs and hs.get("connection", "").lower() != "upgrade", hs
            c.sendall(b"GET /api/users/1 HTTP/1.1\r\nHost: x\r\n\r\n")  # still HTTP/1.1
            r, rest = read_response(c, buf=rest)
            assert r.status == 200, r.status
        finally:
            c.close()
        for path in ("/chat/c", "/plain/c"):
            st, h, body = request(s.port, "GET", path, headers={"X-Mock-Ws": "force"})
            assert st == 502 and h["x-gateway-upstream"] == "gateway", (path, st, body)
        assert active(s) == 0 and active(s, "plain") == 0
        assert s.mock("user-service").stats()["ws_open"] == 0


def test_tunnel_no_shadow_retry_or_fallback():
    """An upgrade is sent once: no shadow copy to the route's candidate, no fallback when the
    upstream fails or cannot be reached, no second endpoint after a refused connect (while a
    plain GET on the same routes does fall back), and never through the user cache of a
    cached route (no lookup, no stored answer)."""
    with Stack(upstreams=UPS, routes=routes(), start=False) as s:
        s.conf["upstreams"]["pair"]["endpoints"].insert(0, dead_port())
        s.write()
        s.start()

        async def echo(path):
            async with websockets.connect("ws://127.0.0.1:%d%s" % (s.port, path)) as ws:
                await ws.send("x")
                assert await ws.recv() == "x"
                return ws.response_headers["x-mock-name"]

        assert run(echo("/pol/a")) == "user-service-0"
        for _ in range(2):  # a cached route: each upgrade reaches the upstream
            assert run(echo("/cached/a")) == "user-service-0"
        m = metrics(s)
        assert sum(v for k, v in m.items() if k.startswith("gateway_cache_requests_total")) == 0, m
        request(s.port, "GET", "/cached/b")  # a plain GET there is looked up
        m = metrics(s)
        assert m.get('gateway_cache_requests_total{result="miss"}', 0) >= 1, m
        legacy = s.mock("legacy")
        time.sleep(0.2)
        assert legacy.stats()["requests"] == 0, legacy.stats()  # no shadow copy
        # the upstream answers 503 to the upgrade: passed on, not replayed to legacy
        st, h, _ = request(s.port, "GET", "/pol/b", headers={
            "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": ws_key(),
            "X-Mock-Status": "503"})
        assert st == 503 and h["x-gateway-upstream"] == "user-service", (st, h)
        # two upgrades on the pair (one dead endpoint): exactly one fails, none retried
        results = []
        for i in range(2):
            try:
                results.append(run(echo("/pair/%d" % i)))
            except websockets.exceptions.InvalidStatusCode as e:
                results.append(e.status_code)
        assert sorted(map(str, results)) == ["502", "pair-0"], results
        assert legacy.stats()["requests"] == 0, legacy.stats()  # no fallback either
        # the same routes do fall back for a plain request (the policies are in force)
        st2, h, _ = request(s.port, "GET", "/pol/c", headers={"X-Mock-Status": "500"})
        assert h["x-gateway-upstream"] == "legacy", (st2, h)
        assert legacy.stats()["requests"] >= 1


def test_tunnel_backpressure_bounds_memory():
    """A client that stops reading while the upstream floods, and an upstream that stops
    reading while the client floods: the gateway stops reading the sender (its memory stays
    within a few buffers, VmRSS measured) instead of queueing what the slow side does not
    take."""
    with Stack(upstreams=UPS, routes=routes()) as s:
        base = s.gw.rss_kib("VmRSS")
        c = connect(s.port)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        try:
            c.sendall(upgrade_head("/chat/flood", "X-Mock-Ws: flood\r\n"))
            st, hs, _ = read_head(c)
            assert st == 101, (st, hs)
            mock = s.mock("user-service")
            time.sleep(1.5 * SLACK_SCALE)  # the client reads nothing meanwhile
            sent1 = mock.stats()["ws_bytes_out"]
            time.sleep(0.5 * SLACK_SCALE)
            sent2 = mock.stats()["ws_bytes_out"]
            grew = s.gw.rss_kib("VmRSS") - base
            print("    flood: mockd queued %.1f MB, gateway VmRSS +%d KiB" % (sent2 / 1e6, grew))
            assert sent2 - sent1 < 1 << 20, (sent1, sent2)  # the upstream is held back
            assert sent2 < 48 << 20, sent2  # socket buffers plus a few 64 KiB queues
            assert grew < 24 * 1024, grew
            assert active(s) == 1
        finally:
            c.close()
        wait_until(lambda: active(s) == 0, 5, "the flooded tunnel to close")
        # the other way: the upstream reads nothing, the client writes until it blocks
        c = connect(s.port)
        try:
            c.sendall(upgrade_head("/chat/noread", "X-Mock-Ws: noread\r\n"))
            st, hs, _ = read_head(c)
            assert st == 101, (st, hs)
            c.setblocking(False)
            frame = masked_frame(b"y" * 65000)
            pushed, t_end = 0, time.time() + 2.0 * SLACK_SCALE
            while time.time() < t_end:
                try:
                    pushed += c.send(frame)
                except BlockingIOError:
                    time.sleep(0.05)
            grew = s.gw.rss_kib("VmRSS") - base
            print("    client flood: %.1f MB taken, gateway VmRSS +%d KiB" % (pushed / 1e6, grew))
            assert pushed < 48 << 20, pushed
            assert grew < 24 * 1024, grew
        finally:
            c.close()


def test_tunnel_send_timeout_runs_from_progress():
    """limits.send_timeout_ms in a tunnel counts from the client's last write progress: a
    tunnel whose queue to the client filled (an 8 MB echo the client reads at a pace) and then
    carries small messages for longer than the timeout stays open (it was cut 500 ms after
    the first queued byte, without a Close); a client that takes nothing of a flood is still
    closed by it, counted as client_send_timeout."""
    import threading
    with Stack(upstreams=UPS, routes=routes(), gw_conf={"limits": {"send_timeout_ms": int(500 * SLACK_SCALE)}}) as s:
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # before connect: a small window
        c.settimeout(10)
        c.connect(("127.0.0.1", s.port))
        try:
            c.sendall(upgrade_head("/chat/busy"))
            st, hs, rest = read_head(c)
            assert st == 101 and rest == b"", (st, hs, rest)
            big = masked_frame(b"z" * 1000000) * 8  # echoed as 8 x (10 + 1000000) bytes:
            th = threading.Thread(target=c.sendall, args=(big,))  # more than socket buffers
            th.start()
            got = 0
            while got < 8000080:  # read at a pace: the gateway's queue to the client fills
                d = c.recv(65536)
                assert d, "closed after %d bytes of the echo" % got
                got += len(d)
                time.sleep(0.002)
            th.join()
            t_end = time.monotonic() + 1.5 * SLACK_SCALE
            while time.monotonic() < t_end:  # 3 x the send timeout of small messages
                c.sendall(masked_frame(b"tick"))
                buf = b""
                while len(buf) < 6:
                    d = c.recv(64)
                    assert d, "the tunnel was closed after %.2f s of small messages" % (
                        1.5 * SLACK_SCALE - (t_end - time.monotonic()))
                    buf += d
                assert buf == b"\x82\x04tick", buf
                time.sleep(0.1)
            assert active(s) == 1
        finally:
            c.close()
        wait_until(lambda: active(s) == 0, 5, "the busy tunnel to close")
        c = connect(s.port)  # a client that reads nothing of a flood: closed
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        try:
            c.sendall(upgrade_head("/chat/stuck", "X-Mock-Ws: flood\r\n"))
            st, hs, _ = read_head(c)
            assert st == 101, (st, hs)
            wait_until(lambda: active(s) == 0, 5 * SLACK_SCALE, "the stuck client's tunnel to close")
        finally:
            c.close()
        m = metrics(s)  # (the busy one was closed by its client)
        assert m['gateway_tunnels_closed_total{route="chat",upstream="user-service",reason="client_send_timeout"}'] == 1, m


def test_tunnel_idle_timeout_closes_both_sides():
    """tunnel_idle_timeout_ms: a tunnel with no byte either way that long is closed on both
    sides (client sees the close, mockd's connection ends), counted as idle_timeout; bytes
    moving keep it open."""
    with Stack(upstreams=UPS, routes=routes(tunnel_idle_timeout_ms=1000)) as s:
        async def go():
            async with websockets.connect("ws://127.0.0.1:%d/chat/idle" % s.port,
                                          ping_interval=None) as ws:
                for _ in range(6):  # 1.5 s of traffic, never 1 s idle (slack for a loaded box)
                    await asyncio.sleep(0.25)
                    await ws.send("tick")
                    assert await ws.recv() == "tick"
                t0 = time.monotonic()
                await closed(ws)
                return time.monotonic() - t0

        took = run(go())
        print("    closed after %.2f s idle" % took)
        assert 0.9 <= took < 4 * SLACK_SCALE, took
        wait_until(lambda: s.mock("user-service").stats()["ws_open"] == 0, 5, "mockd's side closed")
        m = metrics(s)
        assert m['gateway_tunnels_closed_total{route="chat",upstream="user-service",reason="idle_timeout"}'] == 1, m
        assert active(s) == 0


def test_tunnel_flip_keeps_open_tunnels_and_drain_closes_them():
    """A flip moves new tunnels, not open ones: the old upstream's count stays until its
    tunnel closes (what an operator watches to finish a cutover). SIGTERM ends the open
    WebSockets with their closing handshake at once (the client gets Close 1001 "going away"
    and a clean close, mockd's side closes too), and the gateway exits well within the drain
    time."""
    with Stack(upstreams=UPS, routes=routes(), gw_conf={"shutdown": {"drain_timeout_ms": 8000}}) as s:
        async def go():
            a = await websockets.connect("ws://127.0.0.1:%d/chat/a" % s.port)
            assert a.response_headers["x-mock-name"] == "user-service-0"
            st, _, body = request(s.admin_port, "PATCH", "/admin/routes/chat", headers=TOKEN,
                                  body=b'{"upstream": "legacy"}')
            assert st == 200, (st, body)
            b = await websockets.connect("ws://127.0.0.1:%d/chat/b" % s.port)
            assert b.response_headers["x-mock-name"] == "legacy-0"  # the new one follows
            for ws in (a, b):
                await ws.send("still here")
                assert await ws.recv() == "still here"
            assert admin_tunnels(s)["tunnels"] == {"user-service": 1, "legacy": 1}
            st, _, body = request(s.admin_port, "GET", "/admin/dashboard", headers=TOKEN)
            chat = [r for r in json.loads(body)["routes"] if r["id"] == "chat"][0]
            assert chat["tunnels"] == {"user-service": 1, "legacy": 1} and chat["tunnels_open"] == 2, chat
            import subprocess
            from harness import ROOT, BUILD
            out = subprocess.run([os.path.join(ROOT, BUILD, "gatewayctl"), "--admin",
                                  "http://127.0.0.1:%d" % s.admin_port, "--token", "test-token",
                                  "routes", "show", "chat"], capture_output=True, text=True,
                                 timeout=30).stdout
            assert json.loads(out)["tunnels"] == {"user-service": 1, "legacy": 1}, out
            await a.close()
            wait_until(lambda: active(s) == 0, 5, "the old side's count at 0")
            assert active(s, upstream="legacy") == 1
            c = await websockets.connect("ws://127.0.0.1:%d/chat/c" % s.port)
            t0 = time.monotonic()
            os.kill(s.gw.pid, signal.SIGTERM)
            for ws in (b, c):
                try:
                    await asyncio.wait_for(ws.recv(), 5)
                    assert False, "a message came"
                except websockets.exceptions.ConnectionClosed as e:
                    print("    drain: closed with %s after %.2f s" % (e, time.monotonic() - t0))
                    assert e.rcvd is not None and e.rcvd.code == 1001, e  # not 1006
                    assert isinstance(e, websockets.exceptions.ConnectionClosedOK), e
            return time.monotonic() - t0

        took = run(go())
        assert took < 3 * SLACK_SCALE, took
        s.gw.p.wait(10)
        assert s.gw.p.returncode == 0, s.gw.output()[-2000:]
        wait_until(lambda: s.mock("legacy").stats()["ws_open"] == 0, 5, "mockd's side closed")


def test_tunnel_config_errors():
    """"upgrade" must be an array of protocol tokens (no duplicates, any case) and
    tunnel_idle_timeout_ms a positive integer; errors name the field."""
    import subprocess
    from harness import ROOT, BUILD
    bad = [
        ({"upgrade": "websocket"}, "routes[0].upgrade: must be an array"),
        ({"upgrade": ["web socket"]}, "routes[0].upgrade: [0] must be a protocol name"),
        ({"upgrade": [""]}, "routes[0].upgrade: [0] must be a protocol name"),
        ({"upgrade": ["websocket", 7]}, "routes[0].upgrade: [1] must be a protocol name"),
        ({"upgrade": ["websocket", "WebSocket"]}, 'routes[0].upgrade: "WebSocket" is listed twice'),
        ({"tunnel_idle_timeout_ms": 0}, "routes[0].tunnel_idle_timeout_ms: must be an integer"),
    ]
    for extra, want in bad:
        s = Stack(upstreams=UPS, routes=routes(**extra), start=False)
        try:
            r = subprocess.run([os.path.join(ROOT, BUILD, "gateway"), "-c", s.conf_path, "--check"],
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 1 and want in r.stderr + r.stdout, (extra, r.stdout, r.stderr)
        finally:
            s.stop()
            shutil.rmtree(s.tmp, ignore_errors=True)
    s = Stack(upstreams=UPS, routes=routes(), gw_conf={"limits": {"tunnel_idle_timeout_ms": 0}}, start=False)
    try:
        r = subprocess.run([os.path.join(ROOT, BUILD, "gateway"), "-c", s.conf_path, "--check"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and "limits.tunnel_idle_timeout_ms" in r.stderr + r.stdout, r.stderr
    finally:
        s.stop()
        shutil.rmtree(s.tmp, ignore_errors=True)
