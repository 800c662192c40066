"""Integration-test harness: starts build/mockd and build/gateway on free loopback ports in a
temp dir, talks raw HTTP over sockets, and stops exactly the processes it started (by pid).

Tests are plain functions named test_* in tests/integration/test_*.py taking no arguments;
run.py runs them. Use `with Stack(...) as s:` to get a gateway in front of mockd upstreams.
"""
import copy
import glob
import pwd
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

BUILD = os.environ.get("GW_BUILD", "build")


class Skip(Exception):
    """Raised by a test that cannot run here (e.g. no browser starts): run.py reports it as
    SKIPPED with the message, and counts it apart from the passed ones."""
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SANITIZED = "san" in BUILD
# GW_VALGRIND=1: the gateway runs under valgrind (memcheck); any error or definite leak makes
# it exit 99, which Stack's exit check reports.
VALGRIND = os.environ.get("GW_VALGRIND") == "1"
VALGRIND_CMD = ["valgrind", "--quiet", "--error-exitcode=99", "--leak-check=full",
                "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite",
                "--track-fds=no", "--child-silent-after-fork=yes"]
START_TIMEOUT = 60.0 if VALGRIND else 20.0 if SANITIZED else 10.0
# Upper bounds on latency ("the degraded answer leaves within the leg timeout plus slack") are
# behaviour, not speed, but the slack must cover the sanitizer's slowdown: multiply by this.
SLACK_SCALE = 2.0 if SANITIZED else 1.0
# ThreadSanitizer builds (make SANITIZE=thread, build/tsan): any data race report makes the
# process exit 66 at the end (halt_on_error=0 lets it run on and report every race), which
# Stack's exit check reports; "WARNING: ThreadSanitizer" in its log fails the test as well.
# Children inherit it (set for every binary: the other builds ignore it).
TSAN = "tsan" in os.path.basename(os.path.normpath(BUILD))
os.environ.setdefault("TSAN_OPTIONS", "exitcode=66:halt_on_error=0:second_deadlock_stack=1:"
                      "suppressions=" + os.path.join(ROOT, "tests", "tsan.supp"))


_handed_out = set()


def free_port():
    """A free loopback port, never the same one twice in this process (the kernel may hand
    out a just-released port again before the test binds it)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_port(port, timeout=None):
    timeout = timeout or START_TIMEOUT
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("port %d never opened" % port)


class Proc:
    """A child process we started; stop() signals exactly this pid."""

    def __init__(self, args, log_path, env=None):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        e = dict(os.environ)
        e.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=23")
        e.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1:exitcode=24")
        if env:
            e.update(env)
        self.p = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=e, cwd=ROOT)
        self.pid = self.p.pid

    def stop(self, sig=signal.SIGTERM, timeout=60.0 if VALGRIND else 15.0):
        """Returns the exit code (-9 if it had to be killed)."""
        if self.p.poll() is None:
            os.kill(self.pid, sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.pid, signal.SIGKILL)
                self.p.wait()
                self.log.close()
                return -9
        self.log.close()
        return self.p.returncode

    def output(self):
        if not self.log.closed:
            self.log.flush()
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            # its temp dir was removed under it (by something outside the test): say so
            # rather than hide the test's own failure behind this error
            return "(%s: log file gone: its directory was removed during the run)\n" % self.log_path

    def rss_kib(self, field="VmHWM"):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0


def sanitizer_errors(text):
    marks = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
             "WARNING: ThreadSanitizer", "ThreadSanitizer: reported",
             "Invalid read", "Invalid write", "uninitialised", "definitely lost",
             "Invalid free", "Mismatched free")
    return [l for l in text.splitlines() if any(m in l for m in marks)]


def tsan_report(text, limit=6000):
    """The ThreadSanitizer reports in TEXT (each WARNING block up to its ====== line)."""
    blocks, cur = [], None
    for l in text.splitlines():
        if "WARNING: ThreadSanitizer" in l:
            cur = [l]
        elif cur is not None:
            cur.append(l)
            if l.startswith("=================="):
                blocks.append("\n".join(cur))
                cur = None
    return "\n".join(blocks)[:limit]


class Mockd:
    def __init__(self, tmp, name, extra=()):
        self.port = free_port()
        self.name = name
        self.proc = Proc([os.path.join(ROOT, BUILD, "mockd"), "--listen", "127.0.0.1:%d" % self.port,
                          "--name", name] + list(extra), os.path.join(tmp, "mockd-%s.log" % name))
        wait_port(self.port)

    def stats(self):
        st, _, body = request(self.port, "GET", "/__stats")
        return json.loads(body)

    def reset(self):
        request(self.port, "POST", "/__stats/reset")

    def script(self, path, status=200, headers=(), body=""):
        """PUT /__script: from now on GET/HEAD of PATH answer STATUS with HEADERS (a list of
        (name, value), repeats allowed) and BODY (text without CR/LF)."""
        hs = [("X-Script-Status", str(status))] + [("X-Script-Header", "%s: %s" % kv)
                                                   for kv in headers]
        if body:
            hs.append(("X-Script-Body", body))
        raw = ("PUT /__script?path=%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
               "Content-Length: 0\r\n" % path + "".join("%s: %s\r\n" % kv for kv in hs) + "\r\n")
        s = connect(self.port, 5)
        try:
            s.sendall(raw.encode("latin-1"))
            r, _ = read_response(s)
        finally:
            s.close()
        assert r.status == 200, (r.status, r.body)


DEFAULT_ROUTES = [
    {"id": "users", "path": "/api/users/**", "upstream": "user-service", "rewrite": {"strip_prefix": "/api"}},
    {"id": "legacy", "path": "/**", "upstream": "legacy"},
]


class Stack:
    """mockd upstreams + one gateway. upstreams: {name: n_endpoints or list of extra mockd args}.
    gw_conf: dict merged into the generated gateway.json (e.g. {"limits": {...}})."""

    def __init__(self, upstreams=None, routes=None, gw_conf=None, workers=1, start=True, env=None):
        self.tmp = tempfile.mkdtemp(prefix="gwtest-")
        self.mocks = {}
        self.workers = workers
        self.env = env
        upstreams = upstreams or {"legacy": 1, "user-service": 1}
        conf_up = {}
        for name, spec in upstreams.items():
            n = spec if isinstance(spec, int) else 1
            extra = [] if isinstance(spec, int) else spec
            ms = [Mockd(self.tmp, "%s-%d" % (name, i), extra) for i in range(n)]
            self.mocks[name] = ms
            conf_up[name] = {"endpoints": ["127.0.0.1:%d" % m.port for m in ms]}
        self.port = free_port()
        self.admin_port = free_port()
        self.access_log = os.path.join(self.tmp, "access.log")
        self.conf = {
            "listen": "127.0.0.1:%d" % self.port,
            "workers": workers,
            "admin": {"listen": "127.0.0.1:%d" % self.admin_port, "token": "test-token"},
            "upstreams": conf_up,
            "log": {"access": self.access_log},
            "routes": {"source": "file", "file": "routes.json"},
        }
        for k, v in (gw_conf or {}).items():
            if isinstance(v, dict) and isinstance(self.conf.get(k), dict):
                for k2, v2 in v.items():
                    if isinstance(v2, dict) and isinstance(self.conf[k].get(k2), dict):
                        self.conf[k][k2].update(v2)
                    else:
                        self.conf[k][k2] = v2
            else:
                self.conf[k] = v
        self.routes = {"routes": copy.deepcopy(routes if routes is not None else DEFAULT_ROUTES)}
        self.conf_path = os.path.join(self.tmp, "gateway.json")
        self.write()
        self.gw = None
        if start:
            try:
                self.start()
            except Exception:
                self.stop()  # stop the mockds already started
                raise

    def write(self):
        with open(self.conf_path, "w") as f:
            json.dump(self.conf, f)
        with open(os.path.join(self.tmp, "routes.json"), "w") as f:
            json.dump(self.routes, f)

    def start(self):
        self.gw = Proc((VALGRIND_CMD if VALGRIND else []) +
                       [os.path.join(ROOT, BUILD, "gateway"), "-c", self.conf_path],
                       os.path.join(self.tmp, "gateway.log"), env=self.env)
        wait_port(self.port)
        wait_port(self.admin_port)  # the admin listener opens after the workers

    def mock(self, upstream, i=0):
        return self.mocks[upstream][i]

    def stop(self):
        rc = self.gw.stop() if self.gw else 0
        for ms in self.mocks.values():
            for m in ms:
                m.proc.stop()
        return rc

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        rc = self.stop()
        out = self.gw.output() if self.gw else ""
        errs = sanitizer_errors(out)
        if et is None:
            assert not errs, "sanitizer errors in gateway (%s/gateway.log):\n" % self.tmp + "\n".join(errs) + (
                "\nThreadSanitizer report:\n" + tsan_report(out) if TSAN else "")
            assert rc == 0, "gateway exited %s%s; log:\n%s" % (
                rc, " (66: ThreadSanitizer reports)" if rc == 66 and TSAN else "", out[-2000:])
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            print("  (kept %s for inspection)" % self.tmp)
        return False


# ---- raw HTTP ---------------------------------------------------------------------------

def connect(port, timeout=10.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Response:
    def __init__(self, status, reason, headers, body):
        self.status, self.reason, self.headers, self.body = status, reason, headers, body

    def header(self, name, default=None):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return default

    def json(self):
        return json.loads(self.body)


def read_response(sock, head_request=False, buf=b""):
    """Reads one response from sock. Returns (Response, leftover bytes). Raises on EOF."""
    while b"\r\n\r\n" not in buf:
        d = sock.recv(65536)
        if not d:
            raise EOFError("connection closed before a response head (%r)" % buf[:200])
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    _, status, reason = (lines[0].split(" ", 2) + [""])[:3]
    headers = [tuple(x.strip() for x in l.split(":", 1)) for l in lines[1:]]
    r = Response(int(status), reason, headers, b"")
    if head_request or r.status in (204, 304) or 100 <= r.status < 200:
        return r, rest
    te = r.header("transfer-encoding")
    cl = r.header("content-length")
    if te and "chunked" in te.lower():
        body = b""
        while True:
            while b"\r\n" not in rest:
                d = sock.recv(65536)
                if not d:
                    raise EOFError("eof in chunk size")
                rest += d
            line, _, rest = rest.partition(b"\r\n")
            size = int(line.split(b";")[0], 16)
            while len(rest) < size + 2:
                d = sock.recv(65536)
                if not d:
                    raise EOFError("eof in chunk")
                rest += d
            body += rest[:size]
            rest = rest[size + 2:]
            if size == 0:
                break
        r.body = body
        return r, rest
    if cl is not None:
        n = int(cl)
        while len(rest) < n:
            d = sock.recv(65536)
            if not d:
                raise EOFError("eof in body (%d of %d)" % (len(rest), n))
            rest += d
        r.body = rest[:n]
        return r, rest[n:]
    while True:  # close-delimited
        d = sock.recv(65536)
        if not d:
            break
        rest += d
    r.body = rest
    return r, b""


def request(port, method, path, headers=None, body=b"", timeout=10.0):
    """One request on a new connection. Returns (status, headers dict lower-cased, body)."""
    s = connect(port, timeout)
    try:
        hs = {"Host": "127.0.0.1:%d" % port, "Connection": "close"}
        hs.update(headers or {})
        if body and "Content-Length" not in hs and "Transfer-Encoding" not in hs:
            hs["Content-Length"] = str(len(body))
        raw = "%s %s HTTP/1.1\r\n" % (method, path) + "".join("%s: %s\r\n" % kv for kv in hs.items()) + "\r\n"
        s.sendall(raw.encode("latin-1") + body)
        r, _ = read_response(s, head_request=(method == "HEAD"))
        return r.status, {k.lower(): v for k, v in r.headers}, r.body
    finally:
        s.close()


def send_raw(port, data, timeout=5.0):
    """Sends raw bytes, returns everything read until the server closes (or timeout)."""
    s = connect(port, timeout)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                d = s.recv(65536)
            except socket.timeout:
                break
            if not d:
                break
            out += d
        return out
    finally:
        s.close()


def metrics(s):
    """The gateway's /metrics (admin listener of Stack s) as {series: value}."""
    st, _, b = request(s.admin_port, "GET", "/metrics")
    assert st == 200, st
    out = {}
    for line in b.decode().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            out[k] = float(v)
    return out


def wait_until(pred, timeout, what, step=0.02):
    """Polls PRED until it returns something true (returned) or fails after TIMEOUT s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise AssertionError("timed out (%.1fs) waiting for %s" % (timeout, what))


def fnv1a64(data, h=0xcbf29ce484222325):
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


# ---- PostgreSQL -------------------------------------------------------------------------

def _pg_bin(name):
    p = shutil.which(name)
    if p:
        return p
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/" + name))
    if not found:
        raise RuntimeError("%s not found (make deps installs postgresql)" % name)
    return found[-1]


class Postgres:
    """A throwaway PostgreSQL cluster in a temp dir on a free port, run as the 'postgres' OS
    user when we are root. stop() stops exactly this postmaster (pg_ctl stop -m fast on its
    data dir, SIGQUIT to its pid if that fails)."""

    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="gwctl-pg-")
        self.data = os.path.join(self.tmp, "data")
        self.port = free_port()
        self.pid = None
        self.as_user = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        try:
            self._run([_pg_bin("initdb"), "-D", self.data, "-A", "trust", "-U", "postgres",
                       "-E", "UTF8", "--no-sync"])
            self._run([_pg_bin("pg_ctl"), "-D", self.data, "-l", os.path.join(self.tmp, "pg.log"),
                       "-w", "-t", "30", "-o",
                       "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off" % (self.port, self.tmp),
                       "start"])
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                self.pid = int(f.readline())
        except Exception:
            self.stop()
            raise

    def _run(self, args):
        cp = subprocess.run(self.as_user + args, capture_output=True, timeout=60, cwd=self.tmp)
        if cp.returncode != 0:
            raise RuntimeError("%s failed: %s" % (args[0], (cp.stdout + cp.stderr).decode()[-2000:]))

    def conninfo(self, db="postgres"):
        return "host=127.0.0.1 port=%d user=postgres dbname=%s connect_timeout=5" % (self.port, db)

    def sql(self, query, db="postgres"):
        cp = subprocess.run([_pg_bin("psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                             "-d", self.conninfo(db), "-c", query], capture_output=True, timeout=30)
        assert cp.returncode == 0, cp.stderr.decode()
        return cp.stdout.decode().strip()

    def pause(self):
        """Stops the server, keeping its data (start it again with resume())."""
        self._run([_pg_bin("pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop"])
        self.pid = None

    def resume(self):
        self._run([_pg_bin("pg_ctl"), "-D", self.data, "-l", os.path.join(self.tmp, "pg.log"),
                   "-w", "-t", "30", "-o",
                   "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off" % (self.port, self.tmp),
                   "start"])
        with open(os.path.join(self.data, "postmaster.pid")) as f:
            self.pid = int(f.readline())

    def stop(self):
        if self.pid is not None:
            try:
                self._run([_pg_bin("pg_ctl"), "-D", self.data, "-m", "fast", "-w", "stop"])
            except Exception:
                try:
                    os.kill(self.pid, signal.SIGQUIT)
                except ProcessLookupError:
                    pass
            self.pid = None
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


