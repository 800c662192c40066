/* config.c — gateway.json: read, validate whole, fill defaults, then apply the environment.
 *
 * Format (comments below are documentation only; the file is plain JSON, no comments):
 *
 *   {
 *     "listen": "127.0.0.1:8080",             // required; host:port or [v6]:port, port 0..65535
 *     "workers": 0,                            // 0 or absent = number of CPU cores; else 1..256
 *     "admin": { "listen": "127.0.0.1:9090",   // default "127.0.0.1:9090"
 *                "tokens": { "alice": "s3cret" }, // named tokens: the audit trail records
 *                                              //   the name of the token that made a change
 *                "token": "change-me" },       // default "" = admin API disabled (401);
 *                                              //   this one's audit name is "admin";
 *                                              //   printable ASCII, no spaces, <= 255 bytes
 *     "upstreams": {                           // required, 1..64 upstreams
 *       "legacy": {                            // name: [A-Za-z0-9_.-]{1,63}
 *         "endpoints": ["127.0.0.1:9101"],     // required, 1..32 host:port, port 1..65535;
 *                                              //   names resolved at load (first IPv4
 *                                              //   address, else first IPv6 address), then
 *                                              //   every resolve_ms (gateway/resolver.h)
 *         "host": "legacy.internal",           // Host header sent upstream; default "" =
 *                                              //   keep the client's Host
 *         "connect_timeout_ms": 1000,          // default 1000
 *         "response_timeout_ms": 30000,        // request sent -> response head; default 30000
 *         "read_timeout_ms": 30000,            // between two body reads; default 30000
 *         "send_timeout_ms": 30000,            // a tunnel's upstream taking nothing; default 30000
 *         "pool": { "max_idle": 64,            // per worker per endpoint, 0..65535; default 64
 *                   "idle_timeout_ms": 30000 },// default 30000
 *         "breaker": { "failures": 5, "cooldown_ms": 5000 }, // composition legs: circuit
 *         "resolve_ms": 10000,                 // endpoint names re-resolved this often in the
 *                                              //   background, every address used; 0 = never
 *         "down_ms": 5000                      // refused endpoint skipped this long, 0..3600000;
 *       },                                     //   default 5000
 *       ...
 *     },
 *     "limits": {
 *       "max_uri_bytes": 8192,                 // 64..max_header_bytes; default 8192 (or
 *                                              //   max_header_bytes when that is smaller)
 *       "max_header_bytes": 16384,             // 1024..1048576; default 16384
 *       "max_headers": 100,                    // 1..256; default 100
 *       "max_body_bytes": 10485760,            // >= 0, 0 = unlimited; default 10485760
 *       "header_timeout_ms": 10000,            // default 10000
 *       "body_timeout_ms": 30000,              // default 30000
 *       "idle_timeout_ms": 60000,              // default 60000
 *       "send_timeout_ms": 30000,              // default 30000
 *       "tunnel_idle_timeout_ms": 300000,      // an upgraded connection (WebSocket) with no
 *                                              //   byte either way; routes may set their own
 *       "max_connections": 10000,              // 1..1000000 per worker; default 10000: above
 *                                              // it new connections are closed at once
 *       "read_buffer_bytes": 65536             // 4096..16777216; default 65536: a client
 *                                              //   connection's read buffer while it has a
 *                                              //   request (idle ones hold none); bodies are
 *                                              //   read and sent upstream in pieces this big;
 *                                              //   raised to max_header_bytes when smaller
 *     },
 *     "log": { "access": "stderr" },           // "stderr" | "stdout" | "off" | file path
 *                                              //   (relative to the config file's folder)
 *     "shutdown": { "drain_timeout_ms": 10000 },             // default 10000
 *     "background": { "max_in_flight": 256,        // shadow copies under way per worker,
 *                     "max_connections_per_endpoint": 64 }, // and their connections per
 *                                              //   endpoint per worker; 0..65535; over a cap
 *                                              //   a shadow is skipped (counted)
 *     "routes": { "source": "file", "file": "routes.json" }, // required; file relative to
 *                                                            //   the config file's folder
 *            // or { "source": "postgres", "conninfo": "host=127.0.0.1 dbname=...",
 *            //      "cache_file": "routes.cache.json" }  (last good table, for starts
 *            //      while PostgreSQL is down; relative to this file's folder)
 *            // (conninfo may be left out when GATEWAY_PG supplies it)
 *     "redis": "127.0.0.1:6379",               // optional; absent = in-process LRU user cache
 *            // or { "sentinels": ["h:p", ...], "master_name": "gw" } or { "cluster": [...] }
 *            //    or { "address": "h:p" }, with "username", "password_env" ... (config_redis.c)
 *     "composers": "composers.json",           // optional; compositions (composers/spec.h)
 *     "cache": { "ttl_ms": 60000, "negative_ttl_ms": 5000, "stale_ms": 300000,
 *                "timeout_ms": 20, "lru_entries": 10000 }   // user cache (routes with "cache")
 *     "rate_limits": { "shared": true, "instances": 2, "timeout_ms": 50 } // config_limits.c
 *     "http2": { "max_concurrent_streams": 128, ... }  // config_listeners.c
 *     "tracing": { "otlp_endpoint": "http://host:port/v1/traces", ... }   // config_tracing.c
 *   }
 *
 * Every timeout ("*_ms" except down_ms) is an integer from 1 to 3600000. Unknown keys and
 * duplicate keys are errors. Then the environment, each value validated like the file's
 * (an empty variable counts as unset):
 *   GATEWAY_LISTEN        replaces "listen"
 *   GATEWAY_ADMIN_LISTEN  replaces "admin.listen"
 *   GATEWAY_ADMIN_TOKEN   replaces "admin.token"
 *   GATEWAY_PG            sets routes.source = "postgres" and routes.conninfo
 *   GATEWAY_REDIS         replaces "redis"'s address ("host:port" or
 *                         "redis://[user:password@]host:port": one server)
 *
 * Error messages: "FILE: json.path: reason", "FILE: line L column C: jansson's text",
 * "FILE: cannot read: strerror", "env NAME: reason".
 */
#include "gateway/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "gateway/config_int.h"
#include "gateway/resolver.h"
#include "http/gw_errors.h"
#include "http/server.h" /* GW_MAX_HEADERS */

#define GW__WORKERS_MAX 256
#define GW__FILE_MAX_BYTES (16u << 20)


int gw__fail(gw__cfgctx *c, const char *path, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (c->err == NULL || c->errlen == 0)
        return GW_EINVAL;
    if (c->prefix != NULL)
        n = snprintf(c->err, c->errlen, "%s: %s: ", c->prefix, path);
    else
        n = snprintf(c->err, c->errlen, "%s: ", path);
    if (n >= 0 && (size_t)n < c->errlen) {
        va_start(ap, fmt);
        vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return GW_EINVAL;
}

/* Quotes S for an error message: escapes '"', '\\' and control bytes, cuts after 80 bytes
 * with "...". out needs 80 * 4 + 8 bytes. Returns out. */
const char *gw__quote(char out[GW__QUOTE_SIZE], const char *s)
{
    size_t o = 0, i;

    out[o++] = '"';
    for (i = 0; s[i] != '\0' && i < 80; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            o += (size_t)snprintf(out + o, 5, "\\x%02x", ch);
        } else {
            out[o++] = (char)ch;
        }
    }
    if (s[i] != '\0') {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}

/* PARENT.KEY (or KEY at the root) into out; control bytes in KEY shown as '?'. */
const char *gw__path(char out[GW__PATH_MAX], const char *parent, const char *key)
{
    size_t o = 0, i;

    if (parent[0] != '\0')
        o = (size_t)snprintf(out, GW__PATH_MAX, "%s.", parent);
    if (o >= GW__PATH_MAX - 1)
        return out;
    for (i = 0; key[i] != '\0' && o < GW__PATH_MAX - 1; i++) {
        unsigned char ch = (unsigned char)key[i];
        out[o++] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    out[o] = '\0';
    return out;
}

/* Fails on the first member of OBJ not listed in KEYS (NULL-terminated). */
int gw__only_keys(gw__cfgctx *c, json_t *obj, const char *path, const char *const *keys)
{
    const char *k;
    json_t *v;
    char p[GW__PATH_MAX];

    json_object_foreach(obj, k, v) {
        size_t i;
        for (i = 0; keys[i] != NULL && strcmp(keys[i], k) != 0; i++)
            ;
        if (keys[i] == NULL)
            return gw__fail(c, gw__path(p, path, k), "unknown key");
    }
    return 0;
}

/* The member KEY of OBJ, which must be an object when present. *out = NULL when absent. */
int gw__get_obj(gw__cfgctx *c, json_t *obj, const char *key, const char *parent,
                       json_t **out)
{
    char p[GW__PATH_MAX];
    json_t *v = json_object_get(obj, key);

    *out = NULL;
    if (v == NULL)
        return 0;
    if (!json_is_object(v))
        return gw__fail(c, gw__path(p, parent, key), "must be an object");
    *out = v;
    return 0;
}

/* Integer member KEY in [lo, hi] into *out; leaves *out (the default) when absent. */
int gw__get_int(gw__cfgctx *c, json_t *obj, const char *key, const char *parent,
                       json_int_t lo, json_int_t hi, json_int_t *out)
{
    char p[GW__PATH_MAX];
    json_t *v = json_object_get(obj, key);
    json_int_t n;

    if (v == NULL)
        return 0;
    n = json_is_integer(v) ? json_integer_value(v) : 0;
    if (!json_is_integer(v) || n < lo || n > hi) {
        if (hi == LLONG_MAX)
            return gw__fail(c, gw__path(p, parent, key), "must be an integer >= %lld",
                            (long long)lo);
        return gw__fail(c, gw__path(p, parent, key), "must be an integer from %lld to %lld",
                        (long long)lo, (long long)hi);
    }
    *out = n;
    return 0;
}

int gw__get_u32(gw__cfgctx *c, json_t *obj, const char *key, const char *parent,
                       uint32_t lo, uint32_t hi, uint32_t *out)
{
    json_int_t n = *out;
    int rc = gw__get_int(c, obj, key, parent, lo, hi, &n);

    if (rc == 0)
        *out = (uint32_t)n;
    return rc;
}

int gw__get_ms(gw__cfgctx *c, json_t *obj, const char *key, const char *parent,
                      uint32_t *out)
{
    return gw__get_u32(c, obj, key, parent, 1, GW__MS_MAX, out);
}

/* String member KEY into buf[size]; *present tells whether it was there (buf untouched when
 * not). An empty string is refused unless allow_empty. */
int gw__get_str(gw__cfgctx *c, json_t *obj, const char *key, const char *parent,
                       char *buf, size_t size, int allow_empty, int *present)
{
    char p[GW__PATH_MAX];
    json_t *v = json_object_get(obj, key);
    size_t n;

    if (present != NULL)
        *present = v != NULL;
    if (v == NULL)
        return 0;
    if (!json_is_string(v))
        return gw__fail(c, gw__path(p, parent, key), "must be a string");
    n = json_string_length(v);
    if (n == 0 && !allow_empty)
        return gw__fail(c, gw__path(p, parent, key), "must not be empty");
    if (n >= size)
        return gw__fail(c, gw__path(p, parent, key), "too long (at most %zu bytes)", size - 1);
    memcpy(buf, json_string_value(v), n + 1);
    return 0;
}

static int gw__is_hostname(const char *s, size_t n)
{
    size_t i;

    if (n == 0 || n > 253)
        return 0;
    for (i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '-' || ch == '.' || ch == '_'))
            return 0;
    }
    return 1;
}

/* Parses "host:port" or "[v6]:port" with port in [min_port, 65535]. With resolve, fills
 * addr/len (numeric addresses first, names through getaddrinfo: first IPv4 result, else the
 * first one); without, checks the syntax only and sets *len = 0 for a name. On failure
 * returns GW_EINVAL and, when why is given, the reason ('invalid port "99999"'). */
static int gw__hostport(const char *s, unsigned min_port, int resolve,
                        struct sockaddr_storage *addr, socklen_t *len, char *why, size_t whylen)
{
    char q[GW__QUOTE_SIZE], host[256], port[8];
    const char *colon, *hs, *he;
    struct addrinfo hints, *res = NULL, *ai, *pick;
    size_t hn, pn, i;
    unsigned long pv = 0;
    int bracketed = s[0] == '[', rc;

    if (bracketed) {
        hs = s + 1;
        he = strchr(hs, ']');
        if (he == NULL || he[1] != ':')
            goto bad_address;
        colon = he + 1;
    } else {
        hs = s;
        colon = strrchr(s, ':');
        if (colon == NULL)
            goto bad_address;
        he = colon;
        if (memchr(hs, ':', (size_t)(he - hs)) != NULL) /* a bare IPv6 address: needs [] */
            goto bad_address;
    }
    hn = (size_t)(he - hs);
    if (hn == 0 || hn >= sizeof host)
        goto bad_address;
    memcpy(host, hs, hn);
    host[hn] = '\0';

    pn = strlen(colon + 1);
    if (pn == 0 || pn > 5)
        goto bad_port;
    for (i = 0; i < pn; i++) {
        char ch = colon[1 + i];
        if (ch < '0' || ch > '9')
            goto bad_port;
        pv = pv * 10 + (unsigned long)(ch - '0');
    }
    if (pv < min_port || pv > 65535)
        goto bad_port;
    snprintf(port, sizeof port, "%lu", pv);

    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    if (bracketed) {
        /* numeric IPv6 only (a scope id "fe80::1%eth0" is fine); no name lookup here */
        hints.ai_family = AF_INET6;
        if (getaddrinfo(host, port, &hints, &res) != 0)
            goto bad_address;
    } else {
        struct in_addr a4;
        if (inet_pton(AF_INET, host, &a4) == 1) {
            struct sockaddr_in *sin = (struct sockaddr_in *)addr;
            memset(addr, 0, sizeof *addr);
            sin->sin_family = AF_INET;
            sin->sin_port = htons((uint16_t)pv);
            sin->sin_addr = a4;
            *len = sizeof *sin;
            return 0;
        }
        /* digits and dots that are not a dotted quad ("999.1.1.1", "127.1"): never a name */
        if (strspn(host, "0123456789.") == hn || !gw__is_hostname(host, hn))
            goto bad_address;
        if (!resolve) {
            memset(addr, 0, sizeof *addr);
            *len = 0;
            return 0;
        }
        hints.ai_family = AF_UNSPEC;
        hints.ai_flags = AI_NUMERICSERV;
        rc = getaddrinfo(host, port, &hints, &res);
        if (rc != 0) {
            if (why != NULL && whylen > 0)
                snprintf(why, whylen, "cannot resolve %s: %s", gw__quote(q, host),
                         gai_strerror(rc));
            return GW_EINVAL;
        }
    }
    pick = res;
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET) {
            pick = ai;
            break;
        }
    }
    if (pick == NULL || pick->ai_addrlen > sizeof *addr) {
        freeaddrinfo(res);
        goto bad_address;
    }
    memset(addr, 0, sizeof *addr);
    memcpy(addr, pick->ai_addr, pick->ai_addrlen);
    *len = (socklen_t)pick->ai_addrlen;
    freeaddrinfo(res);
    return 0;

bad_address:
    if (why != NULL && whylen > 0)
        snprintf(why, whylen, "invalid address %s", gw__quote(q, s));
    return GW_EINVAL;
bad_port:
    if (why != NULL && whylen > 0)
        snprintf(why, whylen, "invalid port %s", gw__quote(q, colon + 1));
    return GW_EINVAL;
}

int gw_parse_hostport(const char *s, struct sockaddr_storage *addr, socklen_t *len)
{
    if (s == NULL || addr == NULL || len == NULL)
        return GW_EINVAL;
    return gw__hostport(s, 0, 1, addr, len, NULL, 0);
}

/* Validates address S (from PATH) into buf[size] and, with resolve, addr/len. */
int gw__address(gw__cfgctx *c, const char *path, const char *s, unsigned min_port,
                       int resolve, char *buf, size_t size, struct sockaddr_storage *addr,
                       socklen_t *len)
{
    char why[GW__QUOTE_SIZE + 64], q[GW__QUOTE_SIZE];
    struct sockaddr_storage tmp;
    socklen_t tmplen;

    if (strlen(s) >= size)
        return gw__fail(c, path, "invalid address %s (longer than %zu bytes)", gw__quote(q, s),
                        size - 1);
    if (gw__hostport(s, min_port, resolve, addr ? addr : &tmp, len ? len : &tmplen, why,
                     sizeof why) != 0)
        return gw__fail(c, path, "%s", why);
    memcpy(buf, s, strlen(s) + 1);
    return 0;
}

/* Address member KEY of OBJ (see gw__address); absent leaves the default. */
static int gw__get_address(gw__cfgctx *c, json_t *obj, const char *key, const char *parent,
                           unsigned min_port, int resolve, char *buf, size_t size,
                           struct sockaddr_storage *addr, socklen_t *len)
{
    char p[GW__PATH_MAX];
    json_t *v = json_object_get(obj, key);

    if (v == NULL)
        return 0;
    gw__path(p, parent, key);
    if (!json_is_string(v))
        return gw__fail(c, p, "must be a \"host:port\" string");
    return gw__address(c, p, json_string_value(v), min_port, resolve, buf, size, addr, len);
}

/* The admin token goes into an Authorization header compare: visible ASCII only. */
static int gw__token_ok(const char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return 0;
    return 1;
}

/* REL joined to the config file's folder (unless absolute) into out[size]. */
int gw__resolve_path(gw__cfgctx *c, const char *path, const char *rel, char *out,
                            size_t size)
{
    size_t dl = rel[0] == '/' ? 0 : c->dirlen, rl = strlen(rel);

    if (dl + rl >= size)
        return gw__fail(c, path, "path too long (at most %zu bytes once resolved)", size - 1);
    memcpy(out, c->file, dl);
    memcpy(out + dl, rel, rl + 1);
    return 0;
}

int gw__name_ok(const char *s)
{
    size_t n = strlen(s), i;

    if (n == 0 || n >= GW_NAME_MAX)
        return 0;
    for (i = 0; i < n; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '.' || ch == '-'))
            return 0;
    }
    return 1;
}

int gw__parse_upstream(gw__cfgctx *c, const char *name, json_t *u, gw_upstream_conf *up)
{
    static const char *const keys[] = { "endpoints", "host", "connect_timeout_ms",
                                        "response_timeout_ms", "read_timeout_ms",
                                        "send_timeout_ms", "pool",
                                        "down_ms", "breaker", "tls", "max_in_flight",
                                        "queue", "resolve_ms", NULL };
    static const char *const breaker_keys[] = { "failures", "cooldown_ms", NULL };
    static const char *const pool_keys[] = { "max_idle", "idle_timeout_ms", NULL };
    char path[GW__PATH_MAX], p[GW__PATH_MAX], pp[GW__PATH_MAX + 32], q[GW__QUOTE_SIZE];
    json_t *eps, *ep, *pool;
    size_t i, j;
    int rc;

    gw__path(path, "upstreams", name);
    if (!json_is_object(u))
        return gw__fail(c, path, "must be an object");
    if ((rc = gw__only_keys(c, u, path, keys)) != 0)
        return rc;
    memcpy(up->name, name, strlen(name) + 1);

    gw__path(p, path, "endpoints");
    eps = json_object_get(u, "endpoints");
    if (eps == NULL)
        return gw__fail(c, p, "required");
    if (!json_is_array(eps) || json_array_size(eps) == 0)
        return gw__fail(c, p, "must be a non-empty array of \"host:port\" strings");
    if (json_array_size(eps) > GW_MAX_ENDPOINTS)
        return gw__fail(c, p, "at most %d endpoints", GW_MAX_ENDPOINTS);
    json_array_foreach(eps, i, ep) {
        gw_endpoint_conf *e = &up->endpoints[i];
        snprintf(pp, sizeof pp, "%s[%zu]", p, i);
        if (!json_is_string(ep))
            return gw__fail(c, pp, "must be a \"host:port\" string");
        /* a name the background resolver knows: its answer, no blocking lookup (resolver.h) */
        rc = gw__address(c, pp, json_string_value(ep), 1, 0, e->address, sizeof e->address,
                         NULL, NULL);
        if (rc == 0 && !gw_resolved_first(e->address, &e->addr, &e->addrlen))
            rc = gw__address(c, pp, json_string_value(ep), 1, 1, e->address,
                             sizeof e->address, &e->addr, &e->addrlen);
        if (rc != 0)
            return rc;
        for (j = 0; j < i; j++)
            if (strcmp(up->endpoints[j].address, e->address) == 0)
                return gw__fail(c, pp, "duplicate endpoint %s", gw__quote(q, e->address));
        up->n_endpoints = (int)i + 1;
    }

    if ((rc = gw__get_str(c, u, "host", path, up->host, sizeof up->host, 1, NULL)) != 0)
        return rc;
    if (!gw__token_ok(up->host))
        return gw__fail(c, gw__path(p, path, "host"),
                        "must be visible ASCII without spaces or control characters");
    if ((rc = gw__get_ms(c, u, "connect_timeout_ms", path, &up->connect_timeout_ms)) != 0 ||
        (rc = gw__get_ms(c, u, "response_timeout_ms", path, &up->response_timeout_ms)) != 0 ||
        (rc = gw__get_ms(c, u, "read_timeout_ms", path, &up->read_timeout_ms)) != 0 ||
        (rc = gw__get_ms(c, u, "send_timeout_ms", path, &up->send_timeout_ms)) != 0 ||
        (rc = gw__get_obj(c, u, "pool", path, &pool)) != 0)
        return rc;
    if (pool != NULL) {
        gw__path(p, path, "pool");
        if ((rc = gw__only_keys(c, pool, p, pool_keys)) != 0 ||
            (rc = gw__get_u32(c, pool, "max_idle", p, 0, 65535, &up->pool_max_idle)) != 0 ||
            (rc = gw__get_ms(c, pool, "idle_timeout_ms", p, &up->pool_idle_timeout_ms)) != 0)
            return rc;
    }
    json_t *br;
    if ((rc = gw__get_obj(c, u, "breaker", path, &br)) != 0)
        return rc;
    if (br != NULL) {
        gw__path(p, path, "breaker");
        if ((rc = gw__only_keys(c, br, p, breaker_keys)) != 0 ||
            (rc = gw__get_u32(c, br, "failures", p, 1, 1000000, &up->breaker_failures)) != 0 ||
            (rc = gw__get_ms(c, br, "cooldown_ms", p, &up->breaker_cooldown_ms)) != 0)
            return rc;
    }
    if ((rc = gw__parse_upstream_tls(c, u, path, up)) != 0 ||
        (rc = gw__parse_upstream_limits(c, u, path, up)) != 0)
        return rc;
    if ((rc = gw__get_u32(c, u, "resolve_ms", path, 0, GW__MS_MAX, &up->resolve_ms)) != 0)
        return rc;
    return gw__get_u32(c, u, "down_ms", path, 0, GW__MS_MAX, &up->down_ms);
}

void gw_config_upstream_defaults(gw_upstream_conf *up)
{
    gw__upstream_defaults(up);
}

void gw__upstream_defaults(gw_upstream_conf *up)
{
    memset(up, 0, sizeof *up);
    up->connect_timeout_ms = 1000;
    up->response_timeout_ms = 30000;
    up->read_timeout_ms = 30000;
    up->send_timeout_ms = 30000;
    up->pool_max_idle = 64;
    up->pool_idle_timeout_ms = 30000;
    up->down_ms = 5000;
    up->breaker_failures = 5;
    up->breaker_cooldown_ms = 5000;
    up->resolve_ms = 10000;
    up->tls_verify = 1;
    up->queue_timeout_ms = 1000;
}

static int gw__parse_upstreams(gw__cfgctx *c, json_t *root, gw_config *k)
{
    char q[GW__QUOTE_SIZE];
    json_t *ups = json_object_get(root, "upstreams"), *u;
    const char *name;
    int rc;

    if (ups == NULL)
        return gw__fail(c, "upstreams", "required");
    if (!json_is_object(ups) || json_object_size(ups) == 0)
        return gw__fail(c, "upstreams", "must be an object with at least one upstream");
    if (json_object_size(ups) > GW_MAX_UPSTREAMS)
        return gw__fail(c, "upstreams", "at most %d upstreams", GW_MAX_UPSTREAMS);
    json_object_foreach(ups, name, u) {
        gw_upstream_conf *up = &k->upstreams[k->n_upstreams];
        if (!gw__name_ok(name))
            return gw__fail(c, "upstreams",
                            "invalid upstream name %s (must match [A-Za-z0-9_.-]{1,63})",
                            gw__quote(q, name));
        gw__upstream_defaults(up);
        if ((rc = gw__parse_upstream(c, name, u, up)) != 0)
            return rc;
        k->n_upstreams++;
    }
    return 0;
}

static int gw__parse_limits(gw__cfgctx *c, json_t *root, gw_limits_conf *l)
{
    static const char *const keys[] = { "max_uri_bytes", "max_header_bytes", "max_headers",
                                        "max_body_bytes", "header_timeout_ms", "body_timeout_ms",
                                        "idle_timeout_ms", "send_timeout_ms", "tunnel_idle_timeout_ms",
                                        "read_buffer_bytes", "max_connections", NULL };
    json_t *o;
    json_int_t body = (json_int_t)l->max_body_bytes;
    int rc;

    if ((rc = gw__get_obj(c, root, "limits", "", &o)) != 0 || o == NULL)
        return rc;
    if ((rc = gw__only_keys(c, o, "limits", keys)) != 0 ||
        (rc = gw__get_u32(c, o, "max_header_bytes", "limits", 1024, 1048576,
                          &l->max_header_bytes)) != 0)
        return rc;
    /* the default URI limit shrinks with a smaller head limit; an explicit one must fit */
    if (l->max_uri_bytes > l->max_header_bytes)
        l->max_uri_bytes = l->max_header_bytes;
    if ((rc = gw__get_u32(c, o, "max_uri_bytes", "limits", 64, l->max_header_bytes,
                          &l->max_uri_bytes)) != 0 ||
        (rc = gw__get_u32(c, o, "max_headers", "limits", 1, GW_MAX_HEADERS,
                          &l->max_headers)) != 0 ||
        (rc = gw__get_int(c, o, "max_body_bytes", "limits", 0, LLONG_MAX, &body)) != 0 ||
        (rc = gw__get_ms(c, o, "header_timeout_ms", "limits", &l->header_timeout_ms)) != 0 ||
        (rc = gw__get_ms(c, o, "body_timeout_ms", "limits", &l->body_timeout_ms)) != 0 ||
        (rc = gw__get_ms(c, o, "idle_timeout_ms", "limits", &l->idle_timeout_ms)) != 0 ||
        (rc = gw__get_ms(c, o, "send_timeout_ms", "limits", &l->send_timeout_ms)) != 0 ||
        (rc = gw__get_ms(c, o, "tunnel_idle_timeout_ms", "limits", &l->tunnel_idle_timeout_ms)) != 0 ||
        (rc = gw__get_u32(c, o, "read_buffer_bytes", "limits", 4096, 16777216,
                          &l->read_buffer_bytes)) != 0 ||
        (rc = gw__get_u32(c, o, "max_connections", "limits", 1, 1000000,
                          &l->max_connections)) != 0)
        return rc;
    l->max_body_bytes = (uint64_t)body;
    return 0;
}

static int gw__parse_routes(gw__cfgctx *c, json_t *root, gw_config *k)
{
    static const char *const keys[] = { "source", "file", "conninfo", "cache_file", NULL };
    char file[sizeof k->routes_file], cache[sizeof k->routes_cache_file];
    int has_cache = 0;
    json_t *o, *src;
    int rc, has_file;

    if ((rc = gw__get_obj(c, root, "routes", "", &o)) != 0)
        return rc;
    if (o == NULL)
        return gw__fail(c, "routes", "required");
    if ((rc = gw__only_keys(c, o, "routes", keys)) != 0)
        return rc;
    src = json_object_get(o, "source");
    if (src == NULL)
        return gw__fail(c, "routes.source", "required");
    if (json_is_string(src) && strcmp(json_string_value(src), "file") == 0)
        k->routes_source = GW_ROUTES_FILE;
    else if (json_is_string(src) && strcmp(json_string_value(src), "postgres") == 0)
        k->routes_source = GW_ROUTES_POSTGRES;
    else
        return gw__fail(c, "routes.source", "must be \"file\" or \"postgres\"");
    if ((rc = gw__get_str(c, o, "file", "routes", file, sizeof file, 0, &has_file)) != 0 ||
        (rc = gw__get_str(c, o, "conninfo", "routes", k->pg_conninfo, sizeof k->pg_conninfo, 0,
                          NULL)) != 0 ||
        (rc = gw__get_str(c, o, "cache_file", "routes", cache, sizeof cache, 0, &has_cache)) != 0)
        return rc;
    /* the PostgreSQL source keeps its last good table here, to start while the database is
     * down; default: routes.cache.json beside this file */
    if ((rc = gw__resolve_path(c, "routes.cache_file", has_cache ? cache : "routes.cache.json",
                               k->routes_cache_file, sizeof k->routes_cache_file)) != 0)
        return rc;
    if (has_file)
        return gw__resolve_path(c, "routes.file", file, k->routes_file, sizeof k->routes_file);
    return 0;
}

static int gw__parse_root(gw__cfgctx *c, json_t *root, gw_config *k)
{
    static const char *const keys[] = { "listen", "listeners", "workers", "admin", "upstreams", "limits",
                                        "log", "shutdown", "routes", "redis", "composers",
                                        "cache", "background", "rate_limits", "http2", "tracing", NULL };
    static const char *const admin_keys[] = { "listen", "token", "tokens", NULL };
    static const char *const log_keys[] = { "access", NULL };
    static const char *const shutdown_keys[] = { "drain_timeout_ms", NULL };
    char access[sizeof k->access_log];
    json_t *o;
    json_int_t workers = 0;
    int rc, has_access;

    if (!json_is_object(root))
        return gw__fail(c, "(root)", "must be a JSON object");
    if ((rc = gw__only_keys(c, root, "", keys)) != 0)
        return rc;

    if ((rc = gw__parse_listeners(c, root, k)) != 0 ||
        (rc = gw__parse_rate_limits(c, root, k)) != 0 ||
        (rc = gw__parse_tracing(c, root, k)) != 0)
        return rc;

    if ((rc = gw__get_int(c, root, "workers", "", 0, GW__WORKERS_MAX, &workers)) != 0)
        return rc;
    k->workers = (int)workers;

    if ((rc = gw__get_obj(c, root, "admin", "", &o)) != 0)
        return rc;
    if (o != NULL) {
        if ((rc = gw__only_keys(c, o, "admin", admin_keys)) != 0 ||
            (rc = gw__get_address(c, o, "listen", "admin", 0, 1, k->admin_listen,
                                  sizeof k->admin_listen, &k->admin_addr,
                                  &k->admin_addrlen)) != 0 ||
            (rc = gw__get_str(c, o, "token", "admin", k->admin_token, sizeof k->admin_token, 1,
                              NULL)) != 0)
            return rc;
        if (!gw__token_ok(k->admin_token))
            return gw__fail(c, "admin.token", "must be visible ASCII without spaces");
        /* named tokens: the name is who the audit trail says made a change */
        json_t *toks = json_object_get(o, "tokens");
        if (toks) {
            const char *name;
            json_t *v;
            if (!json_is_object(toks))
                return gw__fail(c, "admin.tokens", "must be an object of name: token");
            json_object_foreach(toks, name, v) {
                char path[128];
                snprintf(path, sizeof path, "admin.tokens.%.60s", name);
                if (k->n_admin_tokens >= GW_MAX_ADMIN_TOKENS)
                    return gw__fail(c, "admin.tokens", "at most %d tokens", GW_MAX_ADMIN_TOKENS);
                if (!gw__name_ok(name))
                    return gw__fail(c, path, "name must be [A-Za-z0-9_.-]{1,63}");
                if (!json_is_string(v) || !json_string_length(v) ||
                    json_string_length(v) >= sizeof k->admin_tokens[0].token ||
                    !gw__token_ok(json_string_value(v)))
                    return gw__fail(c, path, "must be a non-empty string of visible ASCII without spaces");
                gw_admin_token *t = &k->admin_tokens[k->n_admin_tokens++];
                snprintf(t->name, sizeof t->name, "%s", name);
                snprintf(t->token, sizeof t->token, "%s", json_string_value(v));
            }
        }
    }

    if ((rc = gw__parse_upstreams(c, root, k)) != 0 ||
        (rc = gw__parse_limits(c, root, &k->limits)) != 0)
        return rc;

    if ((rc = gw__get_obj(c, root, "log", "", &o)) != 0)
        return rc;
    if (o != NULL) {
        if ((rc = gw__only_keys(c, o, "log", log_keys)) != 0 ||
            (rc = gw__get_str(c, o, "access", "log", access, sizeof access, 0, &has_access)) != 0)
            return rc;
        if (has_access) {
            if (strcmp(access, "stderr") == 0 || strcmp(access, "stdout") == 0 ||
                strcmp(access, "off") == 0)
                memcpy(k->access_log, access, strlen(access) + 1);
            else if ((rc = gw__resolve_path(c, "log.access", access, k->access_log,
                                            sizeof k->access_log)) != 0)
                return rc;
        }
    }

    if ((rc = gw__get_obj(c, root, "shutdown", "", &o)) != 0)
        return rc;
    if (o != NULL && ((rc = gw__only_keys(c, o, "shutdown", shutdown_keys)) != 0 ||
                      (rc = gw__get_ms(c, o, "drain_timeout_ms", "shutdown",
                                       &k->drain_timeout_ms)) != 0))
        return rc;

    static const char *const background_keys[] = { "max_in_flight",
                                                    "max_connections_per_endpoint", NULL };
    if ((rc = gw__get_obj(c, root, "background", "", &o)) != 0)
        return rc;
    if (o != NULL && ((rc = gw__only_keys(c, o, "background", background_keys)) != 0 ||
                      (rc = gw__get_u32(c, o, "max_in_flight", "background", 0, 65535,
                                        &k->background.max_in_flight)) != 0 ||
                      (rc = gw__get_u32(c, o, "max_connections_per_endpoint", "background", 0,
                                        65535, &k->background.max_connections_per_endpoint)) != 0))
        return rc;

    if ((rc = gw__parse_routes(c, root, k)) != 0)
        return rc;

    /* compositions (composers/spec.h), relative to this file's folder */
    char comp[sizeof k->composers_file];
    int has_comp = 0;
    if ((rc = gw__get_str(c, root, "composers", "", comp, sizeof comp, 0, &has_comp)) != 0)
        return rc;
    if (has_comp && (rc = gw__resolve_path(c, "composers", comp, k->composers_file,
                                           sizeof k->composers_file)) != 0)
        return rc;

    static const char *const cache_keys[] = { "ttl_ms", "negative_ttl_ms", "stale_ms",
                                              "timeout_ms", "lru_entries", NULL };
    if ((rc = gw__get_obj(c, root, "cache", "", &o)) != 0)
        return rc;
    if (o != NULL && ((rc = gw__only_keys(c, o, "cache", cache_keys)) != 0 ||
                      (rc = gw__get_ms(c, o, "ttl_ms", "cache", &k->cache.ttl_ms)) != 0 ||
                      (rc = gw__get_ms(c, o, "negative_ttl_ms", "cache", &k->cache.negative_ttl_ms)) != 0 ||
                      (rc = gw__get_u32(c, o, "stale_ms", "cache", 0, GW__MS_MAX, &k->cache.stale_ms)) != 0 ||
                      (rc = gw__get_ms(c, o, "timeout_ms", "cache", &k->cache.timeout_ms)) != 0 ||
                      (rc = gw__get_u32(c, o, "lru_entries", "cache", 0, 10000000, &k->cache.lru_entries)) != 0))
        return rc;

    /* names are resolved when connecting; only the syntax is checked here */
    return gw__parse_redis(c, root, k);
}

static const char *gw__env(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' ? v : NULL;
}

static int gw__apply_env(gw__cfgctx *c, gw_config *k)
{
    const char *v;
    int rc;

    c->prefix = NULL;
    if ((v = gw__env("GATEWAY_LISTEN")) != NULL) {
        /* the cleartext listener's address; one is added when there is none */
        int i;
        for (i = 0; i < k->n_listeners && k->listeners[i].tls; i++)
            ;
        if (i == k->n_listeners && k->n_listeners == GW_MAX_LISTENERS)
            return gw__fail(c, "env GATEWAY_LISTEN", "no cleartext listener to replace and "
                            "already %d listeners", GW_MAX_LISTENERS);
        gw_listener_conf *l = &k->listeners[i];
        if ((rc = gw__address(c, "env GATEWAY_LISTEN", v, 0, 1, l->listen, sizeof l->listen,
                              &l->addr, &l->addrlen)) != 0)
            return rc;
        if (i == k->n_listeners) {
            l->tls = 0;
            k->n_listeners++;
        }
    }
    if ((v = gw__env("GATEWAY_ADMIN_LISTEN")) != NULL &&
        (rc = gw__address(c, "env GATEWAY_ADMIN_LISTEN", v, 0, 1, k->admin_listen,
                          sizeof k->admin_listen, &k->admin_addr, &k->admin_addrlen)) != 0)
        return rc;
    if ((v = gw__env("GATEWAY_ADMIN_TOKEN")) != NULL) {
        if (strlen(v) >= sizeof k->admin_token)
            return gw__fail(c, "env GATEWAY_ADMIN_TOKEN", "too long (at most %zu bytes)",
                            sizeof k->admin_token - 1);
        if (!gw__token_ok(v))
            return gw__fail(c, "env GATEWAY_ADMIN_TOKEN", "must be visible ASCII without spaces");
        memcpy(k->admin_token, v, strlen(v) + 1);
    }
    if ((v = gw__env("GATEWAY_PG")) != NULL) {
        if (strlen(v) >= sizeof k->pg_conninfo)
            return gw__fail(c, "env GATEWAY_PG", "too long (at most %zu bytes)",
                            sizeof k->pg_conninfo - 1);
        memcpy(k->pg_conninfo, v, strlen(v) + 1);
        k->routes_source = GW_ROUTES_POSTGRES;
    }
    if ((v = gw__env("GATEWAY_REDIS")) != NULL && (rc = gw__parse_redis_env(c, v, k)) != 0)
        return rc;
    return 0;
}

static int gw__same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port != 0 && x->sin_port == y->sin_port &&
               x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port != 0 && x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr) == 0;
    }
    return 0;
}

/* Checks that span the file and the environment. */
static int gw__check_final(gw__cfgctx *c, gw_config *k)
{
    c->prefix = c->file;
    if (k->routes_source == GW_ROUTES_FILE && k->routes_file[0] == '\0')
        return gw__fail(c, "routes.file", "required when \"source\" is \"file\"");
    if (k->routes_source == GW_ROUTES_POSTGRES && k->pg_conninfo[0] == '\0')
        return gw__fail(c, "routes.conninfo",
                        "required when \"source\" is \"postgres\" (or set GATEWAY_PG)");
    /* the listener GATEWAY_LISTEN speaks of, for the messages and the port probe */
    const gw_listener_conf *first = &k->listeners[0];
    for (int i = 0; i < k->n_listeners; i++)
        if (!k->listeners[i].tls) {
            first = &k->listeners[i];
            break;
        }
    memcpy(k->listen, first->listen, sizeof k->listen);
    k->listen_addr = first->addr;
    k->listen_addrlen = first->addrlen;
    for (int i = 0; i < k->n_listeners; i++) {
        char p[64];
        if (k->n_listeners == 1)
            snprintf(p, sizeof p, "listen");
        else
            snprintf(p, sizeof p, "listeners[%d].listen", i);
        if (gw__same_addr(&k->listeners[i].addr, &k->admin_addr))
            return gw__fail(c, "admin.listen", "same address as %s (%s)", p,
                            k->listeners[i].listen);
        for (int j = 0; j < i; j++)
            if (gw__same_addr(&k->listeners[i].addr, &k->listeners[j].addr))
                return gw__fail(c, p, "same address as listeners[%d] (%s)", j,
                                k->listeners[j].listen);
    }
    if (k->workers == 0) {
        unsigned n = uv_available_parallelism();
        k->workers = n < 1 ? 1 : n > GW__WORKERS_MAX ? GW__WORKERS_MAX : (int)n;
    }
    return 0;
}

static void gw__defaults(gw_config *k)
{
    memset(k, 0, sizeof *k);
    strcpy(k->admin_listen, "127.0.0.1:9090");
    gw__hostport(k->admin_listen, 0, 0, &k->admin_addr, &k->admin_addrlen, NULL, 0);
    k->limits.max_uri_bytes = 8192;
    k->limits.max_header_bytes = 16384;
    k->limits.max_headers = 100;
    k->limits.max_body_bytes = 10u << 20;
    k->limits.header_timeout_ms = 10000;
    k->limits.body_timeout_ms = 30000;
    k->limits.idle_timeout_ms = 60000;
    k->limits.tunnel_idle_timeout_ms = 300000;
    k->limits.send_timeout_ms = 30000;
    k->limits.read_buffer_bytes = 65536;
    k->limits.max_connections = 10000;
    strcpy(k->access_log, "stderr");
    k->drain_timeout_ms = 10000;
    k->background.max_in_flight = 256;
    k->rate_limits.shared = 1;
    k->rate_limits.instances = 0; /* learned from the instances seen in Redis */
    k->rate_limits.timeout_ms = 50;
    k->background.max_connections_per_endpoint = 64;
    k->routes_source = GW_ROUTES_FILE;
    k->cache.ttl_ms = 60000;
    k->cache.negative_ttl_ms = 5000;
    k->cache.stale_ms = 300000;
    k->cache.timeout_ms = 20;
    k->cache.lru_entries = 10000;
    gw__tracing_defaults(k);
}

/* Reads FILE whole into a NUL-terminated heap buffer. */
static int gw__read_file(gw__cfgctx *c, char **out, size_t *outlen)
{
    FILE *f;
    char *buf = NULL, *nb;
    size_t len = 0, cap = 0, n;
    int rc;

    *out = NULL;
    f = fopen(c->file, "rb");
    if (f == NULL)
        goto fail_errno;
    for (;;) {
        if (cap - len < 4096) {
            cap = cap == 0 ? 16384 : cap * 2;
            if (cap > GW__FILE_MAX_BYTES + 1) {
                snprintf(c->err, c->errlen, "%s: cannot read: larger than %u bytes", c->file,
                         GW__FILE_MAX_BYTES);
                rc = GW_EIO;
                goto fail_read;
            }
            nb = realloc(buf, cap);
            if (nb == NULL) {
                snprintf(c->err, c->errlen, "%s: %s", c->file, gw_strerror(GW_ENOMEM));
                rc = GW_ENOMEM;
                goto fail_read;
            }
            buf = nb;
        }
        n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f))
        goto fail_read_errno;
    fclose(f);
    buf[len] = '\0';
    *out = buf;
    *outlen = len;
    return 0;

fail_read_errno:
    rc = errno;
    snprintf(c->err, c->errlen, "%s: cannot read: %s", c->file, strerror(rc));
    rc = GW_EIO;
fail_read:
    free(buf);
    fclose(f);
    return rc;
fail_errno:
    snprintf(c->err, c->errlen, "%s: cannot read: %s", c->file, strerror(errno));
    return GW_EIO;
}

int gw_config_load(gw_config *cfg, const char *file, char *err, size_t errlen)
{
    char dummy[1], *text = NULL;
    const char *slash;
    gw__cfgctx c;
    gw_config *k = NULL;
    json_error_t jerr;
    json_t *root = NULL;
    size_t len = 0;
    int rc;

    if (err == NULL || errlen == 0) { /* errors are still composed, just nowhere useful */
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = '\0';
    if (cfg == NULL || file == NULL) {
        snprintf(err, errlen, "gw_config_load: %s", gw_strerror(GW_EINVAL));
        return GW_EINVAL;
    }
    slash = strrchr(file, '/');
    c.prefix = file;
    c.file = file;
    c.dirlen = slash != NULL ? (size_t)(slash - file) + 1 : 0;
    c.err = err;
    c.errlen = errlen;

    if (strlen(file) >= sizeof cfg->path) {
        snprintf(err, errlen, "%.64s...: path too long (at most %zu bytes)", file,
                 sizeof cfg->path - 1);
        return GW_EINVAL;
    }
    k = malloc(sizeof *k); /* built aside: *cfg is untouched unless the whole load succeeds */
    if (k == NULL) {
        snprintf(err, errlen, "%s: %s", file, gw_strerror(GW_ENOMEM));
        return GW_ENOMEM;
    }
    gw__defaults(k);
    memcpy(k->path, file, strlen(file) + 1);

    if ((rc = gw__read_file(&c, &text, &len)) != 0)
        goto fail;
    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        /* jansson quotes the token it stopped at ("invalid escape near '\"S3cr\q'"): in a
         * file that holds a password, the line and column say where, without the text */
        char *near = strstr(jerr.text, " near '");
        if (near != NULL && memmem(text, len, "password", 8) != NULL)
            *near = '\0';
        if (jerr.line > 0)
            snprintf(err, errlen, "%s: line %d column %d: %s", file, jerr.line, jerr.column,
                     jerr.text);
        else
            snprintf(err, errlen, "%s: %s", file, jerr.text);
        rc = GW_EPARSE;
        goto fail;
    }
    if ((rc = gw__parse_root(&c, root, k)) != 0 || (rc = gw__apply_env(&c, k)) != 0 ||
        (rc = gw__check_final(&c, k)) != 0)
        goto fail;

    memcpy(cfg, k, sizeof *k);
    if (cfg->rate_limits.default_limit.key_header) /* it pointed into k's copy */
        cfg->rate_limits.default_limit.key_header = cfg->rate_limits.default_header;
    rc = 0;
fail:
    json_decref(root);
    if (text != NULL) /* the file's text and the staging copy may hold a Redis password */
        explicit_bzero(text, len);
    free(text);
    explicit_bzero(k, sizeof *k);
    free(k);
    return rc;
}

const gw_upstream_conf *gw_config_upstream(const gw_config *cfg, const char *name, size_t namelen)
{
    int i;

    if (cfg == NULL || name == NULL)
        return NULL;
    for (i = 0; i < cfg->n_upstreams; i++) {
        const gw_upstream_conf *up = &cfg->upstreams[i];
        if (strlen(up->name) == namelen && memcmp(up->name, name, namelen) == 0)
            return up;
    }
    return NULL;
}
