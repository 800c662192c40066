"""The strictest correct HTTP/1.1 edge (issue 10 §1, §2), reg-test style: for every case, what
the client got back and what the fake upstream received (mockd /echo, /__stats).

Malformed messages (RFC 9110 / RFC 9112 MUST-rejects) get the gateway's own 400 (or 505 for a
major version other than 1), Connection: close, and nothing reaches an upstream. Valid ones a
strict origin would take are forwarded faithfully: any token method in any case, HTTP/1.x
with a higher minor (answered as 1.1), absolute-form targets (routed on their path, Host from
the authority), OPTIONS * (answered by the gateway), chunk extensions with whitespace. An
HTTP/1.0 Expect: 100-continue is ignored, and an Upgrade nobody accepts leaves the connection
serving HTTP/1.1. Paths that could escape a prefix route (dot segments with ";params", encoded
slashes or backslashes) are refused unless the route allows encoded slashes."""
import json

from harness import DEFAULT_ROUTES, connect, fnv1a64, read_response, request
from test_client import (check_gateway_error, echo_headers, exchange, parse, stack,
                         total_requests)

H = "Host: gw.test\r\n"
ROUTES = [
    {"id": "only-get", "path": "/only-get/**", "methods": ["GET"], "upstream": "legacy",
     "rewrite": {"strip_prefix": "/only-get"}},
    {"id": "root", "path": "/", "upstream": "legacy", "rewrite": {"template": "/echo/root"}},
    {"id": "enc", "path": "/enc/**", "upstream": "legacy", "rewrite": {"strip_prefix": "/enc"},
     "allow_encoded_slashes": True},
] + DEFAULT_ROUTES


def edge_stack():
    return stack(routes=ROUTES)


def reset_mocks(s):
    for ms in s.mocks.values():
        for m in ms:
            m.reset()


def _refused(s, cases, status=400):
    """Each case: the gateway's own STATUS, Connection: close, the connection closed, and no
    request (not even a partial one) reached any upstream."""
    problems = []
    for what, data in cases:
        out, closed = exchange(s.port, data.encode("latin-1"))
        try:
            r, _ = parse(out)
            check_gateway_error(r, status, what)
            if (r.header("connection") or "").lower() != "close":
                problems.append("%s: no Connection: close (%r)" % (what, r.headers))
            if not closed:
                problems.append("%s: connection left open" % what)
        except Exception as e:  # collect every case, report all at once
            problems.append("%s: %s %s | got %r" % (what, type(e).__name__, str(e)[:300], out[:80]))
        n = total_requests(s)
        if n:
            problems.append("%s: reached the upstream (%d requests)" % (what, n))
            reset_mocks(s)
    assert not problems, "\n" + "\n".join(problems)


def _echo(s, data, what=""):
    """Sends one request (which must close after it), returns (Response, mockd /echo doc)."""
    out, _ = exchange(s.port, data.encode("latin-1"))
    r, _ = parse(out)
    assert r.status == 200, (what, r.status, r.body[:300])
    assert r.header("x-mock-name"), (what, "not answered by an upstream", r.headers)
    return r, json.loads(r.body)


C = "Connection: close\r\n"


# ---- §1 reject: field names -------------------------------------------------------------

def test_field_name_whitespace_empty_or_non_token_refused_400_nothing_forwarded():
    with edge_stack() as s:
        _refused(s, [
            ("SP before colon", "GET /echo HTTP/1.1\r\n" + H + "X-A : b\r\n\r\n"),
            ("SP before colon, Host", "GET /echo HTTP/1.1\r\nHost : gw.test\r\n\r\n"),
            ("SP before colon, CL", "POST /echo HTTP/1.1\r\n" + H + "Content-Length : 5\r\n\r\nhello"),
            ("HTAB before colon", "GET /echo HTTP/1.1\r\n" + H + "X-A\t: b\r\n\r\n"),
            ("empty name", "GET /echo HTTP/1.1\r\n" + H + ": b\r\n\r\n"),
            ("SP inside name", "GET /echo HTTP/1.1\r\n" + H + "X A: b\r\n\r\n"),
            ("quote in name", "GET /echo HTTP/1.1\r\n" + H + "X\"A: b\r\n\r\n"),
            ("paren in name", "GET /echo HTTP/1.1\r\n" + H + "X(A): b\r\n\r\n"),
            ("slash in name", "GET /echo HTTP/1.1\r\n" + H + "X/A: b\r\n\r\n"),
            ("obs-text in name", "GET /echo HTTP/1.1\r\n" + H + "X\xe9A: b\r\n\r\n"),
        ])


# ---- §1 reject: request line ------------------------------------------------------------

def test_request_line_spacing_and_form_refused_400_nothing_forwarded():
    with edge_stack() as s:
        _refused(s, [
            ("two SP after method", "GET  /echo HTTP/1.1\r\n" + H + "\r\n"),
            ("two SP before version", "GET /echo  HTTP/1.1\r\n" + H + "\r\n"),
            ("trailing SP", "GET /echo HTTP/1.1 \r\n" + H + "\r\n"),
            ("leading SP", " GET /echo HTTP/1.1\r\n" + H + "\r\n"),
            ("HTAB separator", "GET\t/echo HTTP/1.1\r\n" + H + "\r\n"),
            ("no version", "GET /echo\r\n" + H + "\r\n"),
            ("version lower case", "GET /echo http/1.1\r\n" + H + "\r\n"),
            ("version two minor digits", "GET /echo HTTP/1.10\r\n" + H + "\r\n"),
            ("obs-text in target", "GET /\xe9 HTTP/1.1\r\n" + H + "\r\n"),
            ("asterisk with GET", "GET * HTTP/1.1\r\n" + H + "\r\n"),
            ("authority-form", "GET gw.test:80 HTTP/1.1\r\n" + H + "\r\n"),
            ("relative target", "GET echo HTTP/1.1\r\n" + H + "\r\n"),
            ("other scheme", "GET ftp://gw.test/echo HTTP/1.1\r\n" + H + "\r\n"),
            ("absolute-form userinfo", "GET http://u@gw.test/echo HTTP/1.1\r\n" + H + "\r\n"),
            ("absolute-form no host", "GET http:///echo HTTP/1.1\r\n" + H + "\r\n"),
            ("absolute-form bad port", "GET http://gw.test:x/echo HTTP/1.1\r\n" + H + "\r\n"),
        ])


def test_major_version_other_than_1_gets_505_nothing_forwarded():
    with edge_stack() as s:
        _refused(s, [
            ("HTTP/2.0", "GET /echo HTTP/2.0\r\n" + H + "\r\n"),
            ("HTTP/0.9", "GET /echo HTTP/0.9\r\n" + H + "\r\n"),
            ("HTTP/3.1", "GET /echo HTTP/3.1\r\n" + H + "\r\n"),
        ], status=505)


# ---- §1 reject: Host, Content-Length ----------------------------------------------------

def test_bad_host_refused_400_nothing_forwarded():
    with edge_stack() as s:
        bad = ["a.test, b.test", "a.test,b.test", "user@gw.test", "gw.test:abc", "gw.test:70000",
               "gw.test:", "gw.test:123456", "gw test", "gw.test:80:80", "[::1", "[::1]x",
               "gw.test/x", "gw.test?x", ":80", "gw.test%2fx"]
        cases = [("Host %r" % v, "GET /echo HTTP/1.1\r\nHost: %s\r\n\r\n" % v) for v in bad]
        cases += [
            ("Host differs from absolute-form authority",
             "GET http://other.test/echo HTTP/1.1\r\n" + H + "\r\n"),
            ("Host port differs from absolute-form authority",
             "GET http://gw.test:8080/echo HTTP/1.1\r\n" + H + "\r\n"),
            ("absolute-form, HTTP/1.1 and no Host", "GET http://gw.test/echo HTTP/1.1\r\n\r\n"),
        ]
        _refused(s, cases)


def test_bad_content_length_refused_400_nothing_forwarded():
    """Today 2^63 and above wrapped negative and the request went upstream unframed."""
    with edge_stack() as s:
        bad = ["9223372036854775808", "18446744073709551615", "18446744073709551616",
               "99999999999999999999999", "-1", "0x5", "5 5", "5,5", "", "5.0"]
        _refused(s, [("Content-Length %r" % v,
                      "POST /echo HTTP/1.1\r\n" + H + "Content-Length: %s\r\n\r\nhello" % v)
                     for v in bad])
        # the largest value that fits is a size, not an error of framing: 413 by the limit
        out, closed = exchange(s.port, ("POST /echo HTTP/1.1\r\n" + H +
                                        "Content-Length: 9223372036854775807\r\n\r\nhello").encode())
        r, _ = parse(out)
        check_gateway_error(r, 413, "CL INT64_MAX")
        assert total_requests(s) == 0


def test_bad_chunk_extension_refused_400_nothing_forwarded():
    with edge_stack() as s:
        head = "POST /echo HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n\r\n"
        _refused(s, [
            ("BWS without extension", head + "5 \r\nhello\r\n0\r\n\r\n"),
            ("extension without name", head + "5;=x\r\nhello\r\n0\r\n\r\n"),
            ("extension value with SP", head + "5;a=b c\r\nhello\r\n0\r\n\r\n"),
            ("unterminated quoted value", head + "5;a=\"b\r\nhello\r\n0\r\n\r\n"),
            ("extension too long", head + "5;a=" + "x" * 5000 + "\r\nhello\r\n0\r\n\r\n"),
        ])


# ---- §1 forward: methods, versions, target forms ----------------------------------------

def test_extension_and_lower_case_methods_forwarded_unchanged():
    with edge_stack() as s:
        for method in ("PURGE", "MKCOL", "FOO", "get", "Post", "M-SEARCH", "X_Y.Z~1!"):
            r, doc = _echo(s, "%s /echo/m HTTP/1.1\r\n%s%s\r\n" % (method, H, C), method)
            assert doc["method"] == method and doc["url"] == "/echo/m", (method, doc)
        # a route that lists methods: another one is not a 400 (the table says 404)
        out, _ = exchange(s.port, ("PURGE /only-get/echo HTTP/1.1\r\n" + H + C + "\r\n").encode())
        r, _ = parse(out)
        assert r.status != 400 and r.status in (404, 405) or r.header("x-mock-name"), (r.status, r.body)
        r, doc = _echo(s, "GET /only-get/echo HTTP/1.1\r\n" + H + C + "\r\n")
        assert doc["url"] == "/echo", doc


def test_higher_minor_version_answered_as_1_1_and_kept_alive():
    with edge_stack() as s:
        c = connect(s.port)
        c.sendall(("GET /echo/a HTTP/1.7\r\n" + H + "\r\n" +
                   "GET /echo/b HTTP/1.9\r\n" + H + C + "\r\n").encode())
        r1, rest = read_response(c)
        r2, _ = read_response(c, buf=rest)
        c.close()
        for r, url in ((r1, "/echo/a"), (r2, "/echo/b")):
            assert r.status == 200, (r.status, r.body)
            doc = r.json()
            assert doc["url"] == url and doc["http_version"] == "1.1", doc
        assert r1.header("connection", "").lower() != "close", r1.headers
        out, _ = exchange(s.port, ("GET /echo HTTP/1.1\r\n" + H + C + "\r\n").encode())
        assert out.startswith(b"HTTP/1.1 200"), out[:100]
        # the status line says 1.1 whatever minor the client sent
        out, _ = exchange(s.port, ("GET /echo HTTP/1.5\r\n" + H + C + "\r\n").encode())
        assert out.startswith(b"HTTP/1.1 200"), out[:100]


def test_absolute_form_routed_on_path_host_from_authority():
    with edge_stack() as s:
        r, doc = _echo(s, "GET http://gw.test/echo/x?y=1 HTTP/1.1\r\n" + H + C + "\r\n")
        assert doc["url"] == "/echo/x?y=1", doc
        assert echo_headers(doc, "x-forwarded-host") == ["gw.test"], doc["headers"]
        # scheme and host in any case; Host compared case-insensitively
        r, doc = _echo(s, "GET HTTP://GW.TEST/echo/y HTTP/1.1\r\nHost: gw.test\r\n" + C + "\r\n")
        assert doc["url"] == "/echo/y", doc
        # prefix routes see the path: /only-get/** strips its prefix
        r, doc = _echo(s, "GET http://gw.test:8080/only-get/echo/p HTTP/1.1\r\nHost: gw.test:8080\r\n" +
                       C + "\r\n")
        assert doc["url"] == "/echo/p", doc
        out, _ = exchange(s.port, ("GET http://gw.test/api/users/7 HTTP/1.1\r\n" + H + C + "\r\n").encode())
        assert parse(out)[0].header("x-gateway-upstream") == "user-service", out[:300]
        assert echo_headers(doc, "x-forwarded-host") == ["gw.test:8080"], doc["headers"]
        # HTTP/1.0 needs no Host: the authority is the Host
        r, doc = _echo(s, "GET http://auth.test/echo/z HTTP/1.0\r\n\r\n")
        assert doc["url"] == "/echo/z", doc
        assert echo_headers(doc, "x-forwarded-host") == ["auth.test"], doc["headers"]
        # an empty path is "/" (the "root" route rewrites it to /echo/root), query kept
        r, doc = _echo(s, "GET http://gw.test HTTP/1.1\r\n" + H + C + "\r\n")
        assert doc["url"] == "/echo/root", doc
        r, doc = _echo(s, "GET http://gw.test?q=1 HTTP/1.1\r\n" + H + C + "\r\n")
        assert doc["url"] == "/echo/root?q=1", doc


def test_options_asterisk_answered_by_the_gateway_with_allow():
    with edge_stack() as s:
        c = connect(s.port)
        c.sendall(("OPTIONS * HTTP/1.1\r\n" + H + "\r\n").encode())
        r, rest = read_response(c)
        assert r.status == 200, (r.status, r.body)
        allow = [m.strip() for m in r.header("allow", "").split(",")]
        assert {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"} <= set(allow), r.headers
        assert r.header("x-gateway-upstream") == "gateway", r.headers
        assert total_requests(s) == 0
        # the connection goes on
        c.sendall(("GET /echo/next HTTP/1.1\r\n" + H + C + "\r\n").encode())
        r, _ = read_response(c, buf=rest)
        c.close()
        assert r.status == 200 and r.json()["url"] == "/echo/next", r.body
        # OPTIONS on a path is an ordinary request
        r, doc = _echo(s, "OPTIONS /echo/o HTTP/1.1\r\n" + H + C + "\r\n")
        assert doc["method"] == "OPTIONS", doc


def test_valid_host_forms_forwarded():
    with edge_stack() as s:
        for v in ("gw.test:8080", "127.0.0.1", "127.0.0.1:80", "[::1]", "[::1]:8080", "GW.Test",
                  "a-b_c~d.test", ""):
            r, doc = _echo(s, "GET /echo/h HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (v, C), v)
            assert doc["url"] == "/echo/h", (v, doc)
            if v:
                assert echo_headers(doc, "x-forwarded-host") == [v], (v, doc["headers"])


def test_chunk_extensions_with_whitespace_forwarded_body_intact():
    with edge_stack() as s:
        for what, body, whole in (
            ("SP before ;", "5 ;a=b\r\nhello\r\n0\r\n\r\n", b"hello"),
            ("HTAB before ;", "5\t;a=b\r\nhello\r\n0\r\n\r\n", b"hello"),
            ("BWS everywhere", "5 ; a = b ;c\r\nhello\r\n6 ;x=\"q r\"\r\n world\r\n0 ; end\r\n\r\n",
             b"hello world"),
            ("quoted value", "5;a=\"x y\\\"z\"\r\nhello\r\n0\r\n\r\n", b"hello"),
            ("no whitespace", "5;a=b;c\r\nhello\r\n0\r\n\r\n", b"hello"),
        ):
            data = "POST /echo/c HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n" + C + "\r\n" + body
            r, doc = _echo(s, data, what)
            assert doc["body_bytes"] == len(whole), (what, doc)
            assert int(doc["body_fnv1a64"], 16) == fnv1a64(whole), (what, doc)
            assert [v.lower() for v in echo_headers(doc, "transfer-encoding")] == ["chunked"], doc


def test_chunk_size_line_split_across_reads():
    """The size line is checked once it is whole, however it arrives."""
    import time
    with edge_stack() as s:
        c = connect(s.port)
        c.sendall(("POST /echo/s HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n" + C +
                   "\r\n5").encode())
        for piece in (" ", " ;", " a", " = b\r", "\nhel", "lo\r\n0 ", ";z\r\n\r\n"):
            time.sleep(0.05)
            c.sendall(piece.encode())
        r, _ = read_response(c)
        c.close()
        assert r.status == 200, (r.status, r.body)
        doc = r.json()
        assert doc["body_bytes"] == 5 and int(doc["body_fnv1a64"], 16) == fnv1a64(b"hello"), doc


# ---- §1 connection handling -------------------------------------------------------------

def test_http10_expect_100_continue_ignored():
    with edge_stack() as s:
        c = connect(s.port)
        c.sendall(("POST /echo/e HTTP/1.0\r\n" + H + "Expect: 100-continue\r\n"
                   "Content-Length: 5\r\n\r\nhello").encode())
        out = b""
        while True:
            d = c.recv(65536)
            if not d:
                break
            out += d
        c.close()
        assert b"100 Continue" not in out, out[:200]
        r, _ = parse(out)
        assert r.status == 200, (r.status, r.body)
        doc = r.json()
        assert doc["body_bytes"] == 5 and echo_headers(doc, "expect") == [], doc
        # HTTP/1.1 still gets its 100
        c = connect(s.port)
        c.sendall(("POST /echo/e HTTP/1.1\r\n" + H + C + "Expect: 100-continue\r\n"
                   "Content-Length: 5\r\n\r\n").encode())
        r, rest = read_response(c)
        assert r.status == 100, r.status
        c.sendall(b"hello")
        r, _ = read_response(c, buf=rest)
        c.close()
        assert r.status == 200 and r.json()["body_bytes"] == 5


def test_unaccepted_upgrade_leaves_connection_in_http11():
    """Today the next request on such a connection got 400 (llhttp waited for the other
    protocol)."""
    with edge_stack() as s:
        c = connect(s.port)
        c.sendall(("GET /echo/u HTTP/1.1\r\n" + H + "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   "\r\n").encode())
        r, rest = read_response(c)
        assert r.status == 200, (r.status, r.body)
        doc = r.json()
        assert echo_headers(doc, "upgrade") == [], doc["headers"]
        # pipelined right behind an upgrade request, and one after
        c.sendall(("GET /echo/v HTTP/1.1\r\n" + H + "Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                   "HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\nGET /echo/w HTTP/1.1\r\n" + H + C + "\r\n").encode())
        r2, rest = read_response(c, buf=rest)
        r3, _ = read_response(c, buf=rest)
        c.close()
        assert r2.status == 200 and r2.json()["url"] == "/echo/v", (r2.status, r2.body)
        assert echo_headers(r2.json(), "http2-settings") == [], r2.json()["headers"]
        assert r3.status == 200 and r3.json()["url"] == "/echo/w", (r3.status, r3.body)


# ---- §2 paths that escape prefix routes -------------------------------------------------

ESCAPES = ["/api/users/..;/admin", "/api/users/..;x/admin", "/api/users/.;/admin",
           "/api/users/..%2fadmin", "/api/users/..%2Fadmin", "/api/users/%2e%2e%2fadmin",
           "/api/users/%2E%2E%2Fadmin", "/api/users/a%2Fb", "/api/users/a%2fb",
           "/api/users/..%5cadmin", "/api/users/a%5Cb", "/api/users/..\\admin",
           "/enc/..%2fadmin", "/enc/%2e%2e%2f..%2fadmin", "/enc/..;/admin", "/enc/a/..\\b"]


def test_path_escapes_refused_400_nothing_forwarded():
    with edge_stack() as s:
        problems = []
        for path in ESCAPES:
            out, _ = exchange(s.port, ("GET %s HTTP/1.1\r\n%s%s\r\n" % (path, H, C)).encode())
            try:
                check_gateway_error(parse(out)[0], 400, path)
            except Exception as e:
                problems.append("%s: %s | %r" % (path, e, out[:80]))
            if total_requests(s):
                problems.append("%s: reached the upstream" % path)
                reset_mocks(s)
        assert not problems, "\n" + "\n".join(problems)
        # not escapes: ";" and "%2e" inside a name, dots in a name
        for path in ("/echo/a;b", "/echo/..a", "/echo/a%2ex", "/echo/%2e%2e%2e", "/echo/...;x"):
            st, h, body = request(s.port, "GET", path)
            assert st == 200 and json.loads(body)["url"] == path, (path, st, body)


def test_encoded_slash_forwarded_unchanged_where_the_route_allows_it():
    with edge_stack() as s:
        r, doc = _echo(s, "GET /enc/echo/a%2Fb%2fc%5Cd HTTP/1.1\r\n" + H + C + "\r\n")
        assert doc["url"] == "/echo/a%2Fb%2fc%5Cd", doc
        assert r.header("x-gateway-upstream") == "legacy", r.headers
        # the route table keeps the field (served back by the admin API)
        st, h, body = request(s.admin_port, "GET", "/admin/routes",
                              headers={"Authorization": "Bearer test-token"})
        assert st == 200, (st, body)
        doc = json.loads(body)
        routes = doc["routes"] if isinstance(doc, dict) else doc
        enc = [r for r in routes if r["id"] == "enc"][0]
        assert enc.get("allow_encoded_slashes") is True, enc
        assert "allow_encoded_slashes" not in [r for r in routes if r["id"] == "root"][0]


def test_allow_encoded_slashes_must_be_boolean():
    bad = [dict(ROUTES[2], allow_encoded_slashes="yes")] + DEFAULT_ROUTES
    s = stack(routes=ROUTES)
    try:
        s.routes = {"routes": bad}
        s.write()
        st, h, body = request(s.admin_port, "POST", "/admin/reload",
                              headers={"Authorization": "Bearer test-token"})
        assert st >= 400 and b"allow_encoded_slashes" in body, (st, body)
    finally:
        s.stop()
