"""Redis AUTH: the user cache and the shared rate limits against real redis-servers that
require a password (requirepass) and an ACL user (--user), started in temp dirs on free
loopback ports: one server, a Sentinel set whose sentinels have their own password, and a
3-master cluster with requirepass/masterauth. With the right credentials the cache serves
HITs and the shared limit is exact; with a wrong password every request still succeeds (the
cache misses, the limiter uses its local share), /metrics shows the fallback, the log names
WRONGPASS and the address once per client, and no password appears in the log, /metrics,
the admin API or gatewayctl's output. The wrong-password cases fail without AUTH support
(nothing connects); the right-password cases too (-NOAUTH on the first PING).
The users that connect have exactly the README's ACL permissions (one server, Sentinel master
and sentinels, cluster). An ACL user that may not run EVALSHA/GET is logged once per streak and
counted as fallback; a wrong password in cluster mode is retried with a backoff (bounded
connections to the seed)."""
import os
import socket
import subprocess
import threading
import time

from harness import BUILD, ROOT, Stack, free_port, metrics, request, wait_until
from test_redis_ha import (Servers, _read_reply, expect_exact, expect_hit_again,
                           fallback_decisions, routes, server_args, tight, workers_in)

PW_DEFAULT = "d-Pw-0c41b2e7"   # requirepass: the default user
PW_USER = "u-Pw-7f3e9a15"      # the ACL user "gw"
PW_SENTINEL = "s-Pw-93ad06c4"  # the sentinels' own requirepass
PW_SENTINEL_USER = "su-Pw-2b7c90e1"  # the sentinels' ACL user "sent"
WRONG = "wrong-Pw-5d2e8147"
SECRETS = (PW_DEFAULT, PW_USER, PW_SENTINEL, PW_SENTINEL_USER, WRONG)
LIMITS = {"rate_limits": {"timeout_ms": 1000}}
# the README's ACL for one server (Redis section, Authentication)
README_ACL = ("~gw:* +ping +get +set +del +evalsha +eval +time +zadd +zremrangebyscore "
              "+pexpire +zcard")


def _resp(args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def acmd(port, password, *args, user=None, timeout=2.0):
    """AUTH [USER] PASSWORD, then ARGS, on one connection: ARGS's reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(_resp(["AUTH"] + ([user] if user else []) + [password]) + _resp(args))
        with s.makefile("rb") as f:
            assert _read_reply(f) == "OK"
            return _read_reply(f)


def try_acmd(port, password, *args):
    try:
        return acmd(port, password, *args, timeout=0.5)
    except (OSError, EOFError, RuntimeError, AssertionError):
        return None


def auth_server(srv, name, extra=()):
    """A redis-server with requirepass and the ACL user gw; its port."""
    port = free_port()
    srv.spawn(name, server_args(port) + ["--requirepass", PW_DEFAULT,
                                         "--user", "gw", "on", ">" + PW_USER, "~*", "&*",
                                         "+@all"] + list(extra))
    wait_until(lambda: try_acmd(port, PW_DEFAULT, "PING") == "PONG", 10, name + " answering")
    return port


def expect_no_secret(s):
    """No password in the log, /metrics, the admin API or gatewayctl's output."""
    seen = {"log": s.gw.output()}
    for path in ("/metrics", "/admin/routes", "/admin/upstreams", "/admin/dashboard"):
        st, _, b = request(s.admin_port, "GET", path,
                           headers={"Authorization": "Bearer test-token"})
        assert st == 200, (path, st)
        seen[path] = b.decode("utf-8", "replace")
    for args in (["routes", "list"], ["upstreams", "list"]):
        cp = subprocess.run([os.path.join(ROOT, BUILD, "gatewayctl"), "--admin",
                             "http://127.0.0.1:%d" % s.admin_port, "--token", "test-token"] + args,
                            capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert cp.returncode == 0, (args, cp.returncode, cp.stderr)
        seen["gatewayctl " + " ".join(args)] = cp.stdout + cp.stderr
    for where, text in seen.items():
        for pw in SECRETS:
            assert pw not in text, "a password in %s" % where


def expect_fail_open(s, workers, uid):
    """Redis refuses us: every request answered, the cache misses, the limiter falls back."""
    for _ in range(3):
        st, h, _ = request(s.port, "GET", "/api/users/%d" % uid)
        assert st == 200 and h.get("x-cache") == "MISS", (st, h)
    got = [request(s.port, "GET", "/api/tight/users/1", headers={"X-Api-Key": "wp"})[0]
           for _ in range(4)]
    assert got == [200] * 4, got
    m = metrics(s)
    assert m.get('gateway_ratelimit_workers{mode="fallback"}') == workers, m
    assert m.get('gateway_cache_requests_total{result="error"}', 0) >= 3, m
    assert fallback_decisions(s) >= 4


def connections(port):
    """The connections a redis-server accepted so far (INFO stats)."""
    info = acmd(port, PW_DEFAULT, "INFO", "stats")
    return int(next(ln.split(":")[1] for ln in info.splitlines()
                    if ln.startswith("total_connections_received:")))


def wrongpass_lines(s, addr, clients):
    """The log's WRONGPASS lines: each names ADDR; one per client (cache and limiter of each
    worker) for the whole streak of failed attempts."""
    lines = [ln for ln in s.gw.output().splitlines() if "WRONGPASS" in ln]
    assert len(lines) == clients and all(addr in ln for ln in lines), lines
    return lines


# ---- one server -------------------------------------------------------------------------------

def test_redis_auth_single_server():
    with Servers("gwtest-rauth-") as srv:
        port = auth_server(srv, "redis")
        addr = "127.0.0.1:%d" % port
        pw_file = os.path.join(srv.tmp, "redis.pw")
        with open(pw_file, "w") as f:
            f.write(PW_USER + "\n")  # as `echo` writes it: the newline is stripped
        # the ACL user, its password from a file; and the default user through GATEWAY_REDIS
        conf = dict(LIMITS, redis={"address": addr, "username": "gw", "password_file": pw_file})
        with Stack(routes=routes(), gw_conf=conf, workers=1) as s, \
                Stack(routes=routes(), gw_conf=LIMITS, workers=1,
                      env={"GATEWAY_REDIS": "redis://:%s@%s" % (PW_DEFAULT, addr)}) as s2:
            for x in (s, s2):
                wait_until(lambda: workers_in(x, "shared") == 1, 10, "shared with AUTH")
            assert request(s.port, "GET", "/api/users/7")[1].get("x-cache") == "MISS"
            expect_hit_again(s, 7)
            assert acmd(port, PW_USER, "EXISTS", "gw:users:user-service:/api/users/7",
                        user="gw") == 1
            expect_exact(s, "acl-user")
            expect_hit_again(s2, 7)  # the same Redis: s's copy
            expect_exact(s2, "default-user")

        # a wrong password (from the environment): fail open, retried, logged once
        conf = dict(LIMITS, redis={"address": addr, "username": "gw",
                                   "password_env": "GW_TEST_REDIS_PW"})
        with Stack(routes=routes(), gw_conf=conf, workers=2,
                   env={"GW_TEST_REDIS_PW": WRONG}) as s:
            expect_fail_open(s, 2, 8)

            def failed_auths():  # Redis's own count of AUTH failures for gw
                entries = acmd(port, PW_DEFAULT, "ACL", "LOG") or []
                return sum(int(dict(zip(e[::2], e[1::2]))["count"]) for e in entries
                           if dict(zip(e[::2], e[1::2])).get("username") == "gw")
            first = failed_auths()
            wait_until(lambda: failed_auths() > first + 4, 10, "AUTH retried", step=0.2)
            wrongpass_lines(s, "redis " + addr + ": unreachable: AUTH: WRONGPASS", 4)
            expect_no_secret(s)


def test_redis_auth_acl_user_without_permissions():
    """An ACL user that may connect but not run EVALSHA nor GET: said once per streak, with
    Redis's text (it looked connected and shared while every decision fell back silently);
    the worker counts as in fallback mode and each refused call in
    gateway_ratelimit_redis_errors_total; granted the commands, it is shared again."""
    with Servers("gwtest-rauth-acl-") as srv:
        port = auth_server(srv, "redis")
        addr = "127.0.0.1:%d" % port
        assert acmd(port, PW_DEFAULT, "ACL", "SETUSER", "lim", "on", ">" + PW_USER, "~*", "&*",
                    "+@all", "-evalsha", "-get") == "OK"
        conf = dict(LIMITS, redis={"address": addr, "username": "lim", "password": PW_USER})
        with Stack(routes=routes(), gw_conf=conf, workers=1) as s:
            wait_until(lambda: "connected: limits are shared" in s.gw.output(), 10, "connected")
            got = tight(s, "acl", 12)
            assert got == [200] * 10 + [429] * 2, got  # decided locally: rate/1
            for _ in range(2):
                st, h, _ = request(s.port, "GET", "/api/users/12")
                assert st == 200 and h.get("x-cache") == "MISS", (st, h)
            m = metrics(s)
            assert m.get('gateway_ratelimit_workers{mode="fallback"}') == 1, m
            assert m.get('gateway_ratelimit_workers{mode="shared"}') == 0, m
            assert m.get("gateway_ratelimit_redis_errors_total", 0) >= 1, m
            assert fallback_decisions(s) == 12
            assert m.get('gateway_cache_requests_total{result="error"}', 0) >= 2, m
            log = s.gw.output().splitlines()
            rl = [ln for ln in log if "EVALSHA refused" in ln]
            assert len(rl) == 1 and ("ratelimit: worker 0: redis %s: EVALSHA refused: NOPERM" % addr
                                     in rl[0]) and "'evalsha'" in rl[0] \
                and "decisions fall back to rate/1 per instance" in rl[0], rl
            cache = [ln for ln in log if "GET refused" in ln]
            assert len(cache) == 1 and ("cache: redis %s: GET refused: NOPERM" % addr
                                        in cache[0]), cache
            # granted exactly what the README lists for one server: the next call is
            # answered, shared again; the cache serves
            assert acmd(port, PW_DEFAULT, "ACL", "SETUSER", "lim", "reset", "on", ">" + PW_USER,
                        *README_ACL.split()) == "OK"
            assert tight(s, "acl-2", 1) == [200]
            wait_until(lambda: workers_in(s, "shared") == 1, 5, "shared again")
            assert "the script answers again: limits are shared" in s.gw.output()
            expect_exact(s, "acl-3")
            expect_hit_again(s, 12)
            expect_no_secret(s)


class Redis5:
    """A stand-in for a Redis before 6 on a free port: AUTH takes one argument only (any
    other AUTH is "wrong number of arguments"), PING answers."""

    def __init__(self):
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stop:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        with c, c.makefile("rb") as f:
            try:
                while True:
                    args = _read_reply(f)
                    if args[0].upper() == "AUTH":
                        c.sendall(b"+OK\r\n" if len(args) == 2 else
                                  b"-ERR wrong number of arguments for 'auth' command\r\n")
                    else:
                        c.sendall(b"+PONG\r\n" if args[0].upper() == "PING" else b"$-1\r\n")
            except (OSError, EOFError, RuntimeError, IndexError, TypeError):
                return

    def close(self):
        self.stop = True
        self.srv.close()


def test_redis_auth_username_on_redis5_hints():
    """A user name against a Redis before 6: the log line says what to change."""
    r5 = Redis5()
    try:
        conf = dict(LIMITS, redis={"address": "127.0.0.1:%d" % r5.port, "username": "gw",
                                   "password": PW_USER})
        with Stack(routes=routes(), gw_conf=conf, workers=1) as s:
            expect_fail_open(s, 1, 13)
            lines = [ln for ln in s.gw.output().splitlines() if "AUTH: ERR wrong number" in ln]
            assert len(lines) == 2 and all(
                "(AUTH with a user name needs Redis 6 or later: leave out \"username\")" in ln
                for ln in lines), lines
            expect_no_secret(s)
    finally:
        r5.close()


# ---- Sentinel --------------------------------------------------------------------------------

def start_sentinel(srv, master_port, name):
    """One sentinel with its own requirepass and ACL user "sent", watching NAME (which needs
    PW_DEFAULT)."""
    port = free_port()
    d = os.path.join(srv.tmp, "sentinel")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "sentinel.conf"), "w") as f:
        f.write("port %d\nbind 127.0.0.1\ndir %s\nrequirepass %s\n" % (port, d, PW_SENTINEL) +
                "user sent on >%s +sentinel|get-master-addr-by-name\n" % PW_SENTINEL_USER +
                "sentinel monitor %s 127.0.0.1 %d 1\n" % (name, master_port) +
                "sentinel auth-pass %s %s\n" % (name, PW_DEFAULT))
    srv.spawn("sentinel", ["redis-sentinel", os.path.join(d, "sentinel.conf")])
    wait_until(lambda: try_acmd(port, PW_SENTINEL, "SENTINEL", "GET-MASTER-ADDR-BY-NAME",
                                name) is not None, 10, "the sentinel answering")
    return port


def test_redis_auth_sentinel():
    name = "gwauth"
    with Servers("gwtest-rauth-sentinel-") as srv:
        mport = auth_server(srv, "master")
        # the master's ACL user gets what the README lists for a Sentinel master
        assert acmd(mport, PW_DEFAULT, "ACL", "SETUSER", "gw", "reset", "on", ">" + PW_USER,
                    *(README_ACL + " +role").split()) == "OK"
        sport = start_sentinel(srv, mport, name)
        base = {"sentinels": ["127.0.0.1:%d" % sport], "master_name": name,
                "username": "gw", "password": PW_USER}
        # the sentinel's requirepass (from the environment), its ACL user; a wrong password
        good = dict(LIMITS, redis=dict(base, sentinel_password_env="GW_TEST_SENTINEL_PW"))
        good_user = dict(LIMITS, redis=dict(base, sentinel_username="sent",
                                            sentinel_password=PW_SENTINEL_USER))
        bad = dict(LIMITS, redis=dict(base, sentinel_password=WRONG))
        with Stack(routes=routes(), gw_conf=good, workers=1,
                   env={"GW_TEST_SENTINEL_PW": PW_SENTINEL}) as s, \
                Stack(routes=routes(), gw_conf=good_user, workers=1) as s1, \
                Stack(routes=routes(), gw_conf=bad, workers=1) as s2:
            for x in (s, s1):
                wait_until(lambda: workers_in(x, "shared") == 1, 10, "shared through the sentinel")
            expect_exact(s1, "sentinel-acl")
            assert request(s.port, "GET", "/api/users/9")[1].get("x-cache") == "MISS"
            expect_hit_again(s, 9)
            expect_exact(s, "sentinel")
            # the sentinel refuses s2: no master known, fail open
            expect_fail_open(s2, 1, 10)
            wrongpass_lines(s2, "redis sentinel 127.0.0.1:%d: unreachable: AUTH: WRONGPASS"
                            % sport, 2)
            expect_no_secret(s2)


# ---- Cluster -----------------------------------------------------------------------------------

def test_redis_auth_cluster():
    with Servers("gwtest-rauth-cluster-") as srv:
        ports = [auth_server(srv, "node%d" % i, ["--cluster-enabled", "yes",
                                                 "--cluster-port", str(free_port()),
                                                 "--cluster-config-file", "nodes.conf",
                                                 "--masterauth", PW_DEFAULT])
                 for i in range(3)]
        cp = subprocess.run(["redis-cli", "-a", PW_DEFAULT, "--no-auth-warning", "--cluster",
                             "create"] + ["127.0.0.1:%d" % p for p in ports] +
                            ["--cluster-replicas", "0", "--cluster-yes"],
                            capture_output=True, text=True, timeout=20)
        assert cp.returncode == 0, cp.stdout[-2000:] + cp.stderr[-2000:]
        wait_until(lambda: all("cluster_state:ok" in (try_acmd(p, PW_DEFAULT, "CLUSTER", "INFO")
                                                      or "") for p in ports),
                   20, "cluster_state:ok on every node", step=0.1)
        pw_file = os.path.join(srv.tmp, "cluster.pw")
        with open(pw_file, "w") as f:
            f.write(PW_DEFAULT)  # no trailing newline
        # an ACL user with what the README lists for a cluster, the same password as the
        # default user's
        for p in ports:
            assert acmd(p, PW_DEFAULT, "ACL", "SETUSER", "clu", "on", ">" + PW_DEFAULT,
                        *(README_ACL + " +cluster|slots +asking").split()) == "OK"
        conf = dict(LIMITS, redis={"cluster": ["127.0.0.1:%d" % ports[0]], "username": "clu",
                                   "password_file": pw_file})
        with Stack(routes=routes(), gw_conf=conf, workers=1) as s:
            wait_until(lambda: workers_in(s, "shared") == 1, 15, "shared through the cluster")
            assert "redis cluster: slot map: 3 masters, 16384 of 16384 slots" in s.gw.output()
            # an api key and a user on each master: every node's connection is authenticated
            slots = acmd(ports[0], PW_DEFAULT, "CLUSTER", "SLOTS")

            def master_of(key):
                slot = acmd(ports[0], PW_DEFAULT, "CLUSTER", "KEYSLOT", key)
                return next(r[2][1] for r in slots if r[0] <= slot <= r[1])
            for p in ports:
                api = next("c%d" % i for i in range(1000)
                           if master_of("gw:rl:tight:h:c%d" % i) == p)
                uid = next(i for i in range(1, 1000)
                           if master_of("gw:users:user-service:/api/users/%d" % i) == p)
                assert request(s.port, "GET", "/api/users/%d" % uid)[1].get("x-cache") == "MISS"
                expect_hit_again(s, uid)
                expect_exact(s, api)
            expect_no_secret(s)

        # a wrong password: fail open, and the seed is retried with a backoff (the seed round
        # had none: a failed AUTH reconnected at once, ~5,000 connections a second)
        conf = dict(LIMITS, redis={"cluster": ["127.0.0.1:%d" % ports[0]], "password": WRONG})
        with Stack(routes=routes(), gw_conf=conf, workers=1) as s:
            expect_fail_open(s, 1, 11)
            first = connections(ports[0])
            time.sleep(2)
            seen = connections(ports[0]) - first
            assert seen < 50, "%d connections to the seed in 2 s" % seen
            wrongpass_lines(s, "redis 127.0.0.1:%d: unreachable: AUTH: WRONGPASS" % ports[0], 2)
            expect_no_secret(s)
