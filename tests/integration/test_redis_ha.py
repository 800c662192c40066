"""Redis as a distributed engine (issue 13 §4): the user cache and the shared rate limits on a
real Redis Cluster (3 masters, 3 replicas) and on a real Sentinel set (1 master, 1 replica,
3 sentinels), each started once per test in its own temp dir on free loopback ports, with
short failure detection (cluster-node-timeout / down-after-milliseconds 1000 ms). A master is
SIGKILLed under load: no client request fails (the cache fails open, the limiter decides
with its local share), and afterwards the cache serves HITs and the shared limit is exact
again on the promoted replica.

The cluster test takes about 6 s, the sentinel test about 13 s (the sentinels need a few
seconds to find each other before a failover can happen), on the plain build and about the
same under ASan (measured: 5.7 s and 14.8 s), so both run in both of run_all.py's integration
runs: the ASan run is where a use-after-free in a failover path would show. Not under
ThreadSanitizer (one loop per worker, nothing shared: the TSan subset keeps its own Redis
tests). tests/unit/composers/test_redis_topo covers the parsing."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from harness import TSAN, Skip, Stack, free_port, metrics, request, wait_until

NODE_TIMEOUT_MS = 1000
USERS = {"id": "users", "path": "/api/users/**", "upstream": "user-service",
         "rewrites": {"user-service": {"strip_prefix": "/api"}}, "cache": True}


def routes():
    return [
        # generous: never refuses; the load goes through it
        {"id": "open", "path": "/api/open/**", "upstream": "user-service",
         "rewrites": {"user-service": {"strip_prefix": "/api/open"}},
         "rate_limit": {"rate": 1, "per": "1h", "burst": 1000000, "key": "route"}},
        # the exactness probe: per X-Api-Key, 10 per hour (nothing refills during a test)
        {"id": "tight", "path": "/api/tight/**", "upstream": "user-service",
         "rewrites": {"user-service": {"strip_prefix": "/api/tight"}},
         "rate_limit": {"rate": 1, "per": "1h", "burst": 10, "key": "header:X-Api-Key"}},
        USERS,
        {"id": "legacy", "path": "/**", "upstream": "legacy"},
    ]


def not_under_tsan():
    if TSAN:
        raise Skip("failover tests do not run under ThreadSanitizer (see the module docstring)")


# ---- RESP, arrays included ----------------------------------------------------------------

def _read_reply(f):
    line = f.readline()
    if not line:
        raise EOFError("redis closed")
    kind, val = line[:1], line[1:-2].decode()
    if kind == b"+":
        return val
    if kind == b"-":
        raise RuntimeError("redis: " + val)
    if kind == b":":
        return int(val)
    if kind == b"$":
        n = int(val)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode("utf-8", "replace")
    if kind == b"*":
        n = int(val)
        return None if n < 0 else [_read_reply(f) for _ in range(n)]
    raise RuntimeError("unexpected reply %r" % line)


def cmd(port, *args, timeout=2.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        s.sendall(out)
        with s.makefile("rb") as f:
            return _read_reply(f)


def try_cmd(port, *args):
    try:
        return cmd(port, *args, timeout=0.5)
    except (OSError, EOFError, RuntimeError):
        return None


class Servers:
    """Redis processes we started (each in TMP/<name>); close() kills exactly those pids."""

    def __init__(self, prefix):
        for b in ("redis-server", "redis-cli", "redis-sentinel"):
            assert shutil.which(b), "%s not found: apt-get install redis-server redis-sentinel" % b
        self.tmp = tempfile.mkdtemp(prefix=prefix)
        self.procs = {}

    def spawn(self, name, args):
        d = os.path.join(self.tmp, name)
        os.makedirs(d, exist_ok=True)
        log = open(os.path.join(d, "log"), "wb")
        self.procs[name] = (subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=d),
                            log)
        return d

    def wait_ping(self, port, what, timeout=10.0):
        wait_until(lambda: try_cmd(port, "PING") == "PONG", timeout, what + " answering PING")

    def kill(self, name):
        p, log = self.procs[name]
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
        log.close()

    def close(self):
        for name in list(self.procs):
            self.kill(name)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def server_args(port):
    return ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no"]


# ---- the load and the proofs ---------------------------------------------------------------

class Load:
    """Threads sending keep-alive GETs to PATHS until stopped; every status is kept."""

    def __init__(self, port, paths, threads=3):
        self.port, self.paths = port, paths
        self.stop_ev = threading.Event()
        self.statuses = []
        self.lock = threading.Lock()
        self.ts = [threading.Thread(target=self.run, args=(i,)) for i in range(threads)]
        for t in self.ts:
            t.start()

    def run(self, i):
        n = 0
        while not self.stop_ev.is_set():
            path = self.paths[(i + n) % len(self.paths)]
            n += 1
            try:
                st = request(self.port, "GET", path, timeout=10.0)[0]
            except OSError as e:
                st = "error: %s" % e
            with self.lock:
                self.statuses.append(st)

    def count(self):
        with self.lock:
            return len(self.statuses)

    def stop(self):
        self.stop_ev.set()
        for t in self.ts:
            t.join()
        return self.statuses


def workers_in(s, mode):
    return metrics(s).get('gateway_ratelimit_workers{mode="%s"}' % mode, 0)


def shared_allowed(s, route="tight"):
    return metrics(s).get('gateway_ratelimit_requests_total{route="%s",key="header",'
                          'mode="shared",result="allowed"}' % route, 0)


def expect_hit_again(s, uid):
    """The cache answers from Redis: a fetch may be needed once, then HIT."""
    def hit():
        st, h, _ = request(s.port, "GET", "/api/users/%d" % uid)
        assert st == 200, (st, h)
        return h.get("x-cache") == "HIT"
    wait_until(hit, 15, "/api/users/%d served as HIT again" % uid, step=0.1)


def expect_exact(s, api_key, burst=10, extra=3):
    """BURST + EXTRA requests with a fresh key: exactly BURST pass, all decided by Redis."""
    before = shared_allowed(s)
    got = [request(s.port, "GET", "/api/tight/users/1", headers={"X-Api-Key": api_key})[0]
           for _ in range(burst + extra)]
    assert got == [200] * burst + [429] * extra, (api_key, got)
    assert shared_allowed(s) == before + burst, (before, shared_allowed(s))


def kill_under_load(s, paths, kill, promoted, what):
    """KILL a master while threads load S through PATHS; wait until PROMOTED() and every
    worker is shared again, load some more. Every request must have been answered 200."""
    load = Load(s.port, paths)
    try:
        wait_until(lambda: load.count() > 200, 20, "load before the kill")
        kill()
        t_kill = time.monotonic()
        wait_until(promoted, 30, "a replica promoted", step=0.1)
        t_promoted = time.monotonic()
        wait_until(lambda: workers_in(s, "shared") == s.workers, 20, "shared again")
        t_shared = time.monotonic()
        n = load.count()
        wait_until(lambda: load.count() > n + 200, 20, "load after the failover")
    finally:
        got = load.stop()
    print("  %s: promoted %.1f s after the kill, shared again %.1f s after; %d requests under "
          "load" % (what, t_promoted - t_kill, t_shared - t_kill, len(got)))
    assert set(got) == {200}, sorted(set(map(str, got)))  # nothing failed


def fallback_decisions(s, route="tight", key="header"):
    m = metrics(s)
    return sum(m.get('gateway_ratelimit_requests_total{route="%s",key="%s",mode="fallback",'
                     'result="%s"}' % (route, key, r), 0) for r in ("allowed", "limited"))


def tight(s, api_key, n):
    return [request(s.port, "GET", "/api/tight/users/1", headers={"X-Api-Key": api_key})[0]
            for _ in range(n)]


def check_slot_migration(s, ports):
    """One bucket's slot moved to another master while the gateway uses it, as
    `redis-cli --cluster reshard` does: IMPORTING/MIGRATING and MIGRATE (the old master then
    answers -ASK), then SETSLOT NODE everywhere (-MOVED). The bucket's count carries over and
    every decision stays Redis's: the redirections were followed, none fell back."""
    api = "m1"
    key = "gw:rl:tight:h:" + api
    src = master_of(ports, key)
    dst = next(p for p in ports if p != src and
               "role:master" in (try_cmd(p, "INFO", "replication") or ""))
    ids = {p: cmd(p, "CLUSTER", "MYID") for p in (src, dst)}
    slot = cmd(src, "CLUSTER", "KEYSLOT", key)
    fb = fallback_decisions(s)
    first = tight(s, api, 4)
    assert cmd(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[src]) == "OK"
    assert cmd(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[dst]) == "OK"
    assert cmd(src, "MIGRATE", "127.0.0.1", dst, key, 0, 5000) == "OK"
    asked = tight(s, api, 3)  # the old master has no key now: -ASK to the new one
    for p in ports:
        if "role:master" in (try_cmd(p, "INFO", "replication") or ""):
            assert cmd(p, "CLUSTER", "SETSLOT", slot, "NODE", ids[dst]) == "OK"
    moved = tight(s, api, 5)  # the gateway's map still says src: -MOVED
    assert first + asked + moved == [200] * 10 + [429] * 2, (first, asked, moved)
    assert fallback_decisions(s) == fb, "a redirection was not followed"
    assert master_of(ports, key) == dst


def check_split_eviction(s, ports, uid):
    """A PUT evicts the path under every upstream: in a cluster one DEL per key (a DEL of
    keys in two slots would be refused with -CROSSSLOT). Both copies are gone from Redis."""
    keys = ["gw:users:%s:/api/users/%d" % (u, uid) for u in ("legacy", "user-service")]
    assert len({cmd(ports[0], "CLUSTER", "KEYSLOT", k) for k in keys}) == 2
    legacy_master = master_of(ports, keys[0])
    assert cmd(legacy_master, "SET", keys[0], "x") == "OK"
    st = request(s.port, "PUT", "/api/users/%d" % uid, headers={"Content-Type":
                 "application/json"}, body=b'{"name": "Ada"}')[0]
    assert st == 200, st
    for k in keys:
        wait_until(lambda: cmd(master_of(ports, k), "EXISTS", k) == 0, 2, "%s evicted" % k)


# ---- Redis Cluster ---------------------------------------------------------------------------

def start_cluster(n=6):
    """A started cluster: (Servers, node ports). `redis-cli --cluster create` has been seen
    to wait forever for the nodes to agree on a loaded box (1 run in 10): a second cluster on
    fresh ports then."""
    for attempt in range(2):
        srv = Servers("gwtest-rcluster-")
        try:
            ports = _cluster_nodes(srv, n)
            cp = subprocess.run(["redis-cli", "--cluster", "create"] +
                                ["127.0.0.1:%d" % p for p in ports] +
                                ["--cluster-replicas", "1", "--cluster-yes"],
                                capture_output=True, text=True, timeout=20)
            assert cp.returncode == 0, cp.stdout[-2000:] + cp.stderr[-2000:]
            wait_until(lambda: all("cluster_state:ok" in (try_cmd(p, "CLUSTER", "INFO") or "")
                                   for p in ports), 20, "cluster_state:ok on every node",
                       step=0.1)
            return srv, ports
        except subprocess.TimeoutExpired:
            srv.close()
            if attempt:
                raise
            print("  redis-cli --cluster create hung: once more on fresh ports")
        except BaseException:
            srv.close()
            raise


def _cluster_nodes(srv, n):
    ports = []
    for i in range(n):
        port, bus = free_port(), free_port()
        srv.spawn("node%d" % i, server_args(port) + [
            "--cluster-enabled", "yes", "--cluster-port", str(bus),
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
            "--cluster-require-full-coverage", "no",  # the other masters serve meanwhile
            "--cluster-replica-validity-factor", "0"])  # a replica may always take over
        ports.append(port)
    for p in ports:
        srv.wait_ping(p, "cluster node %d" % p)
    return ports


def master_of(ports, key):
    """The port of the master serving KEY's slot, asked of a live node."""
    for p in ports:
        slot = try_cmd(p, "CLUSTER", "KEYSLOT", key)
        slots = try_cmd(p, "CLUSTER", "SLOTS")
        if slot is None or not slots:
            continue
        for r in slots:
            if r[0] <= slot <= r[1]:
                return r[2][1]
    return None


def test_cluster_master_killed_under_load():
    not_under_tsan()
    srv, ports = start_cluster()
    with srv:
        conf = {"redis": {"cluster": ["127.0.0.1:%d" % p for p in ports[:2]]},
                "rate_limits": {"timeout_ms": 1000}}
        s = Stack(routes=routes(), gw_conf=conf, workers=2)
        with s:
            wait_until(lambda: workers_in(s, "shared") == 2, 15, "2 workers shared")
            # the victim: the master of the "open" limit's bucket; a user and an api key whose
            # keys live there too, so the cache and the exact limit are proven on its slots
            victim = master_of(ports, "gw:rl:open:route:")
            uid = next(i for i in range(1, 500)
                       if master_of(ports, "gw:users:user-service:/api/users/%d" % i) == victim)
            api = next("k%d" % i for i in range(1, 500)
                       if master_of(ports, "gw:rl:tight:h:k%d" % i) == victim)
            api2 = next("j%d" % i for i in range(1, 500)
                        if master_of(ports, "gw:rl:tight:h:j%d" % i) == victim)
            assert request(s.port, "GET", "/api/users/%d" % uid)[1].get("x-cache") == "MISS"
            expect_hit_again(s, uid)
            expect_exact(s, api)
            # the slot map is in use: keys on every master were served (MOVED would say not)
            assert "redis cluster: slot map: 3 masters, 16384 of 16384 slots" in s.gw.output()
            check_slot_migration(s, ports)
            check_split_eviction(s, ports, uid)
            expect_hit_again(s, uid)

            live = [p for p in ports if p != victim]
            kill_under_load(
                s, ["/api/open/users/1", "/api/users/%d" % uid, "/api/open/users/2"],
                lambda: srv.kill("node%d" % ports.index(victim)),
                lambda: master_of(live, "gw:rl:open:route:") not in (None, victim), "cluster")
            m = metrics(s)
            assert m.get('gateway_ratelimit_requests_total{route="open",key="route",'
                         'mode="fallback",result="allowed"}', 0) > 0, "no fallback seen"
            # resumed on the new master: HITs, and the limit exact again (a fresh key)
            expect_hit_again(s, uid)
            expect_exact(s, api2)


# ---- Redis Sentinel ----------------------------------------------------------------------------

def start_sentinels(srv, master_port, name, n=3):
    ports = []
    for i in range(n):
        port = free_port()
        d = os.path.join(srv.tmp, "sentinel%d" % i)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "sentinel.conf"), "w") as f:
            f.write("port %d\nbind 127.0.0.1\ndir %s\n" % (port, d) +
                    "sentinel monitor %s 127.0.0.1 %d 2\n" % (name, master_port) +
                    "sentinel down-after-milliseconds %s %d\n" % (name, NODE_TIMEOUT_MS) +
                    "sentinel failover-timeout %s 5000\n" % name)
        srv.spawn("sentinel%d" % i, ["redis-sentinel", os.path.join(d, "sentinel.conf")])
        ports.append(port)
    for p in ports:
        srv.wait_ping(p, "sentinel %d" % p)

    def ready(p):
        m = try_cmd(p, "SENTINEL", "MASTER", name)
        if not m:
            return False
        kv = dict(zip(m[::2], m[1::2]))
        return int(kv.get("num-slaves", 0)) >= 1 and int(kv.get("num-other-sentinels", 0)) >= n - 1
    wait_until(lambda: all(ready(p) for p in ports), 20,
               "sentinels know the replica and each other", step=0.1)
    return ports


def test_sentinel_master_killed_under_load():
    not_under_tsan()
    name = "gwmaster"
    with Servers("gwtest-rsentinel-") as srv:
        mport, rport = free_port(), free_port()
        srv.spawn("master", server_args(mport))
        srv.wait_ping(mport, "master")
        srv.spawn("replica", server_args(rport) + ["--replicaof", "127.0.0.1", str(mport)])
        srv.wait_ping(rport, "replica")
        wait_until(lambda: "master_link_status:up" in (try_cmd(rport, "INFO", "replication") or ""),
                   10, "the replica in sync")
        sports = start_sentinels(srv, mport, name)
        # two instances, "instances" not configured: N is learned from the registry in Redis
        conf = {"redis": {"sentinels": ["127.0.0.1:%d" % p for p in sports], "master_name": name},
                "rate_limits": {"timeout_ms": 1000}}
        with Stack(routes=routes(), gw_conf=conf, workers=2) as s, \
                Stack(routes=routes(), gw_conf=conf, workers=1) as s2:
            wait_until(lambda: workers_in(s, "shared") == 2 and workers_in(s2, "shared") == 1,
                       15, "both instances shared")
            wait_until(lambda: try_cmd(mport, "ZCARD", "gw:rl:instances") == 2, 10,
                       "two instances in the registry")
            # every worker's next heartbeat (each second) reads the count: the divisor
            wait_until(lambda: all(metrics(x).get("gateway_ratelimit_instances") == 2
                                   for x in (s, s2)), 10, "both instances count 2")
            assert request(s.port, "GET", "/api/users/7")[1].get("x-cache") == "MISS"
            expect_hit_again(s, 7)
            expect_exact(s, "before")

            kill_under_load(
                s, ["/api/open/users/1", "/api/users/7"], lambda: srv.kill("master"),
                lambda: "role:master" in (try_cmd(rport, "INFO", "replication") or ""),
                "sentinel")
            out = s.gw.output()
            # the fallback divided by the learned count of instances
            assert "limits fall back to rate/2 per instance" in out, out[-3000:]
            assert "the master is now 127.0.0.1:%d" % rport in out, out[-3000:]
            expect_hit_again(s, 7)
            expect_exact(s, "after")
            wait_until(lambda: workers_in(s2, "shared") == 1, 20, "the other instance too")
            expect_exact(s2, "after-2")
