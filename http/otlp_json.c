/* otlp_json.c — see otlp_json.h. */
#include "http/otlp_json.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/http1.h" /* gw_json_escape */

/* the most one span can take: every text field escaped six-fold, plus the fixed parts */
#define SPAN_MAX (6 * sizeof(gw_span) + 1024)

static int reserve(gw_otlp_buf *b, size_t n)
{
    if (b->len + n <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + n)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

/* Appends formatted text: the caller reserved room for it. */
static void put(gw_otlp_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(gw_otlp_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (k > 0)
        b->len += (size_t)k < b->cap - b->len ? (size_t)k : b->cap - b->len - 1;
}

static void put_str(gw_otlp_buf *b, const char *s)
{
    put(b, "\"");
    gw_json_escape(b->p, &b->len, b->cap, s, strlen(s));
    put(b, "\"");
}

/* One attribute: a string value, or (S NULL) an integer. FIRST: no comma before it. */
static void attr(gw_otlp_buf *b, int *first, const char *key, const char *s, int64_t v)
{
    put(b, "%s{\"key\":\"%s\",\"value\":", *first ? "" : ",", key);
    if (s) {
        put(b, "{\"stringValue\":");
        put_str(b, s);
        put(b, "}}");
    } else {
        put(b, "{\"intValue\":\"%" PRId64 "\"}}", v);
    }
    *first = 0;
}

static void encode_span(gw_otlp_buf *b, const gw_span *s, int64_t off)
{
    int server = s->kind == GW_SPAN_SERVER;
    put(b, "{\"traceId\":\"%s\",\"spanId\":\"%s\",", s->trace_id, s->span_id);
    if (s->parent_id[0])
        put(b, "\"parentSpanId\":\"%s\",", s->parent_id);
    /* the name: "METHOD route" for the server span, "METHOD upstream" for a client one */
    const char *what = server ? s->route : s->upstream;
    put(b, "\"name\":");
    char name[sizeof s->method + sizeof s->upstream + 2];
    snprintf(name, sizeof name, "%s%s%s", s->method, what[0] ? " " : "", what);
    put_str(b, name);
    put(b, ",\"kind\":%d,\"startTimeUnixNano\":\"%" PRIu64 "\",\"endTimeUnixNano\":\"%" PRIu64
           "\",\"attributes\":[",
        server ? 2 : 3, (uint64_t)((int64_t)s->start_ns + off),
        (uint64_t)((int64_t)s->end_ns + off));
    int first = 1;
    attr(b, &first, "http.request.method", s->method, 0);
    if (s->status)
        attr(b, &first, "http.response.status_code", NULL, s->status);
    if (s->route[0])
        attr(b, &first, "http.route", s->route, 0);
    if (server) {
        attr(b, &first, "client.address", s->peer, 0);
        attr(b, &first, "gateway.upstream", s->upstream[0] ? s->upstream : "gateway", 0);
    } else {
        attr(b, &first, "gateway.upstream", s->upstream, 0);
        attr(b, &first, "gateway.role", s->role, 0);
    }
    if (s->error && s->error_text[0])
        attr(b, &first, "error.type", s->error_text, 0);
    put(b, "]");
    if (s->error) {
        put(b, ",\"status\":{\"code\":2,\"message\":");
        put_str(b, s->error_text[0] ? s->error_text : "error");
        put(b, "}");
    }
    put(b, "}");
}

int gw_otlp_encode(const gw_span *spans, size_t n, const char *service, int64_t mono_to_unix_ns,
                   gw_otlp_buf *out)
{
    out->len = 0;
    if (reserve(out, 512 + 6 * strlen(service)) < 0)
        return -1;
    put(out, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\","
             "\"value\":{\"stringValue\":");
    put_str(out, service);
    put(out, "}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"gateway\"},\"spans\":[");
    for (size_t i = 0; i < n; i++) {
        if (reserve(out, SPAN_MAX) < 0)
            return -1;
        if (i)
            put(out, ",");
        encode_span(out, &spans[i], mono_to_unix_ns);
    }
    if (reserve(out, 16) < 0)
        return -1;
    put(out, "]}]}]}");
    return 0;
}

void gw_otlp_buf_free(gw_otlp_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
