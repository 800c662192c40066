/* config_listeners.c — the client listeners of gateway.json:
 *
 *   "listen": "127.0.0.1:8080"                       // one cleartext listener, or
 *   "listeners": [                                   // 1..8 listeners (not both keys)
 *     { "listen": "0.0.0.0:8080" },
 *     { "listen": "0.0.0.0:8443",
 *       "tls": {
 *         "certificates": [ { "cert": "site.pem", "key": "site.key" }, ... ],
 *                                // 1..16 pairs, paths relative to this file's folder; the
 *                                // first is the default for clients without a matching SNI
 *         "protocols": ["TLSv1.2", "TLSv1.3"],       // default both; no older ones
 *         "ciphers": "ECDHE+AESGCM:ECDHE+CHACHA20",  // TLS 1.2 list; default OpenSSL's
 *         "ciphersuites": "TLS_AES_128_GCM_SHA256",  // TLS 1.3 suites; default OpenSSL's
 *         "alpn": ["h2", "http/1.1"],                // default ["http/1.1"]; "h2": HTTP/2
 *         "handshake_timeout_ms": 10000,             // accept -> handshake done
 *         "ticket_key_file": "tickets.key",          // shared ticket secret (>= 32 bytes);
 *                                                    //   default a random one per process
 *         "ticket_rotate_s": 3600,                   // 60..86400: a ticket key's period
 *         "session_cache": 20480                     // TLS 1.2 session ids kept; 0 = off
 *       } },
 *     { "listen": "127.0.0.1:8081", "h2c": true }    // cleartext HTTP/2 by prior knowledge
 *   ]                                                //   too (default false)
 *
 *   "http2": {                                       // HTTP/2 client connections (h2.c)
 *     "max_concurrent_streams": 128,                 // 1..10000 per connection
 *     "stream_window_bytes": 65535,                  // 1024..16777216: request body bytes
 *                                                    //   buffered per stream
 *     "connection_window_bytes": 1048576,            // 65535..1073741824: ... per connection
 *     "reset_rate": 33, "reset_burst": 1000          // RST_STREAM from a client per second
 *   }                                                //   and burst; over: GOAWAY
 *
 * Only the syntax is checked here; the certificates are loaded (and refused by file name)
 * when the gateway starts and by --check.
 *
 * And TLS to an upstream's endpoints:
 *   "upstreams": { "users": { ..., "tls": true } }     // or:
 *   "tls": { "ca_file": "ca.pem",        // default: the system's CAs
 *            "server_name": "users.internal",  // SNI and the name verified; default
 *                                        //   "host", else the endpoint's host
 *            "verify": true }            // default true: certificate and name checked */
#include <stdio.h>
#include <string.h>

#include "http/upstream_tls.h"
#include "gateway/config_int.h"

static int parse_protocols(gw__cfgctx *c, json_t *tls, const char *path, gw_tls_conf *t)
{
    char p[GW__PATH_MAX], q[GW__QUOTE_SIZE];
    json_t *v = json_object_get(tls, "protocols"), *e;
    size_t i;
    t->protocols = GW_TLS_V12 | GW_TLS_V13;
    if (!v)
        return 0;
    snprintf(p, sizeof p, "%.400s.protocols", path);
    if (!json_is_array(v) || json_array_size(v) == 0)
        return gw__fail(c, p, "must be a non-empty array of \"TLSv1.2\", \"TLSv1.3\"");
    t->protocols = 0;
    json_array_foreach(v, i, e) {
        const char *s = json_is_string(e) ? json_string_value(e) : "";
        snprintf(p, sizeof p, "%.400s.protocols[%zu]", path, i);
        if (strcmp(s, "TLSv1.2") == 0)
            t->protocols |= GW_TLS_V12;
        else if (strcmp(s, "TLSv1.3") == 0)
            t->protocols |= GW_TLS_V13;
        else if (json_is_string(e) && (strcmp(s, "TLSv1") == 0 || strcmp(s, "TLSv1.0") == 0 ||
                                       strcmp(s, "TLSv1.1") == 0 || strncmp(s, "SSL", 3) == 0))
            return gw__fail(c, p, "%s is not supported (only TLSv1.2 and TLSv1.3)", gw__quote(q, s));
        else
            return gw__fail(c, p, "must be \"TLSv1.2\" or \"TLSv1.3\"");
    }
    return 0;
}

static int parse_alpn(gw__cfgctx *c, json_t *tls, const char *path, gw_tls_conf *t)
{
    char p[GW__PATH_MAX], q[GW__QUOTE_SIZE];
    json_t *v = json_object_get(tls, "alpn"), *e;
    size_t i;
    static const unsigned char http11[] = "\x08http/1.1";
    memcpy(t->alpn, http11, sizeof http11 - 1);
    t->alpn_len = sizeof http11 - 1;
    if (!v)
        return 0;
    snprintf(p, sizeof p, "%.400s.alpn", path);
    if (!json_is_array(v) || json_array_size(v) == 0)
        return gw__fail(c, p, "must be a non-empty array of protocol names");
    t->alpn_len = 0;
    json_array_foreach(v, i, e) {
        snprintf(p, sizeof p, "%.400s.alpn[%zu]", path, i);
        if (!json_is_string(e))
            return gw__fail(c, p, "must be a string");
        const char *s = json_string_value(e);
        /* the framings there are: HTTP/1.1 (client.c) and HTTP/2 (h2.c) */
        if (strcmp(s, "http/1.1") != 0 && strcmp(s, "h2") != 0)
            return gw__fail(c, p, "unsupported protocol %s (supported: \"h2\", \"http/1.1\")",
                            gw__quote(q, s));
        size_t n = strlen(s);
        if (t->alpn_len + 1 + n > sizeof t->alpn)
            return gw__fail(c, p, "too many protocols");
        t->alpn[t->alpn_len++] = (unsigned char)n;
        memcpy(t->alpn + t->alpn_len, s, n);
        t->alpn_len += n;
    }
    return 0;
}

static int parse_certificates(gw__cfgctx *c, json_t *tls, const char *path, gw_tls_conf *t)
{
    static const char *const keys[] = { "cert", "key", NULL };
    char p[GW__PATH_MAX], rel[GW_TLS_PATH_MAX];
    json_t *v = json_object_get(tls, "certificates"), *e;
    size_t i;
    int rc, has;
    snprintf(p, sizeof p, "%.400s.certificates", path);
    if (!v)
        return gw__fail(c, p, "required");
    if (!json_is_array(v) || json_array_size(v) == 0)
        return gw__fail(c, p, "must be a non-empty array of {\"cert\", \"key\"}");
    if (json_array_size(v) > GW_TLS_MAX_CERTS)
        return gw__fail(c, p, "at most %d certificates", GW_TLS_MAX_CERTS);
    json_array_foreach(v, i, e) {
        gw_tls_cert_conf *cc = &t->certs[i];
        char ep[GW__PATH_MAX], fp[GW__PATH_MAX];
        snprintf(ep, sizeof ep, "%.400s.certificates[%zu]", path, i);
        if (!json_is_object(e))
            return gw__fail(c, ep, "must be an object {\"cert\": FILE, \"key\": FILE}");
        if ((rc = gw__only_keys(c, e, ep, keys)) != 0)
            return rc;
        static const char *const which[] = { "cert", "key" };
        for (int w = 0; w < 2; w++) {
            snprintf(fp, sizeof fp, "%.400s.%s", ep, which[w]);
            if ((rc = gw__get_str(c, e, which[w], ep, rel, sizeof rel, 0, &has)) != 0)
                return rc;
            if (!has)
                return gw__fail(c, fp, "required");
            char *out = w == 0 ? cc->cert : cc->key;
            if ((rc = gw__resolve_path(c, fp, rel, out, GW_TLS_PATH_MAX)) != 0)
                return rc;
        }
        t->n_certs++;
    }
    return 0;
}

static int parse_tls(gw__cfgctx *c, json_t *tls, const char *path, gw_tls_conf *t)
{
    static const char *const keys[] = { "certificates", "protocols", "ciphers", "ciphersuites",
                                        "alpn", "handshake_timeout_ms", "ticket_key_file",
                                        "ticket_rotate_s", "session_cache", NULL };
    char rel[GW_TLS_PATH_MAX], p[GW__PATH_MAX];
    int rc, has;
    if (!json_is_object(tls))
        return gw__fail(c, path, "must be an object");
    memset(t, 0, sizeof *t);
    t->handshake_timeout_ms = 10000;
    t->ticket_rotate_s = 3600;
    t->session_cache_size = 20480;
    if ((rc = gw__only_keys(c, tls, path, keys)) != 0 ||
        (rc = parse_certificates(c, tls, path, t)) != 0 ||
        (rc = parse_protocols(c, tls, path, t)) != 0 ||
        (rc = parse_alpn(c, tls, path, t)) != 0 ||
        (rc = gw__get_str(c, tls, "ciphers", path, t->ciphers, sizeof t->ciphers, 0, NULL)) != 0 ||
        (rc = gw__get_str(c, tls, "ciphersuites", path, t->ciphersuites, sizeof t->ciphersuites,
                          0, NULL)) != 0 ||
        (rc = gw__get_ms(c, tls, "handshake_timeout_ms", path, &t->handshake_timeout_ms)) != 0 ||
        (rc = gw__get_u32(c, tls, "ticket_rotate_s", path, 60, 86400, &t->ticket_rotate_s)) != 0 ||
        (rc = gw__get_u32(c, tls, "session_cache", path, 0, 1000000, &t->session_cache_size)) != 0 ||
        (rc = gw__get_str(c, tls, "ticket_key_file", path, rel, sizeof rel, 0, &has)) != 0)
        return rc;
    if (has && (rc = gw__resolve_path(c, gw__path(p, path, "ticket_key_file"), rel,
                                      t->ticket_key_file, sizeof t->ticket_key_file)) != 0)
        return rc;
    return 0;
}

/* The client context is built here, off the worker loops (a definition is read at start or
 * on the threadpool), and shared by them; a CA file without a certificate is refused now
 * rather than failing every connection with 502. P: the "tls" path. */
static int prepare_ctx(gw__cfgctx *c, const char *p, const gw_upstream_conf *up)
{
    char err[700], fp[GW__PATH_MAX];
    if (gw_utls_ctx_prepare(up, err, sizeof err) == 0)
        return 0;
    snprintf(fp, sizeof fp, "%.400s.ca_file", p);
    return gw__fail(c, fp, "%s: no CA certificate could be loaded (want PEM)",
                    up->tls_ca_file[0] ? up->tls_ca_file : "the system's CA paths");
}

int gw__parse_upstream_tls(gw__cfgctx *c, json_t *u, const char *path, gw_upstream_conf *up)
{
    static const char *const keys[] = { "ca_file", "server_name", "verify", NULL };
    char p[GW__PATH_MAX], rel[sizeof up->tls_ca_file];
    json_t *v = json_object_get(u, "tls");
    int rc, has;
    if (!v)
        return 0;
    gw__path(p, path, "tls");
    if (json_is_boolean(v)) {
        up->tls = json_is_true(v);
        return prepare_ctx(c, p, up);
    }
    if (!json_is_object(v))
        return gw__fail(c, p, "must be true, false or {\"ca_file\", \"server_name\", \"verify\"}");
    up->tls = 1;
    if ((rc = gw__only_keys(c, v, p, keys)) != 0 ||
        (rc = gw__get_str(c, v, "server_name", p, up->tls_server_name, sizeof up->tls_server_name,
                          0, NULL)) != 0 ||
        (rc = gw__get_str(c, v, "ca_file", p, rel, sizeof rel, 0, &has)) != 0)
        return rc;
    json_t *vf = json_object_get(v, "verify");
    if (vf && !json_is_boolean(vf))
        return gw__fail(c, gw__path(rel, p, "verify"), "must be true or false");
    if (vf)
        up->tls_verify = json_is_true(vf);
    if (has) {
        char fp[GW__PATH_MAX];
        snprintf(fp, sizeof fp, "%.400s.ca_file", p);
        if ((rc = gw__resolve_path(c, fp, rel, up->tls_ca_file, sizeof up->tls_ca_file)) != 0)
            return rc;
        FILE *f = fopen(up->tls_ca_file, "r");
        if (!f)
            return gw__fail(c, fp, "cannot read %s", up->tls_ca_file);
        fclose(f);
    }
    return prepare_ctx(c, p, up);
}

static int parse_http2(gw__cfgctx *c, json_t *root, gw_config *k)
{
    static const char *const keys[] = { "max_concurrent_streams", "stream_window_bytes",
                                        "connection_window_bytes", "reset_rate", "reset_burst",
                                        NULL };
    json_t *o;
    int rc;
    k->http2.max_concurrent_streams = 128;
    k->http2.stream_window_bytes = 65535;
    k->http2.connection_window_bytes = 1u << 20;
    k->http2.reset_rate = 33;
    k->http2.reset_burst = 1000;
    if ((rc = gw__get_obj(c, root, "http2", "", &o)) != 0 || o == NULL)
        return rc;
    if ((rc = gw__only_keys(c, o, "http2", keys)) != 0 ||
        (rc = gw__get_u32(c, o, "max_concurrent_streams", "http2", 1, 10000,
                          &k->http2.max_concurrent_streams)) != 0 ||
        (rc = gw__get_u32(c, o, "stream_window_bytes", "http2", 1024, 16777216,
                          &k->http2.stream_window_bytes)) != 0 ||
        (rc = gw__get_u32(c, o, "connection_window_bytes", "http2", 65535, 1u << 30,
                          &k->http2.connection_window_bytes)) != 0 ||
        (rc = gw__get_u32(c, o, "reset_rate", "http2", 1, 1000000, &k->http2.reset_rate)) != 0 ||
        (rc = gw__get_u32(c, o, "reset_burst", "http2", 1, 1000000, &k->http2.reset_burst)) != 0)
        return rc;
    return 0;
}

int gw__parse_listeners(gw__cfgctx *c, json_t *root, gw_config *k)
{
    static const char *const keys[] = { "listen", "tls", "h2c", NULL };
    json_t *one = json_object_get(root, "listen"), *list = json_object_get(root, "listeners"), *e;
    size_t i;
    int rc;
    if (one && list)
        return gw__fail(c, "listeners", "use either \"listen\" or \"listeners\", not both "
                        "(put the cleartext listener into listeners)");
    if (!one && !list)
        return gw__fail(c, "listen", "required (or \"listeners\")");
    if ((rc = parse_http2(c, root, k)) != 0)
        return rc;
    if (one) {
        gw_listener_conf *l = &k->listeners[0];
        if (!json_is_string(one))
            return gw__fail(c, "listen", "must be a \"host:port\" string");
        if ((rc = gw__address(c, "listen", json_string_value(one), 0, 1, l->listen,
                              sizeof l->listen, &l->addr, &l->addrlen)) != 0)
            return rc;
        k->n_listeners = 1;
        return 0;
    }
    if (!json_is_array(list) || json_array_size(list) == 0)
        return gw__fail(c, "listeners", "must be a non-empty array of {\"listen\", \"tls\"}");
    if (json_array_size(list) > GW_MAX_LISTENERS)
        return gw__fail(c, "listeners", "at most %d listeners", GW_MAX_LISTENERS);
    json_array_foreach(list, i, e) {
        char p[GW__PATH_MAX], lp[GW__PATH_MAX];
        gw_listener_conf *l = &k->listeners[i];
        snprintf(p, sizeof p, "listeners[%zu]", i);
        if (!json_is_object(e))
            return gw__fail(c, p, "must be an object {\"listen\": \"host:port\", \"tls\": {...}}");
        if ((rc = gw__only_keys(c, e, p, keys)) != 0)
            return rc;
        json_t *addr = json_object_get(e, "listen"), *tls = json_object_get(e, "tls");
        snprintf(lp, sizeof lp, "%.400s.listen", p);
        if (!addr)
            return gw__fail(c, lp, "required");
        if (!json_is_string(addr))
            return gw__fail(c, lp, "must be a \"host:port\" string");
        if ((rc = gw__address(c, lp, json_string_value(addr), 0, 1, l->listen, sizeof l->listen,
                              &l->addr, &l->addrlen)) != 0)
            return rc;
        if (tls) {
            char tp[GW__PATH_MAX];
            snprintf(tp, sizeof tp, "%.400s.tls", p);
            if ((rc = parse_tls(c, tls, tp, &l->tls_conf)) != 0)
                return rc;
            l->tls = 1;
        }
        json_t *h2c = json_object_get(e, "h2c");
        if (h2c) {
            snprintf(lp, sizeof lp, "%.400s.h2c", p);
            if (!json_is_boolean(h2c))
                return gw__fail(c, lp, "must be true or false");
            if (tls && json_is_true(h2c))
                return gw__fail(c, lp, "only for cleartext listeners (TLS ones offer HTTP/2 "
                                       "with \"alpn\": [\"h2\", \"http/1.1\"])");
            l->h2c = json_is_true(h2c);
        }
        k->n_listeners++;
    }
    return 0;
}
