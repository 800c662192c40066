"""TLS termination (issue 11 §1): real clients (curl, openssl s_client, Python's ssl) against a
gateway with a cleartext and a TLS listener; certificates made by the openssl CLI in the
test's temp dir, signed by a test CA that the clients trust.

Covered: requests over TLS (keep-alive, pipelining, bodies both ways, X-Forwarded-Proto),
protocol limits, the handshake timeout, non-TLS bytes, TLS errors counted by kind, config
errors naming the file, SNI selection (exact, wildcard, default; RSA and ECDSA side by
side), live certificate reload (admin API, SIGHUP, a file change; a bad pair rejected whole;
no request failing during reloads under load; old connections kept), session resumption
(TLS 1.3 tickets, a key file shared by two instances, the TLS 1.2 session cache)."""
import json
import os
import signal
import socket
import ssl
import subprocess
import threading
import time

from harness import (Stack, free_port, metrics, read_response, request, wait_port,
                     wait_until, BUILD, ROOT)


# ---- certificates -------------------------------------------------------------------------

def run(args, **kw):
    r = subprocess.run(args, capture_output=True, text=True, timeout=60, **kw)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


class CA:
    """A throwaway CA in DIR; leaf() signs certificates for names."""

    def __init__(self, d):
        self.dir = d
        self.key = os.path.join(d, "ca.key")
        self.pem = os.path.join(d, "ca.pem")
        run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", self.key, "-out", self.pem, "-days", "30", "-subj", "/CN=gw test CA"])
        self.n = 0

    def leaf(self, name, sans, key="ec", days=30):
        """cert and key files for subject CN=name with DNS SANs; key "ec" (P-256) or "rsa"."""
        self.n += 1
        base = os.path.join(self.dir, "%s-%s-%d" % (name.replace("*", "star"), key, self.n))
        kf, cf, csr, ext = base + ".key", base + ".pem", base + ".csr", base + ".ext"
        newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if key == "ec" else ["-newkey", "rsa:2048"]
        run(["openssl", "req", "-new"] + newkey + ["-nodes", "-keyout", kf, "-out", csr, "-subj", "/CN=" + name])
        with open(ext, "w") as f:
            f.write("subjectAltName=" + ",".join("DNS:" + s for s in sans) + "\n")
        run(["openssl", "x509", "-req", "-in", csr, "-CA", self.pem, "-CAkey", self.key,
             "-CAcreateserial", "-days", str(days), "-extfile", ext, "-out", cf])
        return cf, kf


def tls_stack(tls, workers=1, start=True, extra_conf=None):
    """A Stack whose listeners are cleartext s.port and TLS s.tls_port with TLS settings TLS."""
    s = Stack(start=False, workers=workers, gw_conf=extra_conf)
    s.tls_port = free_port()
    del s.conf["listen"]
    s.conf["listeners"] = [{"listen": "127.0.0.1:%d" % s.port},
                           {"listen": "127.0.0.1:%d" % s.tls_port, "tls": tls}]
    s.write()
    if start:
        try:
            s.start()
            wait_port(s.tls_port)
        except Exception:
            s.stop()
            raise
    return s


def pair(cf_kf):
    return {"cert": cf_kf[0], "key": cf_kf[1]}


def client_ctx(ca, **kw):
    ctx = ssl.create_default_context(cafile=ca.pem)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def tls_connect(port, ctx, name="localhost", timeout=10.0):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname=name)


def req_bytes(method, path, headers=(), body=b""):
    h = "".join("%s: %s\r\n" % kv for kv in headers)
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers):
        h += "Content-Length: %d\r\n" % len(body)
    return ("%s %s HTTP/1.1\r\nHost: localhost\r\n%s\r\n" % (method, path, h)).encode() + body


def curl(args, timeout=20):
    return subprocess.run(["curl", "-sS", "--max-time", "10"] + args, capture_output=True,
                          text=True, timeout=timeout)


def s_client(port, args, stdin="", timeout=20):
    """openssl s_client's output (stdout + stderr) and exit code."""
    r = subprocess.run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port] + args,
                       input=stdin, capture_output=True, text=True, timeout=timeout)
    return r.stdout + r.stderr, r.returncode


def served_subject(out):
    for line in out.splitlines():
        if line.startswith("subject="):
            return line[len("subject="):].strip()
    return None


def tls_errors(s):
    m = metrics(s)
    return {k.split('kind="')[1].rstrip('"}'): v for k, v in m.items()
            if k.startswith("gateway_tls_errors_total")}


def new_dir(s):
    d = os.path.join(s.tmp, "certs")
    os.makedirs(d, exist_ok=True)
    return d


def with_ca(fn):
    """Runs fn(ca) with a CA in a fresh temp dir."""
    import tempfile
    import shutil
    d = tempfile.mkdtemp(prefix="gwtls-")
    try:
        return fn(CA(d))
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---- requests over TLS -------------------------------------------------------------------------

def test_tls_get_over_https_and_forwarded_proto():
    def body(ca):
        leaf = ca.leaf("localhost", ["localhost"])
        with tls_stack({"certificates": [pair(leaf)]}) as s:
            r = curl(["-i", "--cacert", ca.pem, "https://localhost:%d/api/users/42" % s.tls_port])
            assert r.returncode == 0, r.stderr
            assert r.stdout.startswith("HTTP/1.1 200"), r.stdout[:200]
            assert "x-gateway-upstream: user-service" in r.stdout.lower()
            assert s.mock("user-service").stats()["by_path"] == {"/users/42": 1}
            # the upstream learns the scheme: https on the TLS listener, http on the other
            r = curl(["--cacert", ca.pem, "https://localhost:%d/echo/x" % s.tls_port])
            hdrs = {k.lower(): v for k, v in json.loads(r.stdout)["headers"]}
            assert hdrs["x-forwarded-proto"] == "https", hdrs
            st, h, b = request(s.port, "GET", "/echo/y")
            hdrs = {k.lower(): v for k, v in json.loads(b)["headers"]}
            assert st == 200 and hdrs["x-forwarded-proto"] == "http", hdrs
            m = metrics(s)
            assert m['gateway_tls_handshakes_total{resumed="false"}'] == 2, m
    with_ca(body)


def test_tls_keepalive_pipelining_and_bodies():
    def body(ca):
        leaf = ca.leaf("localhost", ["localhost"])
        with tls_stack({"certificates": [pair(leaf)]}) as s:
            c = tls_connect(s.tls_port, client_ctx(ca))
            # keep-alive: five requests, one connection
            for i in range(5):
                c.sendall(req_bytes("GET", "/echo/ka%d" % i))
                r, rest = read_response(c)
                assert r.status == 200 and json.loads(r.body)["url"] == "/echo/ka%d" % i
                assert rest == b""
            # pipelined: three requests in one write, answered in order
            c.sendall(b"".join(req_bytes("GET", "/echo/p%d" % i) for i in range(3)))
            buf = b""
            for i in range(3):
                r, buf = read_response(c, buf=buf)
                assert json.loads(r.body)["url"] == "/echo/p%d" % i
            # a 3 MB upload and a 5 MB download through the same connection
            up = os.urandom(3 << 20)
            c.sendall(req_bytes("POST", "/upload", body=up))
            r, _ = read_response(c)
            assert r.status == 200 and r.json()["body_bytes"] == len(up), r.body
            c.sendall(req_bytes("GET", "/bytes/%d" % (5 << 20)))
            r, _ = read_response(c)
            assert r.status == 200 and len(r.body) == 5 << 20
            assert r.body[:26] == b"abcdefghijklmnopqrstuvwxyz" and r.body[-1:] == bytes([97 + ((5 << 20) - 1) % 26])
            c.close()
            assert s.mock("legacy").stats()["connections"] >= 1
    with_ca(body)


def test_tls_slow_reader_gets_whole_response():
    """Backpressure: a client that reads slowly still gets every byte (the gateway stops
    reading the upstream while the TLS records queue, and resumes)."""
    def body(ca):
        leaf = ca.leaf("localhost", ["localhost"])
        with tls_stack({"certificates": [pair(leaf)]}) as s:
            c = tls_connect(s.tls_port, client_ctx(ca))
            n = 16 << 20
            c.sendall(req_bytes("GET", "/bytes/%d" % n))
            time.sleep(1.0)  # the socket buffers fill: the gateway hits its high-water mark
            got = bytearray()
            while True:
                chunk = c.recv(65536)
                if not chunk:
                    break
                got += chunk
                i = got.find(b"\r\n\r\n")
                if i >= 0 and len(got) - i - 4 >= n:
                    break
                if len(got) < (1 << 20):
                    time.sleep(0.01)  # slowly at first
            got = bytes(got)
            head, _, rest = got.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head[:100]
            assert len(rest) == n
            c.close()
    with_ca(body)


# ---- protocol limits, timeouts, errors ---------------------------------------------------------

def test_tls_protocol_limits():
    def body(ca):
        leaf = ca.leaf("localhost", ["localhost"])
        with tls_stack({"certificates": [pair(leaf)], "protocols": ["TLSv1.3"]}) as s:
            out, rc = s_client(s.tls_port, ["-tls1_2", "-CAfile", ca.pem, "-servername", "localhost"])
            assert rc != 0 and "Cipher is (NONE)" in out or "alert protocol version" in out, out[-600:]
            out, rc = s_client(s.tls_port, ["-tls1_3", "-CAfile", ca.pem, "-servername", "localhost"])
            assert rc == 0 and "TLSv1.3" in out, out[-600:]
            wait_until(lambda: tls_errors(s)["protocol_version"] == 1, 5, "protocol_version counted")
        # the default (TLS 1.2 and 1.3) refuses TLS 1.1
        with tls_stack({"certificates": [pair(leaf)]}) as s:
            out, rc = s_client(s.tls_port, ["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile", ca.pem])
            assert rc != 0, out[-600:]
            out, rc = s_client(s.tls_port, ["-tls1_2", "-CAfile", ca.pem, "-servername", "localhost"])
            assert rc == 0 and "TLSv1.2" in out and "Verify return code: 0 (ok)" in out, out[-600:]
            wait_until(lambda: tls_errors(s)["protocol_version"] == 1, 5, "protocol_version counted")
    with_ca(body)


def test_tls_handshake_timeout_closes_silent_client():
    def body(ca):
        leaf = ca.leaf("localhost", ["localhost"])
        with tls_stack({"certificates": [pair(leaf)], "handshake_timeout_ms": 300},
                       extra_conf={"limits": {"header_timeout_ms": 60000}}) as s:
            # a TCP client that never sends a ClientHello
            c = socket.create_connection(("127.0.0.1", s.tls_port), timeout=10)
            t0 = time.time()
            assert c.recv(100) == b""  # closed by the gateway, not by our timeout
            assert time.time() - t0 < 8
            c.close()
            # one that sends half a ClientHello and stops
            c = socket.create_connection(("127.0.0.1", s.tls_port), timeout=10)
            c.sendall(bytes.fromhex("160301020001"))
            assert c.recv(100) == b""
            c.close()
            wait_until(lambda: tls_errors(s)["timeout"] == 2, 5, "timeouts counted")
            # the listener still serves
            r = curl(["--cacert", ca.pem, "https://localhost:%d/echo/ok" % s.tls_port])
            assert r.returncode == 0 and json.loads(r.stdout)["url"] == "/echo/ok"
    with_ca(body)


def test_tls_plain_http_on_tls_port_and_client_abort():
    def body(ca):
        leaf = ca.leaf("localhost", ["localhost"])
        with tls_stack({"certificates": [pair(leaf)]}) as s:
            # wait_port's connection (no handshake) counts as eof once the gateway saw it
            wait_until(lambda: tls_errors(s)["eof"] == 1, 5, "wait_port's eof")
            base = tls_errors(s)
            c = socket.create_connection(("127.0.0.1", s.tls_port), timeout=10)
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = c.recv(1000)  # a TLS alert at most, never an HTTP answer
            assert not data.startswith(b"HTTP/"), data
            c.close()
            wait_until(lambda: tls_errors(s)["not_tls"] == 1, 5, "not_tls counted")
            # a client that goes away in the middle of its handshake
            c = socket.create_connection(("127.0.0.1", s.tls_port), timeout=10)
            c.sendall(bytes.fromhex("16030100c8"))
            c.close()
            wait_until(lambda: tls_errors(s)["eof"] == base["eof"] + 1, 5, "eof counted")
            # an untrusted certificate: the client's alert is counted
            out, rc = s_client(s.tls_port, ["-verify_return_error", "-servername", "localhost"])
            assert rc != 0
            wait_until(lambda: tls_errors(s)["alert_received"] == 1, 5, "alert counted")
            r = curl(["--cacert", ca.pem, "https://localhost:%d/echo/ok" % s.tls_port])
            assert r.returncode == 0, r.stderr
    with_ca(body)


# ---- configuration -----------------------------------------------------------------------------

def check(s):
    r = subprocess.run([os.path.join(ROOT, BUILD, "gateway"), "-c", s.conf_path, "--check"],
                       capture_output=True, text=True, timeout=30)
    return r.returncode, (r.stdout + r.stderr).strip()


def test_tls_config_errors_name_the_file():
    def body(ca):
        leaf = ca.leaf("localhost", ["localhost"])
        other = ca.leaf("other", ["other"])
        s = tls_stack({"certificates": [pair(leaf)]}, start=False)
        try:
            rc, out = check(s)
            assert rc == 0 and "2 listeners, 1 TLS" in out, out
            cases = [
                ({"certificates": [{"cert": leaf[0] + ".missing", "key": leaf[1]}]},
                 "%s: listeners[1].tls: %s.missing: cannot read: No such file or directory" % (s.conf_path, leaf[0])),
                ({"certificates": [{"cert": leaf[0], "key": other[1]}]},
                 "%s: listeners[1].tls: %s: does not match the key %s" % (s.conf_path, leaf[0], other[1])),
                ({"certificates": [{"cert": leaf[1], "key": leaf[1]}]},
                 "%s: listeners[1].tls: %s: no PEM certificate (error:0480006C:PEM routines::no start line)" % (s.conf_path, leaf[1])),
                ({"certificates": []},
                 "%s: listeners[1].tls.certificates: must be a non-empty array of {\"cert\", \"key\"}" % s.conf_path),
                ({"certificates": [pair(leaf)], "protocols": ["TLSv1.1"]},
                 "%s: listeners[1].tls.protocols[0]: \"TLSv1.1\" is not supported (only TLSv1.2 and TLSv1.3)" % s.conf_path),
                ({"certificates": [pair(leaf)], "alpn": ["h2", "h3"]},
                 "%s: listeners[1].tls.alpn[1]: unsupported protocol \"h3\" (supported: \"h2\", \"http/1.1\")" % s.conf_path),
                ({"certificates": [pair(leaf)], "ciphers": "NOPE"},
                 "%s: listeners[1].tls: tls.ciphers: no valid cipher in \"NOPE\"" % s.conf_path),
                ({"certificates": [pair(leaf)], "colour": 1},
                 "%s: listeners[1].tls.colour: unknown key" % s.conf_path),
            ]
            for tls, want in cases:
                s.conf["listeners"][1]["tls"] = tls
                s.write()
                rc, out = check(s)
                assert rc == 1 and out == want, (tls, out, want)
            # expired certificates are refused too
            old = ca.leaf("old", ["localhost"], days=0)
            s.conf["listeners"][1]["tls"] = {"certificates": [pair(old)]}
            s.write()
            time.sleep(1.1)
            rc, out = check(s)
            assert rc == 1 and "%s: expired (notAfter " % old[0] in out, out
            # listen and listeners together
            s.conf["listen"] = "127.0.0.1:%d" % s.port
            s.write()
            rc, out = check(s)
            assert rc == 1 and "listeners: use either \"listen\" or \"listeners\"" in out, out
        finally:
            s.stop()
    with_ca(body)


def test_tls_gateway_listen_env_replaces_cleartext_listener():
    def body(ca):
        leaf = ca.leaf("localhost", ["localhost"])
        s = tls_stack({"certificates": [pair(leaf)]}, start=False)
        new_port = free_port()
        s.env = {"GATEWAY_LISTEN": "127.0.0.1:%d" % new_port}
        s.port = new_port
        try:
            s.start()
            wait_port(s.tls_port)
            st, _, _ = request(new_port, "GET", "/echo/env")
            assert st == 200
            r = curl(["--cacert", ca.pem, "https://localhost:%d/echo/ok" % s.tls_port])
            assert r.returncode == 0, r.stderr
        finally:
            assert s.stop() == 0
    with_ca(body)


# ---- SNI -----------------------------------------------------------------------------------

def test_tls_sni_exact_wildcard_default_and_dual_key_types():
    def body(ca):
        default = ca.leaf("default.test", ["localhost", "default.test"])
        exact = ca.leaf("api.example.test", ["api.example.test"])
        wild = ca.leaf("wild.example.test", ["*.example.test"])
        dual_ec = ca.leaf("dual.test", ["dual.test"], key="ec")
        dual_rsa = ca.leaf("dual.test", ["dual.test"], key="rsa")
        certs = [pair(default), pair(wild), pair(exact), pair(dual_ec), pair(dual_rsa)]
        with tls_stack({"certificates": certs}) as s:
            def subject(name, extra=()):
                args = ["-CAfile", ca.pem, "-verify_return_error"] + list(extra)
                if name:
                    args += ["-servername", name]
                out, rc = s_client(s.tls_port, args)
                assert rc == 0, out[-800:]
                return served_subject(out), out
            assert subject("api.example.test")[0] == "CN = api.example.test"  # exact before wildcard
            assert subject("www.example.test")[0] == "CN = wild.example.test"  # wildcard
            assert subject("a.b.example.test")[0] == "CN = default.test"       # one label only
            assert subject("unknown.test")[0] == "CN = default.test"           # default: the first
            assert subject(None)[0] == "CN = default.test"                     # no SNI
            # RSA and ECDSA for the same name: picked by the client's signature algorithms
            sub, out = subject("dual.test", ["-sigalgs", "ECDSA+SHA256"])
            assert sub == "CN = dual.test" and "Peer signature type: ECDSA" in out, out[-1500:]
            sub, out = subject("dual.test", ["-sigalgs", "rsa_pss_rsae_sha256"])
            assert sub == "CN = dual.test" and "RSA-PSS" in out and "2048 bit" in out, out[-1500:]
            sub, out = subject("dual.test", ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"])
            assert sub == "CN = dual.test" and "2048 bit" in out, out[-1500:]
            sub, out = subject("dual.test", ["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"])
            assert sub == "CN = dual.test" and "256 bit" in out, out[-1500:]
            # curl with --resolve: the name verifies against the certificate SNI picked
            for name in ("api.example.test", "www.example.test", "dual.test"):
                r = curl(["--cacert", ca.pem, "--resolve", "%s:%d:127.0.0.1" % (name, s.tls_port),
                          "https://%s:%d/echo/sni" % (name, s.tls_port)])
                assert r.returncode == 0, (name, r.stderr)
                assert json.loads(r.stdout)["url"] == "/echo/sni"
            # a name no certificate covers gets the default one, which curl refuses
            r = curl(["--cacert", ca.pem, "--resolve", "nope.test:%d:127.0.0.1" % s.tls_port,
                      "https://nope.test:%d/" % s.tls_port])
            assert r.returncode == 60, r  # peer certificate cannot be authenticated
    with_ca(body)


def test_tls_same_names_and_key_type_twice_refused():
    def body(ca):
        a = ca.leaf("a.test", ["a.test"])
        b = ca.leaf("a.test", ["a.test"])
        s = tls_stack({"certificates": [pair(a), pair(b)]}, start=False)
        try:
            rc, out = check(s)
            assert rc == 1 and out == "%s: listeners[1].tls: %s: same names and key type (EC-P-256) as %s" % (
                s.conf_path, b[0], a[0]), out
        finally:
            s.stop()
    with_ca(body)


# ---- live reload ---------------------------------------------------------------------------

def copy_pair(src, dst):
    """Writes SRC's cert and key over DST's files (as a renewal tool would: new files renamed
    into place, key first)."""
    for i in (1, 0):
        tmp = dst[i] + ".new"
        with open(src[i], "rb") as f, open(tmp, "wb") as g:
            g.write(f.read())
        os.rename(tmp, dst[i])


def admin_post(s, path):
    return request(s.admin_port, "POST", path, headers={"Authorization": "Bearer test-token"})


def admin_get(s, path):
    return request(s.admin_port, "GET", path, headers={"Authorization": "Bearer test-token"})


def serving_subject(s, name="localhost"):
    out, rc = s_client(s.tls_port, ["-CAfile", ca_of(s).pem, "-servername", name])
    return served_subject(out)


def ca_of(s):
    return s.ca


def ctl(s, *args):
    r = subprocess.run([os.path.join(ROOT, BUILD, "gatewayctl"), "--admin",
                        "http://127.0.0.1:%d" % s.admin_port, "--token", "test-token"] + list(args),
                       capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout, r.stderr


def live_files(s, ca, leaf):
    """Copies LEAF to files the test may overwrite: the configured pair."""
    d = new_dir(s)
    live = (os.path.join(d, "live.pem"), os.path.join(d, "live.key"))
    copy_pair(leaf, live)
    return live


def test_tls_reload_admin_ctl_sighup_and_bad_pair():
    def body(ca):
        v1 = ca.leaf("v1.localhost", ["localhost"])
        v2 = ca.leaf("v2.localhost", ["localhost"], key="rsa")
        v3 = ca.leaf("v3.localhost", ["localhost"])
        other = ca.leaf("other", ["other"])
        s = tls_stack({"certificates": [{"cert": "x", "key": "y"}]}, start=False)
        s.ca = ca
        live = live_files(s, ca, v1)
        s.conf["listeners"][1]["tls"] = {"certificates": [{"cert": live[0], "key": live[1]}]}
        s.write()
        with s:
            s.start()
            wait_port(s.tls_port)
            assert serving_subject(s) == "CN = v1.localhost"
            rc, out, err = ctl(s, "certs", "list")
            assert rc == 0 and "v1.localhost" in out and "localhost" in out and "EC-P-256" in out, (out, err)
            assert "(29 days)" in out or "(30 days)" in out, out
            st, _, b = admin_get(s, "/admin/certificates")
            doc = json.loads(b)
            c = doc["listeners"][0]["certificates"][0]
            assert st == 200 and c["subject"] == "CN=v1.localhost" and c["sans"] == ["localhost"], doc
            assert 29 * 86400 < c["expires_in_s"] <= 30 * 86400, c
            m = metrics(s)
            key = [k for k in m if k.startswith("gateway_tls_certificate_expiry_seconds")]
            assert len(key) == 1 and 'subject="CN=v1.localhost"' in key[0] and m[key[0]] > 29 * 86400, key
            # an old connection, opened before any reload
            old = tls_connect(s.tls_port, client_ctx(ca))
            old.sendall(req_bytes("GET", "/echo/before"))
            r, _ = read_response(old)
            assert r.status == 200
            # a bad pair: rejected whole, named, the old certificate keeps serving
            copy_pair((v2[0], other[1]), live)
            st, _, b = admin_post(s, "/admin/certificates/reload")
            assert st == 422, (st, b)
            assert json.loads(b)["error"] == "%s: listeners[1].tls: %s: does not match the key %s" % (
                s.conf_path, live[0], live[1]), b
            assert serving_subject(s) == "CN = v1.localhost"
            rc, out, err = ctl(s, "certs", "reload")
            assert rc == 1 and "does not match the key" in err, (out, err)
            # a good pair through gatewayctl
            copy_pair(v2, live)
            rc, out, err = ctl(s, "certs", "reload")
            assert rc == 0 and "certificates reloaded" in out and "v2.localhost" in out and "RSA-2048" in out, (out, err)
            assert serving_subject(s) == "CN = v2.localhost"
            # SIGHUP
            copy_pair(v3, live)
            os.kill(s.gw.pid, signal.SIGHUP)
            wait_until(lambda: serving_subject(s) == "CN = v3.localhost", 10, "v3 after SIGHUP")
            # the old connection was never dropped
            old.sendall(req_bytes("GET", "/echo/after"))
            r, _ = read_response(old)
            assert r.status == 200 and json.loads(r.body)["url"] == "/echo/after"
            old.close()
            m = metrics(s)
            assert m['gateway_tls_certificate_reloads_total{result="failed"}'] >= 2, m
            assert m['gateway_tls_certificate_reloads_total{result="ok"}'] >= 2, m
    with_ca(body)


def test_tls_reload_on_file_change():
    def body(ca):
        v1 = ca.leaf("v1.localhost", ["localhost"])
        v2 = ca.leaf("v2.localhost", ["localhost"])
        s = tls_stack({"certificates": [{"cert": "x", "key": "y"}]}, start=False)
        s.ca = ca
        live = live_files(s, ca, v1)
        s.conf["listeners"][1]["tls"] = {"certificates": [{"cert": live[0], "key": live[1]}]}
        s.write()
        with s:
            s.start()
            wait_port(s.tls_port)
            assert serving_subject(s) == "CN = v1.localhost"
            copy_pair(v2, live)  # no signal, no API call
            wait_until(lambda: serving_subject(s) == "CN = v2.localhost", 10, "v2 after the file change")
    with_ca(body)


def test_tls_reload_under_load_drops_nothing():
    def body(ca):
        leaves = [ca.leaf("v%d.localhost" % i, ["localhost"], key="ec" if i % 2 else "rsa") for i in range(4)]
        s = tls_stack({"certificates": [{"cert": "x", "key": "y"}]}, workers=2, start=False)
        s.ca = ca
        live = live_files(s, ca, leaves[0])
        s.conf["listeners"][1]["tls"] = {"certificates": [{"cert": live[0], "key": live[1]}]}
        s.write()
        with s:
            s.start()
            wait_port(s.tls_port)
            stop = threading.Event()
            counts = {"ok": 0, "fail": []}
            lock = threading.Lock()

            def new_connections():
                ctx = client_ctx(ca)
                while not stop.is_set():
                    try:
                        c = tls_connect(s.tls_port, ctx)
                        c.sendall(req_bytes("GET", "/echo/new"))
                        r, _ = read_response(c)
                        c.close()
                        ok = r.status == 200
                    except Exception as e:  # noqa: BLE001 - every failure is reported
                        ok, r = False, e
                    with lock:
                        if ok:
                            counts["ok"] += 1
                        else:
                            counts["fail"].append(repr(r))

            def kept_connection():
                c = tls_connect(s.tls_port, client_ctx(ca))
                while not stop.is_set():
                    try:
                        c.sendall(req_bytes("GET", "/echo/kept"))
                        r, _ = read_response(c)
                        ok = r.status == 200
                    except Exception as e:  # noqa: BLE001
                        ok, r = False, e
                    with lock:
                        if ok:
                            counts["ok"] += 1
                        else:
                            counts["fail"].append("kept: " + repr(r))
                            return
                c.close()

            threads = [threading.Thread(target=new_connections) for _ in range(3)] + \
                      [threading.Thread(target=kept_connection) for _ in range(2)]
            for t in threads:
                t.start()
            try:
                for i in range(12):
                    copy_pair(leaves[(i + 1) % 4], live)
                    st, _, b = admin_post(s, "/admin/certificates/reload")
                    assert st == 200, (st, b)
                    time.sleep(0.1)
            finally:
                stop.set()
                for t in threads:
                    t.join(30)
            assert counts["fail"] == [], counts["fail"][:5]
            assert counts["ok"] > 50, counts
            assert serving_subject(s) == "CN = v%d.localhost" % (12 % 4)
            print("    %d requests during 12 reloads, 0 failed" % counts["ok"])
    with_ca(body)


# ---- session resumption --------------------------------------------------------------------

HTTP_GET = "GET /echo/r HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def resume(port, ca, sess, proto, extra=(), save=True):
    """One s_client connection; saves its session to SESS (save) or offers it. Returns
    "Reused" or "New" and the output."""
    args = ["-CAfile", ca.pem, "-servername", "localhost", "-ign_eof", proto] + list(extra)
    args += ["-sess_out", sess] if save else ["-sess_in", sess]
    out, rc = s_client(port, args, stdin=HTTP_GET)
    assert rc == 0 and "HTTP/1.1 200" in out, out[-800:]
    for line in out.splitlines():
        if line.startswith("Reused,") or line.startswith("New,"):
            return line.split(",")[0], out
    raise AssertionError(out[-800:])


def test_tls_resumption_tickets_and_session_cache():
    def body(ca):
        leaf = ca.leaf("localhost", ["localhost"])
        with tls_stack({"certificates": [pair(leaf)]}, workers=1) as s:
            sess = os.path.join(s.tmp, "s13")
            assert resume(s.tls_port, ca, sess, "-tls1_3")[0] == "New"
            assert resume(s.tls_port, ca, sess, "-tls1_3", save=False)[0] == "Reused"
            # TLS 1.2 with a ticket, and without (the worker's session-id cache)
            sess12 = os.path.join(s.tmp, "s12")
            assert resume(s.tls_port, ca, sess12, "-tls1_2")[0] == "New"
            assert resume(s.tls_port, ca, sess12, "-tls1_2", save=False)[0] == "Reused"
            sid = os.path.join(s.tmp, "sid")
            assert resume(s.tls_port, ca, sid, "-tls1_2", ["-no_ticket"])[0] == "New"
            assert resume(s.tls_port, ca, sid, "-tls1_2", ["-no_ticket"], save=False)[0] == "Reused"
            m = metrics(s)
            assert m['gateway_tls_handshakes_total{resumed="true"}'] == 3, m
            assert m['gateway_tls_handshakes_total{resumed="false"}'] == 3, m
        # with the cache off, a TLS 1.2 client without tickets gets a full handshake
        with tls_stack({"certificates": [pair(leaf)], "session_cache": 0}) as s:
            sid = os.path.join(s.tmp, "sid")
            r, out = resume(s.tls_port, ca, sid, "-tls1_2", ["-no_ticket"])
            assert r == "New"
            # no session id handed out (s_client saves nothing), or one that does not resume
            assert "Session-ID: \n" in out or "Session-ID:\n" in out or not os.path.exists(sid) or \
                resume(s.tls_port, ca, sid, "-tls1_2", ["-no_ticket"], save=False)[0] == "New", out
    with_ca(body)


def test_tls_ticket_key_file_shared_between_instances():
    def body(ca):
        leaf = ca.leaf("localhost", ["localhost"])
        keyfile = os.path.join(ca.dir, "tickets.key")
        with open(keyfile, "wb") as f:
            f.write(os.urandom(48))
        tls = {"certificates": [pair(leaf)], "ticket_key_file": keyfile}
        with tls_stack(tls) as a, tls_stack(tls) as b, tls_stack({"certificates": [pair(leaf)]}) as c:
            sess = os.path.join(a.tmp, "s")
            assert resume(a.tls_port, ca, sess, "-tls1_3")[0] == "New"
            # another instance with the same key file takes the ticket
            assert resume(b.tls_port, ca, sess, "-tls1_3", save=False)[0] == "Reused"
            # one with its own random secret does not
            assert resume(c.tls_port, ca, sess, "-tls1_3", save=False)[0] == "New"
            # TLS 1.2 tickets too
            sess12 = os.path.join(a.tmp, "s12")
            assert resume(a.tls_port, ca, sess12, "-tls1_2")[0] == "New"
            assert resume(b.tls_port, ca, sess12, "-tls1_2", save=False)[0] == "Reused"
        # a key file too short is refused by name
        with open(keyfile, "wb") as f:
            f.write(b"short")
        s = tls_stack(tls, start=False)
        try:
            rc, out = check(s)
            assert rc == 1 and out.startswith("%s: listeners[1].tls: %s: a ticket key file holds at least 32 bytes" % (
                s.conf_path, keyfile)), out
        finally:
            s.stop()
    with_ca(body)


def test_tls_session_of_one_listener_not_resumed_on_another():
    def body(ca):
        a = ca.leaf("a.localhost", ["localhost"])
        b = ca.leaf("b.localhost", ["localhost"])
        s = tls_stack({"certificates": [pair(a)]}, start=False)
        other = free_port()
        s.conf["listeners"].append({"listen": "127.0.0.1:%d" % other, "tls": {"certificates": [pair(b)]}})
        s.write()
        with s:
            s.start()
            wait_port(s.tls_port)
            wait_port(other)
            for proto, extra in (("-tls1_3", []), ("-tls1_2", []), ("-tls1_2", ["-no_ticket"])):
                sess = os.path.join(s.tmp, "s")
                assert resume(s.tls_port, ca, sess, proto, extra)[0] == "New"
                assert resume(s.tls_port, ca, sess, proto, extra, save=False)[0] == "Reused"
                # the other listener's certificate must be checked: a full handshake
                r, out = resume(other, ca, sess, proto, extra, save=False)
                assert r == "New" and "CN = b.localhost" in out, (proto, extra, out[-600:])
    with_ca(body)


# ---- TLS to upstreams ------------------------------------------------------------------------

def test_tls_to_upstream_verified_sni_and_pooled():
    """Gateway A sends users to an upstream over TLS: gateway B's TLS listener (in front of
    mockd) plays the TLS upstream."""
    def body(ca):
        leaf = ca.leaf("users.internal", ["users.internal"])
        with tls_stack({"certificates": [pair(leaf)]}) as b:
            up = {"endpoints": ["127.0.0.1:%d" % b.tls_port], "tls": {"ca_file": ca.pem,
                                                                      "server_name": "users.internal"}}
            a = Stack(start=False, gw_conf=None)
            a.conf["upstreams"]["secure"] = up
            a.routes = {"routes": [{"id": "users", "path": "/api/users/**", "upstream": "secure"},
                                   {"id": "big", "path": "/bytes/**", "upstream": "secure"},
                                   {"id": "legacy", "path": "/**", "upstream": "legacy"}]}
            a.write()
            with a:
                a.start()
                for i in range(3):
                    st, h, body_ = request(a.port, "GET", "/api/users/%d" % i)
                    assert st == 200 and h["x-gateway-upstream"] == "secure", (st, body_)
                # B answered over TLS, all on one pooled connection
                m = metrics(b)
                assert m['gateway_tls_handshakes_total{resumed="false"}'] == 1, m
                stats = b.mock("user-service").stats()
                assert stats["by_path"] == {"/users/0": 1, "/users/1": 1, "/users/2": 1}, stats
                # a big response through the TLS hop
                st, h, body_ = request(a.port, "GET", "/bytes/3000000")
                assert st == 200 and len(body_) == 3000000 and body_[-1:] == bytes([97 + 2999999 % 26])
                assert metrics(b)['gateway_tls_handshakes_total{resumed="false"}'] == 1
            # the name does not match the certificate: refused, 502, nothing reaches B's upstream
            a2 = Stack(start=False)
            bad = dict(up, tls={"ca_file": ca.pem, "server_name": "other.internal"})
            a2.conf["upstreams"]["secure"] = bad
            a2.routes = a.routes
            a2.write()
            before = b.mock("user-service").stats()["requests"]
            with a2:
                a2.start()
                st, h, body_ = request(a2.port, "GET", "/api/users/1")
                assert st == 502, (st, body_)
                assert b.mock("user-service").stats()["requests"] == before
            # an untrusted CA (the system's, which does not know ours): refused too
            a3 = Stack(start=False)
            a3.conf["upstreams"]["secure"] = {"endpoints": up["endpoints"], "tls": True}
            a3.routes = a.routes
            a3.write()
            with a3:
                a3.start()
                st, h, body_ = request(a3.port, "GET", "/api/users/1")
                assert st == 502, (st, body_)
            # verify off: served (the operator's choice)
            a4 = Stack(start=False)
            a4.conf["upstreams"]["secure"] = {"endpoints": up["endpoints"], "tls": {"verify": False}}
            a4.routes = a.routes
            a4.write()
            with a4:
                a4.start()
                st, h, body_ = request(a4.port, "GET", "/api/users/1")
                assert st == 200, (st, body_)
    with_ca(body)


def test_tls_to_upstream_resumes_sessions():
    """With no pooling every request is a new upstream connection: after the first full
    handshake the next ones resume the endpoint's session (TLS 1.3 ticket)."""
    def body(ca):
        leaf = ca.leaf("users.internal", ["users.internal"])
        with tls_stack({"certificates": [pair(leaf)]}) as b:
            a = Stack(start=False)
            a.conf["upstreams"]["secure"] = {
                "endpoints": ["127.0.0.1:%d" % b.tls_port], "pool": {"max_idle": 0},
                "tls": {"ca_file": ca.pem, "server_name": "users.internal"}}
            a.routes = {"routes": [{"id": "users", "path": "/api/users/**", "upstream": "secure"},
                                   {"id": "legacy", "path": "/**", "upstream": "legacy"}]}
            a.write()
            with a:
                a.start()
                for i in range(4):
                    st, h, body_ = request(a.port, "GET", "/api/users/%d" % i)
                    assert st == 200 and h["x-gateway-upstream"] == "secure", (st, body_)
                m = metrics(b)
                assert m['gateway_tls_handshakes_total{resumed="false"}'] == 1, m
                assert m['gateway_tls_handshakes_total{resumed="true"}'] == 3, m
    with_ca(body)
