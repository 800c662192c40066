#!/usr/bin/env python3
"""Writes the seed corpora in tests/fuzz/corpus/<driver>/ (committed; rerun after adding
vectors to the integration tests, then commit what changed). Seeds are named by content
(sha1), so rerunning keeps the old ones and adds new ones; a crash input added by hand
(named crash-*) stays. Sources: the integration tests' raw requests (every smuggling and
malformed vector of tests/integration/test_client.py), valid requests of every kind, the
shipped conf/*.json, the unit tests' route and spec documents."""
import glob
import hashlib
import json
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
sys.path.insert(0, os.path.join(root, "tests", "integration"))
import test_client as tc  # noqa: E402  (only its vector lists are used)


def put(driver, data):
    if isinstance(data, str):
        data = data.encode("latin-1")
    d = os.path.join(here, "corpus", driver)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
        f.write(data)


# ---- fuzz_server_request: flags byte (split count | handler mode << 2), split bytes, payload
H = "Host: gw.test\r\n"
requests = [
    "GET / HTTP/1.1\r\n" + H + "\r\n",
    "GET /api/users/42?x=1 HTTP/1.1\r\n" + H + "Accept: */*\r\nX-Request-Id: abc\r\n\r\n",
    "HEAD /echo HTTP/1.1\r\n" + H + "\r\n",
    "GET /echo HTTP/1.0\r\n\r\n",
    "GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "POST /echo HTTP/1.1\r\n" + H + "Content-Length: 5\r\n\r\nhello",
    "POST /echo HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n\r\n" +
    tc.chunked([b"hello", b" world"]).decode(),
    "POST /echo HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n\r\n" +
    tc.chunked([b"ab", b"cd"], ext=True).decode(),
    "POST /echo HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n",
    "POST /echo HTTP/1.1\r\n" + H + "Expect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    "POST /echo HTTP/1.0\r\n" + H + "Expect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    "POST /big HTTP/1.1\r\n" + H + "Content-Length: 999999\r\n\r\nabc",
    "PUT /echo HTTP/1.1\r\n" + H + "Content-Length: 0\r\nConnection: close\r\n\r\n",
    "PURGE /x HTTP/1.1\r\n" + H + "\r\n",
    "get /x HTTP/1.1\r\n" + H + "\r\n",
    "OPTIONS * HTTP/1.1\r\n" + H + "\r\n",
    "GET /x HTTP/1.1\r\n" + H + "Upgrade: websocket\r\nConnection: Upgrade\r\n\r\nGET /y HTTP/1.1\r\n" + H + "\r\n",
    "GET /x HTTP/1.1\r\nHost: gw.test:8080\r\n\r\n",
    "GET /x HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
    "GET /" + "a" * 1100 + " HTTP/1.1\r\n" + H + "\r\n",        # 414
    "GET / HTTP/1.1\r\n" + H + "X-Big: " + "b" * 4200 + "\r\n\r\n",  # 431
    "GET / HTTP/1.1\r\n" + H + "".join("X-%d: v\r\n" % i for i in range(40)) + "\r\n",
    "GET /x HTTP/1.1\r\n" + H + "X-Long: " + "v" * 20 + "\t\xe9\xff" + "w" * 21 + "\r\n\r\n",
    "GET /api/../admin HTTP/1.1\r\n" + H + "\r\n",
    "GET /api/%2e%2e/admin HTTP/1.1\r\n" + H + "\r\n",
    "GET /api/users/..;/admin HTTP/1.1\r\n" + H + "\r\n",
    "GET /api/users/..%2fadmin HTTP/1.1\r\n" + H + "\r\n",
    "GET /x HTTP/1.1\r\n" + H + "Content-Length: 9223372036854775808\r\n\r\n",
    "GET /x HTTP/1.1\r\n" + H + "Content-Length: 18446744073709551616\r\n\r\n",
    "GET /x HTTP/1.1\r\nHost: a,b\r\n\r\n",
    "GET /x HTTP/1.1\r\nHost: user@host\r\n\r\n",
    "GET /x HTTP/1.1\r\nHost: host:99999\r\n\r\n",
    "GET  /x HTTP/1.1\r\n" + H + "\r\n",
    "GET /x  HTTP/1.1\r\n" + H + "\r\n",
    "GET /x HTTP/1.1\r\n: empty\r\n" + H + "\r\n",
    "POST /echo HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n\r\n5 ;a=b\r\nhello\r\n0\r\n\r\n",
    "POST /echo HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n\r\n5;" + "e" * 5000 + "\r\nhello\r\n0\r\n\r\n",
]
pipelined = "".join(requests[:3]) + requests[5] + requests[6]
requests.append(pipelined)
requests.append("".join("GET /p%d HTTP/1.1\r\n%s\r\n" % (i, H) for i in range(20)))
requests += [data for _, data in tc.SMUGGLING_HEAD]
head_te = "POST /echo HTTP/1.1\r\n" + H + "Transfer-Encoding: chunked\r\n\r\n"
requests += [head_te + body for _, body in tc.SMUGGLING_CHUNKS + tc.SMUGGLING_MID_BODY]
for r in requests:
    for mode in range(4):
        put("fuzz_server_request", bytes([mode << 2]) + r.encode("latin-1"))
    put("fuzz_server_request", bytes([3, 40, 128, 200]) + r.encode("latin-1"))  # 4 pieces

# ---- fuzz_upstream_response: flags byte (split count | HEAD << 2), split bytes, answer
answers = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\nuntil close",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
    b"HTTP/1.1 302 Found\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 500 Oops\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbad",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
    b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/2 200\r\n\r\n",
    b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n" + b"x" * 4 + b"HTTP/1.1 200 OK\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 70000\r\n\r\n" + b"y" * 70000,
]
for a in answers:
    for fl in (0, 4):
        put("fuzz_upstream_response", bytes([fl]) + a)
    put("fuzz_upstream_response", bytes([2, 30, 200]) + a)

# ---- fuzz_redis_reply: byte 0 = 0 (the reply answers the GET) or 1 (the PING), then RESP
replies = [b"$-1\r\n", b"+OK\r\n", b"-ERR wrong\r\n", b":1\r\n", b"*2\r\n$1\r\na\r\n$1\r\nb\r\n",
           b"$13\r\n\x00\x00\x01\x8c\x00\x00\x00\x00hello\r\n", b"$3\r\nabc\r\n",
           b"$8\r\n\xff\xff\xff\xff\xff\xff\xff\xff\r\n", b"$10\r\n0123456789\r\n", b"*-1\r\n",
           b"$999999999999\r\n", b"%1\r\n+a\r\n+b\r\n", b"_\r\n", b",1.5\r\n", b"#t\r\n",
           b"$5\r\nhel", b"!3\r\nerr\r\n", b"=7\r\ntxt:abc\r\n", b"(123\r\n", b"~1\r\n:1\r\n",
           b">2\r\n+message\r\n+x\r\n$-1\r\n"]
# A reply nobody asked for (b"$-1\r\n:5\r\n", or "+PONG" twice) aborted the process in
# hiredis 0.14 (assert in redisProcessCallbacks) until composers/cache_redis.c guarded the
# reader: corpus/fuzz_redis_reply/crash-unsolicited-*, docs/security.md.
for r in replies:
    put("fuzz_redis_reply", b"\x00" + r)
for r in (b"+PONG\r\n", b"-ERR auth\r\n", b"$4\r\nPONG\r\n", b"*1\r\n+PONG\r\n"):
    put("fuzz_redis_reply", b"\x01" + r)

# ---- documents: conf/, the unit tests' inline documents are not extracted; a few by hand
for f in glob.glob(os.path.join(root, "conf", "routes.json")):
    put("fuzz_route_table", open(f, "rb").read())
routes = {"legacy_upstream": "legacy", "version": 3, "routes": [
    {"id": "users", "methods": ["GET", "PUT"], "path": "/api/users/**", "upstream": "user-service",
     "rewrite": {"strip_prefix": "/api"}, "cache": True},
    {"id": "user", "path": "/api/users/{id}", "upstream": "user-service",
     "rewrite": {"template": "/users/{id}"}, "max_body_bytes": 1024},
    {"id": "orders", "path": "/api/orders/{id}/items/**", "upstream": "order-service",
     "split": {"order-service": 90, "legacy": 10}, "sticky": {"header": "X-User"},
     "rewrites": {"legacy": {"strip_prefix": "/api"}, "order-service": {"template": "/o/{id}/{**}"}}},
    {"id": "ship", "path": "/api/ship/**", "upstream": "logistics-service",
     "override": {"header": "X-Upstream"}, "fallback": {"upstream": "legacy", "on": ["404", "5xx", "connect"]},
     "shadow": {"upstream": "legacy", "percent": 50, "methods": ["GET"], "ignore_fields": ["a.b"],
                "timeout_ms": 500}},
    {"id": "all", "path": "/**", "upstream": "legacy"}]}
put("fuzz_route_table", json.dumps(routes))
put("fuzz_route_table", json.dumps({"routes": []}))
put("fuzz_route_table", json.dumps({"routes": [{"id": "a", "path": "/x/{p}/{p}", "upstream": "legacy"}]}))
put("fuzz_route_table", json.dumps({"routes": [{"id": "a", "path": "/x/**/y", "upstream": "legacy"}]}))

for f in glob.glob(os.path.join(root, "conf", "gateway.json")):
    put("fuzz_config", open(f, "rb").read())
cfg = json.load(open(os.path.join(root, "conf", "gateway.json")))
cfg.update({"limits": {"max_uri_bytes": 1024, "max_header_bytes": 4096, "max_headers": 20,
                       "max_body_bytes": 0, "header_timeout_ms": 100, "read_buffer_bytes": 8192,
                       "max_connections": 10},
            "redis": "127.0.0.1:6379", "cache": {"ttl_ms": 10, "stale_ms": 0, "timeout_ms": 5},
            "background": {"max_in_flight": 4, "max_connections_per_endpoint": 2},
            "shutdown": {"drain_timeout_ms": 100}})
cfg["upstreams"]["legacy"].update({"host": "legacy.internal", "connect_timeout_ms": 50,
                                   "endpoints": ["127.0.0.1:1", "[::1]:2", "localhost:3"]})
put("fuzz_config", json.dumps(cfg))
put("fuzz_config", json.dumps({"listen": "[::1]:0", "upstreams": {"a": {"endpoints": ["127.0.0.1:1"]}},
                               "routes": {"source": "postgres", "cache_file": "x"}}))
# listeners with TLS (only the syntax is checked by gw_config_load) and TLS to an upstream
put("fuzz_config", json.dumps({
    "listeners": [{"listen": "127.0.0.1:0"},
                  {"listen": "[::1]:0", "tls": {
                      "certificates": [{"cert": "a.pem", "key": "a.key"}, {"cert": "/b.pem", "key": "b.key"}],
                      "protocols": ["TLSv1.3"], "ciphers": "ECDHE+AESGCM", "ciphersuites": "TLS_AES_128_GCM_SHA256",
                      "alpn": ["http/1.1"], "handshake_timeout_ms": 5, "ticket_key_file": "t.key",
                      "ticket_rotate_s": 60, "session_cache": 0}}],
    "upstreams": {"a": {"endpoints": ["127.0.0.1:1"], "tls": {"server_name": "a.internal", "verify": False}},
                  "b": {"endpoints": ["127.0.0.1:2"], "tls": True}},
    "routes": {"source": "file", "file": "r.json"}}))

for f in glob.glob(os.path.join(root, "conf", "composers.json")):
    spec = open(f, "rb").read()
    put("fuzz_composer", spec + b"\x00" + b'{"user_id":"u?1&x=2","id":5,"n":{"m":[1]}}' +
        b"\x00/api/orders/42/details")
    put("fuzz_composer", spec + b"\x00null\x00/api/users/{order.user_id}/{id}/{x.y.z}")

# ---- fuzz_json_check
for j in ("{}", "[]", ' {"a":[1,2.5,-3e4,true,false,null,"x\\u00e9\\n"]} ', '"s"', "0", "-0.1E+2",
          '{"a":{"b":{"c":[]}}}', '["\\\\","\\/"]', "[1,]", "{'a':1}", "01", "1.", '"\\u12g4"',
          "{} {}", '"tab\tin"', "[" * 300 + "]" * 300, '"\\ud800"', '"\xe9"', "1e999",
          "123456789012345678901234567890", '{"a":"\\u0000"}'):
    put("fuzz_json_check", j)
for f in glob.glob(os.path.join(root, "conf", "*.json")):
    put("fuzz_json_check", open(f, "rb").read())
# ---- fuzz_cache_value: stored values (version 2 and 1) and header blocks
us = b"1764800000123456"
for v in (b"v2 200 " + us + b" 60000 0\n{}", b"v2 404 " + us + b" 5000 0\n{\"error\":\"not found\"}",
          b"v2 200 " + us + b" 1000 37\nETag: \"e\"\r\nCache-Control: max-age=1\r\n{\"id\":1}",
          b"200 " + us + b"\n{\"old\":true}", b"404 1\n",
          b"v2 200 1 5 11\nX-Evil: 1\r\n{}", b"v2 200 1 5 15\nSet-Cookie: a\r\n{}",
          b"v2 200 1 5 99999\n{}", b"v2 200 -1 5 0\n{}",
          b"Cache-Control: public, No-Store, max-age=60\r\nSet-Cookie: a=1\r\n",
          b'Cache-Control: private="Set-Cookie", s-maxage="7", max-age=abc\r\nVary: Accept, *\r\n',
          b'Cache-Control: community="no-store, private", max-age=99999999999999999999\r\n',
          b"Expires: Fri, 04 Dec 2026 12:00:30 GMT\r\nExpires: Friday, 04-Dec-26 12:00:10 GMT\r\n"
          b"Expires: Fri Dec  4 12:00:05 2026\r\nExpires: 0\r\n"):
    put("fuzz_cache_value", v)
print("corpora:", ", ".join("%s %d" % (d, len(os.listdir(os.path.join(here, "corpus", d))))
                            for d in sorted(os.listdir(os.path.join(here, "corpus")))))
