"""The admin surface (issue 10 section 4): tokens off loopback, one gateway per port, route
changes at 10,000 routes off the main loop (and its lag gauge), the bounded history tail.
Waits are bounded polls; timing figures are printed and asserted with a wide margin only."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

from harness import BUILD, ROOT, Stack, free_port, metrics, request, wait_port, wait_until

GATEWAY = os.path.join(ROOT, BUILD, "gateway")
TOKEN = "test-token"
AUTH = {"Authorization": "Bearer " + TOKEN}


def run_gateway(args, env=None, timeout=20):
    e = dict(os.environ)
    e.pop("GATEWAY_ADMIN_TOKEN", None)
    e.update(env or {})
    return subprocess.run([GATEWAY] + args, cwd=ROOT, env=e, capture_output=True, timeout=timeout)


def conf_dir(admin_listen, token="test-token", tokens=None):
    """A config dir for a gateway that is never reached: upstreams on closed ports."""
    d = tempfile.mkdtemp(prefix="gwadmin-")
    conf = {
        "listen": "127.0.0.1:%d" % free_port(),
        "workers": 1,
        "admin": {"listen": admin_listen, "token": token},
        "upstreams": {"legacy": {"endpoints": ["127.0.0.1:9"]}},
        "log": {"access": "off"},
        "routes": {"source": "file", "file": "routes.json"},
    }
    if tokens is not None:
        conf["admin"]["tokens"] = tokens
    with open(os.path.join(d, "gateway.json"), "w") as f:
        json.dump(conf, f)
    with open(os.path.join(d, "routes.json"), "w") as f:
        json.dump({"routes": [{"id": "legacy", "path": "/**", "upstream": "legacy"}]}, f)
    return d, os.path.join(d, "gateway.json")


def text(cp):
    return (cp.stderr + cp.stdout).decode("utf-8", "replace")


# ---- tokens -------------------------------------------------------------------------------

def test_admin_short_token_off_loopback_refused():
    """Off loopback a token under 16 bytes is refused at start (and by --check), naming the
    field it came from; nothing is opened. The port is never bound: the check comes first."""
    port = free_port()
    for token, tokens, env, field in (
            ("short-token", None, None, r"admin\.token"),
            ("a-long-enough-token-1", {"ci": "tiny"}, None, r"admin\.tokens\.ci"),
            ("a-long-enough-token-1", None, {"GATEWAY_ADMIN_TOKEN": "envtok"}, None)):
        d, cpath = conf_dir("0.0.0.0:%d" % port, token, tokens)
        try:
            for args in (["-c", cpath, "--check"], ["-c", cpath]):
                cp = run_gateway(args, env)
                out = text(cp)
                assert cp.returncode == 1, (args, cp.returncode, out)
                line = out.splitlines()[0]
                if field:
                    assert re.match(re.escape(cpath) + ": " + field + ": ", line), line
                else:
                    assert line.startswith("env GATEWAY_ADMIN_TOKEN: "), line
                assert "shorter than 16" in line and "not loopback" in line, line
                assert not os.path.exists(os.path.join(d, "routes.json.history.jsonl"))
        finally:
            shutil.rmtree(d, ignore_errors=True)


def test_admin_long_token_off_loopback_warns_short_on_loopback_ok():
    port = free_port()
    d, cpath = conf_dir("0.0.0.0:%d" % port, "a-token-of-24-bytes-long")
    try:
        cp = run_gateway(["-c", cpath, "--check"])
        assert cp.returncode == 0, text(cp)
        assert "warning" in text(cp) and "not loopback" in text(cp), text(cp)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    d, cpath = conf_dir("127.0.0.1:%d" % port, "demo")
    try:
        cp = run_gateway(["-c", cpath, "--check"])
        assert cp.returncode == 0, text(cp)
        assert "not loopback" not in text(cp), text(cp)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_admin_token_compare_exact_bytes():
    """Only the exact token opens the admin API: not a prefix, not the token with more bytes
    after it, not a same-length guess; a 255-byte token works."""
    long_tok = "L" * 254 + "z"
    with Stack(gw_conf={"admin": {"tokens": {"ci": long_tok}}}) as s:
        wait_port(s.admin_port)

        def status(tok):
            return request(s.admin_port, "GET", "/admin/routes",
                           {"Authorization": "Bearer " + tok})[0]
        assert status(TOKEN) == 200
        assert status(long_tok) == 200
        for bad in (TOKEN[:-1], TOKEN + "x", TOKEN[:-1] + "X", "", "t", long_tok[:-1],
                    long_tok + "z", "x" * 300, TOKEN + "%00"):
            assert status(bad) == 401, bad


# ---- one gateway per port -------------------------------------------------------------------

def test_admin_second_gateway_on_taken_port_exits_1():
    """A second gateway with the same listen address (SO_REUSEPORT would have let it share the
    port and take half the connections) exits 1 naming the address; so does one whose admin
    port only is taken. The first one serves on."""
    with Stack() as s:
        wait_port(s.admin_port)
        cp = run_gateway(["-c", s.conf_path])
        out = text(cp)
        assert cp.returncode == 1, (cp.returncode, out)
        assert "listen: 127.0.0.1:%d is already in use" % s.port in out, out

        conf = json.load(open(s.conf_path))
        conf["listen"] = "127.0.0.1:%d" % free_port()
        other = os.path.join(s.tmp, "other.json")
        with open(other, "w") as f:
            json.dump(conf, f)
        cp = run_gateway(["-c", other])
        out = text(cp)
        assert cp.returncode == 1, (cp.returncode, out)
        assert "admin.listen: 127.0.0.1:%d is already in use" % s.admin_port in out, out

        for _ in range(20):  # every connection still reaches the first gateway
            st, h, _ = request(s.port, "GET", "/api/users/1")
            assert st == 200
        assert request(s.admin_port, "GET", "/healthz")[0] == 200
