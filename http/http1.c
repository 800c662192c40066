/* http1.c — header rewriting and chunk framing for the proxy. */
#include "http/http1.h"

#include <arpa/inet.h>
#include <string.h>

/* Does a comma-separated header value list the token NAME (case-insensitive)? */
static int list_has_token(gw_slice list, gw_slice name)
{
    size_t i = 0;
    while (i < list.n) {
        while (i < list.n && (list.p[i] == ' ' || list.p[i] == '\t' || list.p[i] == ','))
            i++;
        size_t start = i;
        while (i < list.n && list.p[i] != ',')
            i++;
        size_t end = i;
        while (end > start && (list.p[end - 1] == ' ' || list.p[end - 1] == '\t'))
            end--;
        gw_slice tok = { list.p + start, end - start };
        if (tok.n && gw_slice_ieq_slice(tok, name))
            return 1;
    }
    return 0;
}

/* Header names the proxy treats specially, recognised in one pass (switch on the length,
 * then one case-insensitive compare) instead of a strncasecmp per name per rule. */
typedef enum hdr_kind {
    HK_OTHER,
    HK_CONNECTION, HK_KEEP_ALIVE, HK_TE, HK_TRAILER, HK_TRANSFER_ENCODING, HK_UPGRADE,
    HK_PROXY, /* Proxy-* */
    HK_HOST, HK_CONTENT_LENGTH, HK_EXPECT, HK_X_FORWARDED_FOR, HK_X_FORWARDED_PROTO,
    HK_X_FORWARDED_HOST, HK_X_REQUEST_ID, HK_VIA, HK_DATE, HK_X_GATEWAY_UPSTREAM,
    HK_TRACEPARENT, HK_TRACESTATE, /* replaced when the gateway carries the trace */
} hdr_kind;

#define HK(k) (1u << (k))
#define HK_HOP_BY_HOP                                                                       \
    (HK(HK_CONNECTION) | HK(HK_KEEP_ALIVE) | HK(HK_TE) | HK(HK_TRAILER) |                   \
     HK(HK_TRANSFER_ENCODING) | HK(HK_UPGRADE) | HK(HK_PROXY))
/* replaced in the request head sent upstream */
#define HK_DROP_REQUEST                                                                     \
    (HK_HOP_BY_HOP | HK(HK_HOST) | HK(HK_CONTENT_LENGTH) | HK(HK_EXPECT) |                  \
     HK(HK_X_FORWARDED_FOR) | HK(HK_X_FORWARDED_PROTO) | HK(HK_X_FORWARDED_HOST) |          \
     HK(HK_X_REQUEST_ID) | HK(HK_VIA))
/* replaced in the response passed back */
#define HK_DROP_RESPONSE                                                                    \
    (HK_HOP_BY_HOP | HK(HK_CONTENT_LENGTH) | HK(HK_DATE) | HK(HK_X_REQUEST_ID) |            \
     HK(HK_X_GATEWAY_UPSTREAM))

/* p[0..n) equals the lower-case literal lit, ignoring ASCII case. */
static int lower_eq(const char *p, const char *lit, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + ('a' - 'A'));
        if (c != (unsigned char)lit[i])
            return 0;
    }
    return 1;
}

static hdr_kind classify(gw_slice name)
{
    const char *p = name.p;
#define IS(lit) lower_eq(p, lit, sizeof(lit) - 1)
    if (name.n >= 6 && IS("proxy-"))
        return HK_PROXY;
    switch (name.n) {
    case 2: return IS("te") ? HK_TE : HK_OTHER;
    case 3: return IS("via") ? HK_VIA : HK_OTHER;
    case 4: return IS("host") ? HK_HOST : IS("date") ? HK_DATE : HK_OTHER;
    case 6: return IS("expect") ? HK_EXPECT : HK_OTHER;
    case 7: return IS("trailer") ? HK_TRAILER : IS("upgrade") ? HK_UPGRADE : HK_OTHER;
    case 10:
        return IS("connection") ? HK_CONNECTION : IS("keep-alive") ? HK_KEEP_ALIVE
               : IS("tracestate") ? HK_TRACESTATE : HK_OTHER;
    case 11: return IS("traceparent") ? HK_TRACEPARENT : HK_OTHER;
    case 12: return IS("x-request-id") ? HK_X_REQUEST_ID : HK_OTHER;
    case 14: return IS("content-length") ? HK_CONTENT_LENGTH : HK_OTHER;
    case 15: return IS("x-forwarded-for") ? HK_X_FORWARDED_FOR : HK_OTHER;
    case 16: return IS("x-forwarded-host") ? HK_X_FORWARDED_HOST : HK_OTHER;
    case 17:
        return IS("transfer-encoding") ? HK_TRANSFER_ENCODING
               : IS("x-forwarded-proto") ? HK_X_FORWARDED_PROTO : HK_OTHER;
    case 18: return IS("x-gateway-upstream") ? HK_X_GATEWAY_UPSTREAM : HK_OTHER;
    }
    return HK_OTHER;
#undef IS
}

/* The kinds of hdrs[0..n) (n <= GW_MAX_HEADERS); returns whether one is a Connection. */
static int classify_all(const gw_header *hdrs, int n, unsigned char *kinds)
{
    int conn = 0;
    for (int i = 0; i < n; i++) {
        kinds[i] = (unsigned char)classify(hdrs[i].name);
        conn |= kinds[i] == HK_CONNECTION;
    }
    return conn;
}

/* Is name listed in one of the Connection headers among hdrs? */
static int listed_in_connection(gw_slice name, const gw_header *hdrs, int n,
                                const unsigned char *kinds)
{
    for (int i = 0; i < n; i++)
        if (kinds[i] == HK_CONNECTION && list_has_token(hdrs[i].value, name))
            return 1;
    return 0;
}

int gw_is_hop_by_hop(gw_slice name, const gw_header *hdrs, int n)
{
    unsigned char kinds[GW_MAX_HEADERS];
    if (n > GW_MAX_HEADERS)
        n = GW_MAX_HEADERS;
    int has_conn = classify_all(hdrs, n, kinds);
    return (HK(classify(name)) & HK_HOP_BY_HOP) ||
           (has_conn && listed_in_connection(name, hdrs, n, kinds));
}

/* Whether header i must be left out: its kind is in drop, or a Connection header lists it. */
static int dropped(const gw_header *hdrs, int n, const unsigned char *kinds, int has_conn,
                   unsigned drop, int i)
{
    if (HK(kinds[i]) & drop)
        return 1;
    return has_conn && listed_in_connection(hdrs[i].name, hdrs, n, kinds);
}

typedef struct out_buf {
    char *p;
    size_t len, cap;
    int overflow;
} out_buf;

static void put(out_buf *o, const char *s, size_t n)
{
    if (n == 0)
        return;
    if (o->overflow || o->len + n > o->cap) {
        o->overflow = 1;
        return;
    }
    memcpy(o->p + o->len, s, n);
    o->len += n;
}

static void put_str(out_buf *o, const char *s) { put(o, s, strlen(s)); }
static void put_slice(out_buf *o, gw_slice s) { put(o, s.p, s.n); }

static void put_header_n(out_buf *o, const char *name, size_t name_n, gw_slice value)
{
    put(o, name, name_n);
    put(o, ": ", 2);
    put_slice(o, value);
    put(o, "\r\n", 2);
}

/* Header names are literals: their lengths are known at compile time. */
#define PUT_LIT(o, lit) put((o), (lit), sizeof(lit) - 1)
#define PUT_HEADER(o, lit, value) put_header_n((o), (lit), sizeof(lit) - 1, (value))

/* Appends every value of the headers of kind KIND as NAME, comma-joined, then EXTRA. */
static void put_joined(out_buf *o, const char *name, size_t name_n, const gw_header *hdrs,
                       int n, const unsigned char *kinds, hdr_kind kind, const char *extra)
{
    put(o, name, name_n);
    put(o, ": ", 2);
    for (int i = 0; i < n; i++) {
        if (kinds[i] == kind && hdrs[i].value.n) {
            put_slice(o, hdrs[i].value);
            put(o, ", ", 2);
        }
    }
    put_str(o, extra);
    put(o, "\r\n", 2);
}

#define PUT_JOINED(o, lit, ...) put_joined((o), (lit), sizeof(lit) - 1, __VA_ARGS__)

int gw_build_upstream_request(const gw_header *hdrs, int n, const gw_fwd *f, char *out, size_t cap)
{
    out_buf o = { out, 0, cap, 0 };
    put_slice(&o, f->method);
    put(&o, " ", 1);
    put_slice(&o, f->target);
    PUT_LIT(&o, " HTTP/1.1\r\n");
    PUT_HEADER(&o, "Host", f->host);
    unsigned char kinds[GW_MAX_HEADERS];
    if (n > GW_MAX_HEADERS)
        return -1;
    int has_conn = classify_all(hdrs, n, kinds);
    int traced = f->trace && f->trace->origin != GW_TRACE_NONE;
    unsigned drop = HK_DROP_REQUEST | (traced ? HK(HK_TRACEPARENT) | HK(HK_TRACESTATE) : 0);
    for (int i = 0; i < n; i++) {
        if (dropped(hdrs, n, kinds, has_conn, drop, i))
            continue;
        put_slice(&o, hdrs[i].name);
        put(&o, ": ", 2);
        put_slice(&o, hdrs[i].value);
        put(&o, "\r\n", 2);
    }
    PUT_JOINED(&o, "X-Forwarded-For", hdrs, n, kinds, HK_X_FORWARDED_FOR,
               f->client_ip ? f->client_ip : "unknown");
    PUT_HEADER(&o, "X-Forwarded-Proto", gw_slice_of(f->proto ? f->proto : "http"));
    if (f->client_host.n)
        PUT_HEADER(&o, "X-Forwarded-Host", f->client_host);
    PUT_JOINED(&o, "Via", hdrs, n, kinds, HK_VIA, "1.1 gateway");
    PUT_HEADER(&o, "X-Request-Id", gw_slice_of(f->request_id));
    if (traced) {
        char tp[GW_TRACEPARENT_LEN + 1], ts[GW_TRACESTATE_MAX + 1];
        gw_trace_child(f->trace, tp, f->span_out);
        PUT_HEADER(&o, "traceparent", ((gw_slice){ tp, GW_TRACEPARENT_LEN }));
        size_t tsn = gw_trace_state(f->trace, hdrs, n, f->trace_mark, ts, sizeof ts);
        if (tsn)
            PUT_HEADER(&o, "tracestate", ((gw_slice){ ts, tsn }));
    }
    if (f->upgrade) {
        PUT_LIT(&o, "Connection: upgrade\r\n");
        PUT_HEADER(&o, "Upgrade", gw_slice_of(f->upgrade));
    }
    if (f->chunked) {
        PUT_LIT(&o, "Transfer-Encoding: chunked\r\n");
    } else if (f->content_length >= 0) {
        char cl[24];
        PUT_LIT(&o, "Content-Length: ");
        put(&o, cl, (size_t)(gw_put_u64(cl, (uint64_t)f->content_length) - cl));
        put(&o, "\r\n", 2);
    }
    put(&o, "\r\n", 2);
    return o.overflow ? -1 : (int)o.len;
}

int gw_build_response_headers(const gw_header *hdrs, int n, char *out, size_t cap)
{
    out_buf o = { out, 0, cap, 0 };
    unsigned char kinds[GW_MAX_HEADERS];
    if (n > GW_MAX_HEADERS)
        return -1;
    int has_conn = classify_all(hdrs, n, kinds);
    for (int i = 0; i < n; i++) {
        if (dropped(hdrs, n, kinds, has_conn, HK_DROP_RESPONSE, i))
            continue;
        gw_slice name = hdrs[i].name;
        put_slice(&o, name);
        put(&o, ": ", 2);
        put_slice(&o, hdrs[i].value);
        put(&o, "\r\n", 2);
    }
    return o.overflow ? -1 : (int)o.len;
}

char *gw_put_u64(char *out, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *out++ = tmp[--n];
    return out;
}

void gw_addr_text(int family, const uint8_t *addr, char *out, size_t n)
{
    if (family != AF_INET) {
        if (inet_ntop(family, addr, out, (socklen_t)n) == NULL && n > 0)
            out[0] = '\0';
        return;
    }
    if (n < 16) { /* "255.255.255.255" and its NUL */
        if (n > 0)
            out[0] = '\0';
        return;
    }
    char *p = out;
    for (int i = 0; i < 4; i++) {
        if (i)
            *p++ = '.';
        p = gw_put_u64(p, addr[i]);
    }
    *p = '\0';
}

size_t gw_chunk_size_line(char *out, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char tmp[16];
    size_t l = 0;
    do {
        tmp[l++] = hex[n & 15];
        n >>= 4;
    } while (n);
    for (size_t i = 0; i < l; i++)
        out[i] = tmp[l - 1 - i];
    out[l] = '\r';
    out[l + 1] = '\n';
    return l + 2;
}

int gw_upgrade_offers(const gw_header *hdrs, int n, gw_slice *out, int max)
{
    int conn = 0, k = 0;
    for (int i = 0; i < n && !conn; i++)
        conn = classify(hdrs[i].name) == HK_CONNECTION &&
               list_has_token(hdrs[i].value, GW_SLICE_LIT("upgrade"));
    for (int i = 0; conn && i < n; i++) {
        if (classify(hdrs[i].name) != HK_UPGRADE)
            continue;
        gw_slice l = hdrs[i].value;
        size_t j = 0;
        while (j < l.n && k < max) {
            while (j < l.n && (l.p[j] == ' ' || l.p[j] == '\t' || l.p[j] == ','))
                j++;
            size_t start = j;
            while (j < l.n && l.p[j] != ',')
                j++;
            size_t end = j;
            while (end > start && (l.p[end - 1] == ' ' || l.p[end - 1] == '\t'))
                end--;
            if (end > start)
                out[k++] = (gw_slice){ l.p + start, end - start };
        }
    }
    return k;
}
