"""The upstream side of a tunnel (issue 11 §3, the two gaps): a WebSocket tunnel to an upstream
that speaks TLS (upstreams.NAME.tls: the bytes pass through the gateway's TLS client layer),
and the upstream's send timeout (upstreams.NAME.send_timeout_ms, counted from write progress
like the client side's limits.send_timeout_ms): over a plain and a TLS upstream, bounding the
flush after the client closed, and kept by an open tunnel across a live definition change.
Upstreams: a Python `websockets` server with an ssl context (Debian's python3-websockets) and
raw socket servers that stop reading (or never read), optionally over TLS."""
import asyncio
import os
import select
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time

sys.path.append("/usr/lib/python3/dist-packages")  # Debian's python3-websockets
import websockets  # noqa: E402

from harness import Stack, free_port, metrics, wait_port, wait_until, SLACK_SCALE  # noqa: E402
from test_tls import CA  # noqa: E402
from test_tunnel import closed, masked_frame, read_head, upgrade_head  # noqa: E402
from test_live_upstreams import admin  # noqa: E402


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30 * SLACK_SCALE))


def closed_count(s, reason, route, upstream):
    return metrics(s).get('gateway_tunnels_closed_total{route="%s",upstream="%s",reason="%s"}'
                          % (route, upstream, reason), 0)


def pushed(i, size):
    return i.to_bytes(4, "big") * (size // 4)


class FrameReader:
    """Reads a server's (unmasked) WebSocket frames from a socket."""

    def __init__(self, sock, buf=b""):
        self.sock, self.buf = sock, buf

    def take(self, n):
        while len(self.buf) < n:
            d = self.sock.recv(1 << 20)
            assert d, "closed with %d of %d bytes" % (len(self.buf), n)
            self.buf += d
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self):
        b0, b1 = self.take(2)
        n = b1 & 0x7F
        if n == 126:
            n = int.from_bytes(self.take(2), "big")
        elif n == 127:
            n = int.from_bytes(self.take(8), "big")
        return b0 & 0x0F, self.take(n)


class TlsWsUpstream:
    """A WebSocket echo server over TLS in a thread with its own event loop. A text message
    "close-me" makes it close (code 4000), "push N SIZE" sends N messages; on a path ending in /greet it speaks first; it
    notes the close code of each connection."""

    def __init__(self, cert, key):
        self.port = free_port()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.codes = []  # the close code each connection ended with (as the server saw it)
        self.open = 0
        self.paths = []
        self.pushed_at = None  # when the last pushed message was written
        self.loop = None
        self.stop_ev = None
        self.th = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self.th.start()
        wait_port(self.port)

    async def _handler(self, ws, path=None):
        self.open += 1
        self.paths.append(ws.path)
        try:
            if ws.path.endswith("/greet"):  # it speaks first: bytes right behind its 101
                await ws.send("welcome")
            async for m in ws:
                if m == "close-me":
                    await ws.close(4000, "upstream says bye")
                    break
                if isinstance(m, str) and m.startswith("push "):  # push N SIZE: N messages
                    n, size = map(int, m.split()[1:])
                    for i in range(n):
                        await ws.send(pushed(i, size))
                    self.pushed_at = time.monotonic()
                    continue
                await ws.send(m)
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            await ws.wait_closed()
            self.codes.append(ws.close_code)
            self.open -= 1

    async def _main(self):
        self.loop = asyncio.get_running_loop()
        self.stop_ev = asyncio.Event()
        async with websockets.serve(self._handler, "127.0.0.1", self.port, ssl=self.ctx,
                                    max_size=None, ping_interval=None):
            await self.stop_ev.wait()

    def stop(self):
        if self.loop:
            self.loop.call_soon_threadsafe(self.stop_ev.set)
        self.th.join(10)


def test_tunnel_to_tls_upstream():
    """ws:// through the gateway to a WebSocket upstream that speaks TLS (verified against
    its CA, SNI ws.internal): a greeting sent right behind the upstream's 101; echo both ways
    including a 4 MB message; 32 MB pushed to a client that pauses reading (backpressure
    through the TLS layer: the upstream is held back, every byte comes in order); a close
    from the client (the upstream sees 1000) and from the upstream (the client sees 4000); a
    client dropping its connection (the gateway closes the upstream's, which sees 1006); the
    idle timeout (the upstream's TLS connection ends too); drain (both ends get Close 1001,
    the upstream's masked through TLS)."""
    d = tempfile.mkdtemp(prefix="gwtun-")
    up = None
    try:
        ca = CA(d)
        up = TlsWsUpstream(*ca.leaf("ws.internal", ["ws.internal"]))
        routes = [{"id": "wss", "path": "/chat/**", "upstream": "secure", "upgrade": ["websocket"],
                   "rewrite": {"template": "/ws/{**}"}},
                  {"id": "idle", "path": "/idle/**", "upstream": "secure", "upgrade": ["websocket"],
                   "tunnel_idle_timeout_ms": 1000},
                  {"id": "legacy", "path": "/**", "upstream": "legacy"}]
        with Stack(routes=routes, start=False,
                   gw_conf={"shutdown": {"drain_timeout_ms": 8000}}) as s:
            s.conf["upstreams"]["secure"] = {
                "endpoints": ["127.0.0.1:%d" % up.port],
                "tls": {"ca_file": ca.pem, "server_name": "ws.internal"}}
            s.write()
            s.start()
            base = "ws://127.0.0.1:%d" % s.port

            async def echo_and_close():
                async with websockets.connect(base + "/chat/a", max_size=None) as ws:
                    assert ws.response_headers["x-gateway-upstream"] == "secure", dict(ws.response_headers)
                    await ws.send("hello")
                    assert await ws.recv() == "hello"
                    big = os.urandom(4 << 20)  # far more than a 64 KiB queue and the socket buffers
                    await ws.send(big)
                    assert await ws.recv() == big
                    for i in range(20):  # many small ones, both ways at once
                        await ws.send("m%d" % i)
                    assert [await ws.recv() for _ in range(20)] == ["m%d" % i for i in range(20)]
                assert ws.close_code == 1000  # the client's Close went through and was answered
                # the upstream closes (4000): the client gets its Close
                async with websockets.connect(base + "/chat/b") as ws:
                    await ws.send("close-me")
                    e = await closed(ws)
                    assert e.rcvd is not None and e.rcvd.code == 4000, e
                # the client drops its TCP connection (no Close): the upstream's TLS connection
                # is closed by the gateway (the upstream says 1006, no Close came)
                ws = await websockets.connect(base + "/chat/greet")
                assert await ws.recv() == "welcome"
                await ws.send("x")
                assert await ws.recv() == "x"
                ws.transport.close()

            run(echo_and_close())
            # a client that stops reading while the upstream pushes 32 MB (more than the
            # socket buffers on the way): the gateway stops reading the upstream's TLS layer,
            # the upstream is held back, then every byte comes, in order
            c = socket.socket()
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # before connect
            c.settimeout(10)
            c.connect(("127.0.0.1", s.port))
            try:
                c.sendall(upgrade_head("/chat/push"))
                st, hs, rest = read_head(c)
                assert st == 101, (st, hs)
                c.sendall(masked_frame(b"push 128 262144", opcode=1))
                time.sleep(0.5 * SLACK_SCALE)
                resumed = time.monotonic()
                r = FrameReader(c, rest)
                for i in range(128):
                    op, m = r.frame()
                    assert op == 2 and m == pushed(i, 262144), (i, op, len(m), m[:8])
                assert up.pushed_at is not None and up.pushed_at > resumed, (
                    "the upstream was never held back (done %.2f s before the client read)"
                    % (resumed - (up.pushed_at or 0)))
            finally:
                c.close()
            assert up.paths[0] == "/ws/a", up.paths
            wait_until(lambda: sorted(up.codes) == [1000, 1006, 1006, 4000], 5, "the upstream connections closed")
            # a WebSocket's closing handshake ends with the server's TCP close: upstream_closed
            wait_until(lambda: closed_count(s, "client_closed", "wss", "secure") == 2, 5, "counted")
            assert closed_count(s, "upstream_closed", "wss", "secure") == 2, metrics(s)

            async def idle():
                async with websockets.connect(base + "/idle/x", ping_interval=None) as ws:
                    await ws.send("once")
                    assert await ws.recv() == "once"
                    t0 = time.monotonic()
                    await closed(ws)
                    return time.monotonic() - t0

            took = run(idle())
            assert 0.9 <= took < 4 * SLACK_SCALE, took
            wait_until(lambda: closed_count(s, "idle_timeout", "idle", "secure") == 1, 5, "idle counted")
            wait_until(lambda: up.open == 0 and len(up.codes) == 5, 5, "the upstream's idle connection ended")

            async def drain():
                ws = await websockets.connect(base + "/chat/c", max_size=None)
                await ws.send("before")
                assert await ws.recv() == "before"
                os.kill(s.gw.pid, signal.SIGTERM)
                e = await closed(ws, 5)
                assert e.rcvd is not None and e.rcvd.code == 1001, e
                assert isinstance(e, websockets.exceptions.ConnectionClosedOK), e

            run(drain())
            s.gw.p.wait(10)
            assert s.gw.p.returncode == 0, s.gw.output()[-2000:]
            wait_until(lambda: len(up.codes) == 6, 5, "the upstream's drained connection ended")
            assert up.codes[5] == 1001, up.codes  # the gateway's Close, masked, through TLS
    finally:
        if up:
            up.stop()
        shutil.rmtree(d, ignore_errors=True)


class StallingUpstream:
    """Answers one upgrade with 101, then reads at a pace (2 x 64 KiB every 10 ms) for
    READ_FOR seconds, then reads nothing; all along it sends a small frame every 100 ms, so
    the tunnel is never idle. (The pace is not slower: a sender's socket turns writable again
    only once about a third of its send buffer, up to 4 MB on loopback, has left, and that
    is the progress the gateway sees.)"""

    def __init__(self, read_for):
        self.read_for = read_for
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # inherited by accept
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(4)
        self.port = self.ls.getsockname()[1]
        self.stopped = threading.Event()
        self.stalled_at = None
        self.read = 0
        self.th = threading.Thread(target=self._serve, daemon=True)
        self.th.start()

    def _serve(self):
        self.ls.settimeout(10)
        try:
            c, _ = self.ls.accept()
        except OSError:
            return
        with c:
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = c.recv(4096)
                if not d:
                    return
                buf += d
            self.read += len(buf.partition(b"\r\n\r\n")[2])
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n")
            c.setblocking(False)
            t0 = time.monotonic()
            next_tick = t0
            while not self.stopped.is_set():
                now = time.monotonic()
                if now - t0 < self.read_for:
                    try:
                        for _ in range(2):  # at most ~13 MB/s: slower than the client
                            d = c.recv(65536)
                            if not d:
                                return
                            self.read += len(d)
                    except BlockingIOError:
                        pass
                elif self.stalled_at is None:
                    self.stalled_at = now
                if now >= next_tick:
                    next_tick = now + 0.1
                    try:
                        c.send(b"\x81\x04tick")
                    except (BlockingIOError, OSError):
                        if self.stalled_at is not None:
                            return  # the gateway closed its side
                time.sleep(0.01)

    def stop(self):
        self.stopped.set()
        self.ls.close()
        self.th.join(10)


def flood_until_closed(c, limit_s):
    """Sends masked 65,000-byte frames on the upgraded client socket C as fast as it takes
    them, reading what comes, until the gateway closes it or LIMIT_S pass. Returns
    (closed_at or None, bytes sent, bytes received)."""
    c.setblocking(False)
    frame = masked_frame(b"f" * 65000)
    got, sent = 0, 0
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        r, w, _ = select.select([c], [c], [], 0.05)
        if c in r:
            try:
                d = c.recv(65536)
            except ConnectionResetError:
                d = b""
            if not d:
                return time.monotonic(), sent, got
            got += len(d)
        if c in w:
            try:
                sent += c.send(frame)
            except BlockingIOError:
                pass
            except OSError:
                pass  # the gateway closed: the recv side says so
        else:
            time.sleep(0.005)
    return None, sent, got


def test_tunnel_upstream_send_timeout_runs_from_progress():
    """upstreams.NAME.send_timeout_ms: a client floods a tunnel whose upstream reads at a
    pace slower than the flood (for 3 x the timeout: it stays open, the upstream takes
    bytes), then stops reading while it keeps sending to the client (the tunnel is never
    idle, so the 1 s tunnel idle timeout never ends it): the gateway closes it within the
    send timeout and counts reason upstream_send_timeout. Without the upstream send timeout
    that tunnel stayed open as long as the upstream kept talking (backpressure only stopped
    reading the client; fails: 'stayed open 6.0 s after the upstream stopped reading')."""
    timeout_ms = int(500 * SLACK_SCALE)
    up = StallingUpstream(read_for=3 * timeout_ms / 1000)
    routes = [{"id": "stuck", "path": "/stuck/**", "upstream": "stuck", "upgrade": ["websocket"],
               "tunnel_idle_timeout_ms": 1000},
              {"id": "legacy", "path": "/**", "upstream": "legacy"}]
    try:
        with Stack(routes=routes, start=False) as s:
            s.conf["upstreams"]["stuck"] = {"endpoints": ["127.0.0.1:%d" % up.port],
                                            "send_timeout_ms": timeout_ms}
            s.write()
            s.start()
            c = socket.socket()
            c.settimeout(10)
            c.connect(("127.0.0.1", s.port))
            try:
                c.sendall(upgrade_head("/stuck/a"))
                st, hs, rest = read_head(c)
                assert st == 101, (st, hs)
                closed_at, sent, got = flood_until_closed(c, 3 * timeout_ms / 1000 + 6 * SLACK_SCALE)
                got += len(rest)
                assert closed_at is not None, (
                    "the tunnel stayed open %.1f s after the upstream stopped reading (sent %d, "
                    "the upstream read %d, the client got %d)" % (
                        time.monotonic() - (up.stalled_at or 0), sent, up.read, got))
                assert up.stalled_at is not None and closed_at > up.stalled_at, (
                    "closed while the upstream still read (%.2f s into the stall)"
                    % (closed_at - (up.stalled_at or closed_at)))
                print("    closed %.2f s after the upstream stopped reading; it read %.1f MB, "
                      "the client got %d bytes" % (closed_at - up.stalled_at, up.read / 1e6, got))
                assert got >= 6 * 3, got  # the upstream's frames came through all along
                assert up.read > 8 * 65000, up.read  # the slow phase moved bytes
            finally:
                c.close()
            wait_until(lambda: closed_count(s, "upstream_send_timeout", "stuck", "stuck") == 1, 5,
                       "counted as upstream_send_timeout")
            m = metrics(s)
            assert closed_count(s, "idle_timeout", "stuck", "stuck") == 0, m
            assert m['gateway_tunnels_active{route="stuck",upstream="stuck"}'] == 0, m
    finally:
        up.stop()


class DeafUpstream:
    """Answers every upgrade with 101 (over TLS with CTX), then never reads; it sends a small
    frame every 100 ms on each connection, so no tunnel is ever idle. A small receive buffer:
    a client's flood fills the way to it at once."""

    def __init__(self, ctx=None):
        self.ctx = ctx
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # inherited by accept
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(8)
        self.port = self.ls.getsockname()[1]
        self.stopped = threading.Event()
        self.upgraded = 0
        self.ended = 0  # connections the gateway closed
        self.th = threading.Thread(target=self._accept, daemon=True)
        self.th.start()

    def _accept(self):
        self.ls.settimeout(0.1)  # closing the socket does not end a blocked accept
        while not self.stopped.is_set():
            try:
                c, _ = self.ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(5)
            if self.ctx:
                c = self.ctx.wrap_socket(c, server_side=True)
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = c.recv(4096)
                if not d:
                    return
                buf += d
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      b"Connection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n")
            self.upgraded += 1
            while not self.stopped.wait(0.1):
                c.sendall(b"\x81\x04tick")  # fails once the gateway closed its side
        except OSError:
            pass
        finally:
            self.ended += 1
            c.close()

    def stop(self):
        self.stopped.set()
        self.ls.close()
        self.th.join(10)


def open_tunnel(s, path):
    c = socket.socket()
    c.settimeout(10)
    c.connect(("127.0.0.1", s.port))
    c.sendall(upgrade_head(path))
    st, hs, _ = read_head(c)
    assert st == 101, (st, hs)
    return c


def test_tunnel_upstream_send_timeout_over_tls():
    """upstreams.NAME.send_timeout_ms over a TLS upstream (the bytes pass through the
    gateway's TLS client layer, which queues the records): a client floods a tunnel whose
    upstream never reads but keeps talking; the gateway closes it after the send timeout
    (not before it; the 1 s tunnel idle timeout never fires) and counts
    upstream_send_timeout; the upstream's connection is closed too."""
    timeout_ms = int(500 * SLACK_SCALE)
    d = tempfile.mkdtemp(prefix="gwtun-")
    up = None
    try:
        ca = CA(d)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*ca.leaf("ws.internal", ["ws.internal"]))
        up = DeafUpstream(ctx)
        routes = [{"id": "deaf", "path": "/deaf/**", "upstream": "deaf", "upgrade": ["websocket"],
                   "tunnel_idle_timeout_ms": 1000},
                  {"id": "legacy", "path": "/**", "upstream": "legacy"}]
        with Stack(routes=routes, start=False) as s:
            s.conf["upstreams"]["deaf"] = {
                "endpoints": ["127.0.0.1:%d" % up.port], "send_timeout_ms": timeout_ms,
                "tls": {"ca_file": ca.pem, "server_name": "ws.internal"}}
            s.write()
            s.start()
            c = open_tunnel(s, "/deaf/a")
            try:
                t0 = time.monotonic()
                closed_at, sent, got = flood_until_closed(c, timeout_ms / 1000 + 6 * SLACK_SCALE)
                assert closed_at is not None, (
                    "the tunnel stayed open %.1f s while its TLS upstream read nothing (sent %d)"
                    % (time.monotonic() - t0, sent))
                took = closed_at - t0
                print("    closed %.2f s into the flood (sent %d bytes, got %d)" % (took, sent, got))
                assert took >= timeout_ms / 1000 * 0.9, took
                assert got >= 6, got  # the upstream's frames came through while it was stuck
            finally:
                c.close()
            wait_until(lambda: closed_count(s, "upstream_send_timeout", "deaf", "deaf") == 1, 5,
                       "counted as upstream_send_timeout")
            assert closed_count(s, "idle_timeout", "deaf", "deaf") == 0, metrics(s)
            wait_until(lambda: up.ended == 1, 5, "the upstream's TLS connection closed")
    finally:
        if up:
            up.stop()
        shutil.rmtree(d, ignore_errors=True)


def test_tunnel_keeps_its_send_timeout_across_a_definition_change():
    """A live change of upstreams.NAME.send_timeout_ms (PUT /admin/upstreams/NAME) while a
    tunnel is open: the open tunnel keeps the value of the definition it started with (its
    endpoint set's, ep->def), a tunnel opened after the change gets the new one. Both flood a
    deaf upstream at once: the new tunnel is closed after the new, short timeout, the old one
    is still open well after it."""
    short_ms = int(400 * SLACK_SCALE)
    up = DeafUpstream()
    routes = [{"id": "deaf", "path": "/deaf/**", "upstream": "deaf", "upgrade": ["websocket"]},
              {"id": "legacy", "path": "/**", "upstream": "legacy"}]
    try:
        with Stack(routes=routes, start=False) as s:
            s.routes["upstreams"] = {"deaf": {"endpoints": ["127.0.0.1:%d" % up.port],
                                              "send_timeout_ms": 60000}}
            s.write()
            s.start()
            old = open_tunnel(s, "/deaf/old")
            st, doc = admin(s, "PUT", "/admin/upstreams/deaf",
                            {"endpoints": ["127.0.0.1:%d" % up.port], "send_timeout_ms": short_ms})
            assert st == 200, (st, doc)
            new = open_tunnel(s, "/deaf/new")
            try:
                res = {}
                # the old one: long enough for the new timeout to have passed 3 times over
                ts = [threading.Thread(target=lambda k=k, c=c, limit=limit: res.update(
                          {k: flood_until_closed(c, limit)}))
                      for k, c, limit in (("old", old, 4 * short_ms / 1000),
                                          ("new", new, short_ms / 1000 + 6 * SLACK_SCALE))]
                t0 = time.monotonic()
                for t in ts:
                    t.start()
                for t in ts:
                    t.join(30)
                assert res["new"][0] is not None, "the tunnel opened after the change stayed open"
                assert res["old"][0] is None, (
                    "the tunnel opened before the change was closed after %.2f s (the new "
                    "definition's %d ms)" % (res["old"][0] - t0, short_ms))
            finally:
                old.close()
                new.close()
            wait_until(lambda: closed_count(s, "upstream_send_timeout", "deaf", "deaf") == 1, 5,
                       "counted as upstream_send_timeout")
    finally:
        up.stop()


def test_tunnel_flush_after_client_close_bounded_by_upstream_send_timeout():
    """A client floods a tunnel to an upstream that reads nothing, then closes: what is
    queued to the upstream is still offered to it, for its send_timeout_ms from the last
    progress (not read_timeout_ms, 30 s here, from the close): the upstream's connection is
    closed within it, and the tunnel counts client_closed (the client ended it)."""
    timeout_ms = int(500 * SLACK_SCALE)
    up = DeafUpstream()
    routes = [{"id": "deaf", "path": "/deaf/**", "upstream": "deaf", "upgrade": ["websocket"]},
              {"id": "legacy", "path": "/**", "upstream": "legacy"}]
    try:
        with Stack(routes=routes, start=False) as s:
            s.conf["upstreams"]["deaf"] = {"endpoints": ["127.0.0.1:%d" % up.port],
                                           "send_timeout_ms": timeout_ms}
            s.write()
            s.start()
            c = open_tunnel(s, "/deaf/a")
            try:
                closed_at, sent, _ = flood_until_closed(c, 0.2)  # fills the way, ends in time
                assert closed_at is None and sent > 0, (closed_at, sent)
            finally:
                c.close()
            t0 = time.monotonic()
            wait_until(lambda: up.ended == 1, timeout_ms / 1000 + 3 * SLACK_SCALE,
                       "the upstream's connection closed after the flush was given up")
            print("    the upstream's connection closed %.2f s after the client's"
                  % (time.monotonic() - t0))
            wait_until(lambda: closed_count(s, "client_closed", "deaf", "deaf") == 1, 5,
                       "counted as client_closed")
            assert closed_count(s, "upstream_send_timeout", "deaf", "deaf") == 0, metrics(s)
    finally:
        up.stop()
