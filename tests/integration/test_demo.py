"""`make run` (tests/demo.sh) for real, on free ports: a route flip is written back to the
demo's own copy of the configuration, never to conf/ or any other tracked file (issue 9 item 7:
the demo used to rewrite conf/routes.json and create conf/routes.json.history.jsonl)."""
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time

from harness import BUILD, ROOT, START_TIMEOUT, free_port, request, sanitizer_errors, wait_until

DEMO = os.path.join(ROOT, "tests", "demo.sh")
GATEWAYCTL = os.path.join(ROOT, BUILD, "gatewayctl")
# under build/ (ignored by git), so the test also proves the copy never shows up as untracked
DEMO_DIR = os.path.join(ROOT, BUILD, "demo-test")
# what a write-back into the checkout would look like, wherever it landed
WRITE_BACK_NAMES = ("routes.json", "history", "gateway.json", "composers.json")


def _git(*args):
    return subprocess.run(["git", "-C", ROOT] + list(args), capture_output=True, text=True, timeout=30)


def _have_git():
    return shutil.which("git") is not None and _git("rev-parse", "--is-inside-work-tree").returncode == 0


def _conf_hashes():
    out = {}
    for d, _, files in os.walk(os.path.join(ROOT, "conf")):
        for n in files:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, ROOT)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _checkout_state():
    """What the demo must not change: every file under conf/ (content), and, with git, the
    status of conf/ plus every modified or untracked path that looks like a route write-back.
    (Not the whole status: other work in the same checkout may change unrelated files.)"""
    state = {"conf": _conf_hashes()}
    if _have_git():
        st = _git("status", "--porcelain", "--untracked-files=all")
        assert st.returncode == 0, st.stderr
        lines = st.stdout.splitlines()
        state["git"] = sorted(l for l in lines if l[3:].startswith("conf/")
                              or any(n in os.path.basename(l[3:]) for n in WRITE_BACK_NAMES))
    return state


class Demo:
    """tests/demo.sh in its own session (process group), stopped by that group's id."""

    def __init__(self, ports, reset):
        self.ports = ports
        env = dict(os.environ, BUILD=BUILD, DEMO_DIR=os.path.relpath(DEMO_DIR, ROOT),
                   DEMO_RESET="1" if reset else "0")
        env.update({k: str(v) for k, v in ports.items()})
        env.pop("GATEWAY_REDIS", None)
        self.log_path = os.path.join(DEMO_DIR + ".log")
        self.log = open(self.log_path, "wb")
        self.p = subprocess.Popen(["bash", DEMO], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                  stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_up(self):
        def up():
            assert self.p.poll() is None, "demo exited %s:\n%s" % (self.p.returncode, self.output()[-3000:])
            if "Ctrl-C stops the demo" not in self.output():
                return False
            try:
                socket.create_connection(("127.0.0.1", self.ports["DEMO_LISTEN_PORT"]), timeout=0.5).close()
                return True
            except OSError:
                return False
        wait_until(up, 3 * START_TIMEOUT, "the demo's gateway", step=0.05)

    def stop(self):
        """SIGTERM to the whole group; returns the script's exit code."""
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            rc = self.p.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait()
            rc = -9
        self.log.close()
        return rc

    def group_gone(self):
        try:
            os.killpg(self.p.pid, 0)
            return False
        except ProcessLookupError:
            return True


def _ports():
    return {k: free_port() for k in ("DEMO_LISTEN_PORT", "DEMO_TLS_PORT", "DEMO_ADMIN_PORT", "DEMO_LEGACY_PORT",
                                     "DEMO_USER_PORT", "DEMO_ORDER_PORT", "DEMO_LOGISTICS_PORT",
                                     "DEMO_REDIS_PORT")}


def _upstream(port):
    st, h, _ = request(port, "GET", "/api/orders/1001")
    assert st == 200, st
    return h.get("x-gateway-upstream")


def _run(ports, reset, body):
    d = Demo(ports, reset)
    try:
        d.wait_up()
        body(d)
    finally:
        rc = d.stop()
    out = d.output()
    assert rc == 0, "demo exited %s:\n%s" % (rc, out[-3000:])
    assert "demo stopped" in out, out[-3000:]
    wait_until(d.group_gone, 10, "every process of the demo to exit")
    errs = sanitizer_errors(out)
    assert not errs, "sanitizer errors in the demo's gateway:\n" + "\n".join(errs)
    return out


def test_demo_flip_leaves_the_checkout_clean():
    before = _checkout_state()
    with open(os.path.join(ROOT, "conf", "routes.json"), "rb") as f:
        shipped = f.read()
    ports = _ports()
    admin = "http://127.0.0.1:%d" % ports["DEMO_ADMIN_PORT"]
    demo_routes = os.path.join(DEMO_DIR, "routes.json")

    def flip(d):
        out = d.output()
        # the help names the file to edit, the demo's copy
        assert "Edit %s to change routes" % os.path.relpath(demo_routes, ROOT) in out, out
        assert "conf/routes.json takes effect" not in out, out
        assert _upstream(d.ports["DEMO_LISTEN_PORT"]) == "legacy"
        # https beside http, with the certificate made on the first start; the line printed
        pem = os.path.join(DEMO_DIR, "tls", "localhost.pem")
        line = "curl --cacert %s https://127.0.0.1:%d/api/users/42" % (
            os.path.relpath(pem, ROOT), d.ports["DEMO_TLS_PORT"])
        assert line in out, out
        cp = subprocess.run(["curl", "-sS", "-i", "--max-time", "10", "--cacert", pem,
                             "https://127.0.0.1:%d/api/orders/1001" % d.ports["DEMO_TLS_PORT"]],
                            capture_output=True, text=True, timeout=30)
        assert cp.returncode == 0 and cp.stdout.startswith("HTTP/1.1 200"), (cp.stdout[:300], cp.stderr)
        assert "x-gateway-upstream: legacy" in cp.stdout.lower(), cp.stdout[:500]
        cp = subprocess.run([GATEWAYCTL, "--admin", admin, "--token", "demo-token",
                             "routes", "flip", "orders", "order-service"],
                            capture_output=True, text=True, timeout=30)
        assert cp.returncode == 0, (cp.stdout, cp.stderr)
        assert _upstream(d.ports["DEMO_LISTEN_PORT"]) == "order-service"

    out = _run(ports, True, flip)
    assert "copied from conf/routes.json" in out, out

    # the write-back and its audit trail landed in the demo's copy
    with open(demo_routes, "rb") as f:
        written = f.read()
    assert written != shipped
    orders = [r for r in json.loads(written)["routes"] if r["id"] == "orders"]
    assert orders and orders[0]["upstream"] == "order-service", orders
    assert os.path.getsize(demo_routes + ".history.jsonl") > 0
    # and nothing in the checkout changed
    after = _checkout_state()
    assert after == before, "the demo changed the checkout:\nbefore %r\nafter  %r" % (before, after)
    assert not os.path.exists(os.path.join(ROOT, "conf", "routes.json.history.jsonl"))

    # a restart keeps the demo's routes (the flip survives); conf/ still untouched
    def still_flipped(d):
        assert _upstream(d.ports["DEMO_LISTEN_PORT"]) == "order-service"

    out = _run(_ports(), False, still_flipped)
    assert "kept from an earlier run" in out, out
    assert _checkout_state() == before
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    os.unlink(DEMO_DIR + ".log")


def test_demo_refuses_a_busy_port():
    """A port in use: the demo says which, exits non-zero (it used to exit 0) and leaves nothing
    running."""
    ports = _ports()
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", ports["DEMO_ORDER_PORT"]))
        busy.listen(8)
        d = Demo(ports, True)
        try:
            rc = d.p.wait(60)
        finally:
            if d.p.poll() is None:
                d.stop()
        out = d.output()
        d.log.close()
    assert rc == 1, (rc, out)
    assert "port %d is already in use" % ports["DEMO_ORDER_PORT"] in out, out
    wait_until(d.group_gone, 10, "every process of the demo to exit")
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    os.unlink(DEMO_DIR + ".log")
