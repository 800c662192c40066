"""Several workers doing their first work at the same moment, with the main thread reloading
routes and serving the admin API meanwhile. On the plain builds a behaviour check; its point is
the ThreadSanitizer build (make test runs it on build/tsan): state that every worker
initialises lazily on its first connection (the llhttp parser settings of the server side and
of the upstream side) or that the main thread publishes to the workers (route tables, metrics)
is touched by several threads at once here, so a missing lock or once-guard is reported.
(Under TSan a race is only seen when no other synchronisation happens to order the two
accesses; most tests start one request at a time, which a lazy init on the first connection
slips through.)"""
import threading

from harness import Stack, connect, metrics, read_response, request

TOKEN = "test-token"
WORKERS = 4          # more threads than cores: first accepts overlap
CLIENTS = 24         # connections opened at once, spread over the workers by SO_REUSEPORT
ROUNDS = 2           # each client: ROUNDS new connections, REQS requests on each
REQS = 4
# Fresh gateways, one after another: a lazy first-connection init races only once per process,
# and TSan sees it only when nothing else ordered the threads (socket I/O, atomics) before the
# second access, which one start alone misses about half the time.
STARTS = 4


def _get(sock, path, buf):
    sock.sendall(("GET %s HTTP/1.1\r\nHost: gw\r\n\r\n" % path).encode())
    return read_response(sock, buf=buf)


def test_workers_first_connections_together_with_reloads():
    for _ in range(STARTS):
        _burst()


def _burst():
    with Stack(upstreams={"legacy": 1, "user-service": 1}, workers=WORKERS) as s:
        barrier = threading.Barrier(CLIENTS + 1, timeout=30)
        errors, lock = [], threading.Lock()
        done = threading.Event()

        def client(k):
            try:
                barrier.wait()
                for rnd in range(ROUNDS):
                    sock, buf = connect(s.port), b""
                    try:
                        for i in range(REQS):
                            # proxied both ways: a user-service path (rewritten) and the legacy
                            # catch-all, so each worker also opens upstream connections
                            if (k + i) % 2:
                                r, buf = _get(sock, "/api/users/%d" % (k * 10 + i), buf)
                                want = "user-service"
                            else:
                                r, buf = _get(sock, "/api/orders/%d" % (k * 10 + i), buf)
                                want = "legacy"
                            up = r.header("x-gateway-upstream")
                            assert r.status == 200 and up == want, (k, rnd, i, r.status, up, r.body[:200])
                    finally:
                        sock.close()
            except Exception as e:  # noqa: BLE001 -- every failure counts
                with lock:
                    errors.append("client %d: %r" % (k, e))

        def reloader():
            auth = {"Authorization": "Bearer " + TOKEN}
            n = 0
            try:
                barrier.wait()
                while not done.is_set() or n < 10:
                    st, _, b = request(s.admin_port, "POST", "/admin/reload", auth)
                    assert st == 200, (st, b)
                    st, _, b = request(s.admin_port, "GET", "/metrics")
                    assert st == 200, (st, b)
                    n += 1
            except Exception as e:  # noqa: BLE001
                with lock:
                    errors.append("reloader after %d: %r" % (n, e))

        ts = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(CLIENTS)]
        rt = threading.Thread(target=reloader, daemon=True)
        rt.start()
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        done.set()
        rt.join(60)
        assert not any(t.is_alive() for t in ts + [rt]), "threads stuck"
        assert not errors, errors[:5]

        n = CLIENTS * ROUNDS * REQS
        m = metrics(s)
        total = sum(v for k, v in m.items() if k.startswith("gateway_requests_total"))
        assert total >= n, (total, n)
        st, _, _ = request(s.port, "GET", "/api/users/1")
        assert st == 200
