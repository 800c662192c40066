/* http1.c — header rewriting and chunk framing for the proxy. */
#include "http1.h"

#include <stdio.h>
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

int gw_is_hop_by_hop(gw_slice name, const gw_header *hdrs, int n)
{
    if (gw_slice_ieq(name, "connection") || gw_slice_ieq(name, "keep-alive") ||
        gw_slice_ieq(name, "te") || gw_slice_ieq(name, "trailer") ||
        gw_slice_ieq(name, "transfer-encoding") || gw_slice_ieq(name, "upgrade") ||
        (name.n >= 6 && strncasecmp(name.p, "proxy-", 6) == 0))
        return 1;
    for (int i = 0; i < n; i++)
        if (gw_slice_ieq(hdrs[i].name, "connection") && list_has_token(hdrs[i].value, name))
            return 1;
    return 0;
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

static void put_header(out_buf *o, const char *name, gw_slice value)
{
    put_str(o, name);
    put(o, ": ", 2);
    put_slice(o, value);
    put(o, "\r\n", 2);
}

/* Appends every value of header NAME, comma-joined, then EXTRA. */
static void put_joined(out_buf *o, const char *name, const gw_header *hdrs, int n, const char *extra)
{
    put_str(o, name);
    put(o, ": ", 2);
    for (int i = 0; i < n; i++) {
        if (gw_slice_ieq(hdrs[i].name, name) && hdrs[i].value.n) {
            put_slice(o, hdrs[i].value);
            put(o, ", ", 2);
        }
    }
    put_str(o, extra);
    put(o, "\r\n", 2);
}

int gw_build_upstream_request(const gw_header *hdrs, int n, const gw_fwd *f, char *out, size_t cap)
{
    out_buf o = { out, 0, cap, 0 };
    put_slice(&o, f->method);
    put(&o, " ", 1);
    put_slice(&o, f->target);
    put_str(&o, " HTTP/1.1\r\n");
    put_header(&o, "Host", f->host);
    for (int i = 0; i < n; i++) {
        gw_slice name = hdrs[i].name;
        if (gw_is_hop_by_hop(name, hdrs, n) || gw_slice_ieq(name, "host") ||
            gw_slice_ieq(name, "content-length") || gw_slice_ieq(name, "expect") ||
            gw_slice_ieq(name, "x-forwarded-for") || gw_slice_ieq(name, "x-forwarded-proto") ||
            gw_slice_ieq(name, "x-forwarded-host") || gw_slice_ieq(name, "x-request-id") ||
            gw_slice_ieq(name, "via"))
            continue;
        put_slice(&o, name);
        put(&o, ": ", 2);
        put_slice(&o, hdrs[i].value);
        put(&o, "\r\n", 2);
    }
    put_joined(&o, "X-Forwarded-For", hdrs, n, f->client_ip ? f->client_ip : "unknown");
    put_header(&o, "X-Forwarded-Proto", gw_slice_of(f->proto ? f->proto : "http"));
    if (f->client_host.n)
        put_header(&o, "X-Forwarded-Host", f->client_host);
    put_joined(&o, "Via", hdrs, n, "1.1 gateway");
    put_header(&o, "X-Request-Id", gw_slice_of(f->request_id));
    if (f->chunked) {
        put_str(&o, "Transfer-Encoding: chunked\r\n");
    } else if (f->content_length >= 0) {
        char cl[48];
        int l = snprintf(cl, sizeof cl, "Content-Length: %lld\r\n", (long long)f->content_length);
        put(&o, cl, (size_t)l);
    }
    put(&o, "\r\n", 2);
    return o.overflow ? -1 : (int)o.len;
}

int gw_build_response_headers(const gw_header *hdrs, int n, char *out, size_t cap)
{
    out_buf o = { out, 0, cap, 0 };
    for (int i = 0; i < n; i++) {
        gw_slice name = hdrs[i].name;
        if (gw_is_hop_by_hop(name, hdrs, n) || gw_slice_ieq(name, "content-length") ||
            gw_slice_ieq(name, "date") || gw_slice_ieq(name, "x-request-id") ||
            gw_slice_ieq(name, "x-gateway-upstream"))
            continue;
        put_slice(&o, name);
        put(&o, ": ", 2);
        put_slice(&o, hdrs[i].value);
        put(&o, "\r\n", 2);
    }
    return o.overflow ? -1 : (int)o.len;
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
