/* otlp_json.c — see otlp_json.h. */
#include "http/otlp_json.h"

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

/* Appends: the caller reserved room (SPAN_MAX per span), so nothing here checks or fails.
 * Copies, not printf: a batch of 512 spans is encoded per POST. */
static void put(gw_otlp_buf *b, const char *p, size_t n)
{
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

#define LIT(b, lit) put((b), (lit), sizeof(lit) - 1)

static void put_str(gw_otlp_buf *b, const char *s)
{
    LIT(b, "\"");
    gw_json_escape(b->p, &b->len, b->cap, s, strlen(s));
    LIT(b, "\"");
}

/* A decimal number as a JSON string ("123"): int64 and time values in the OTLP mapping. */
static void put_u64_str(gw_otlp_buf *b, uint64_t v)
{
    LIT(b, "\"");
    b->len = (size_t)(gw_put_u64(b->p + b->len, v) - b->p);
    LIT(b, "\"");
}

/* An id (hex, already checked by the trace parser or made by the gateway): copied as is. */
static void put_id(gw_otlp_buf *b, const char *id)
{
    LIT(b, "\"");
    put(b, id, strlen(id));
    LIT(b, "\"");
}

/* One attribute: a string value, or (S NULL) an integer. FIRST: no comma before it. */
static void attr(gw_otlp_buf *b, int *first, const char *key, const char *s, uint64_t v)
{
    if (!*first)
        LIT(b, ",");
    *first = 0;
    LIT(b, "{\"key\":\"");
    put(b, key, strlen(key));
    if (s) {
        LIT(b, "\",\"value\":{\"stringValue\":");
        put_str(b, s);
    } else {
        LIT(b, "\",\"value\":{\"intValue\":");
        put_u64_str(b, v);
    }
    LIT(b, "}}");
}

static void encode_span(gw_otlp_buf *b, const gw_span *s, int64_t off)
{
    int server = s->kind == GW_SPAN_SERVER;
    LIT(b, "{\"traceId\":");
    put_id(b, s->trace_id);
    LIT(b, ",\"spanId\":");
    put_id(b, s->span_id);
    if (s->parent_id[0]) {
        LIT(b, ",\"parentSpanId\":");
        put_id(b, s->parent_id);
    }
    /* the name: "METHOD route" for the server span, "METHOD upstream" for a client one */
    const char *what = server ? s->route : s->upstream;
    LIT(b, ",\"name\":\"");
    gw_json_escape(b->p, &b->len, b->cap, s->method, strlen(s->method));
    if (what[0]) {
        LIT(b, " ");
        gw_json_escape(b->p, &b->len, b->cap, what, strlen(what));
    }
    LIT(b, "\",\"kind\":");
    put(b, server ? "2" : "3", 1);
    LIT(b, ",\"startTimeUnixNano\":");
    put_u64_str(b, (uint64_t)((int64_t)s->start_ns + off));
    LIT(b, ",\"endTimeUnixNano\":");
    put_u64_str(b, (uint64_t)((int64_t)s->end_ns + off));
    LIT(b, ",\"attributes\":[");
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
    LIT(b, "]");
    if (s->error) {
        LIT(b, ",\"status\":{\"code\":2,\"message\":");
        put_str(b, s->error_text[0] ? s->error_text : "error");
        LIT(b, "}");
    }
    LIT(b, "}");
}

int gw_otlp_encode(const gw_span *spans, size_t n, const char *service, int64_t mono_to_unix_ns,
                   gw_otlp_buf *out)
{
    out->len = 0;
    if (reserve(out, 512 + 6 * strlen(service)) < 0)
        return -1;
    LIT(out, "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\","
             "\"value\":{\"stringValue\":");
    put_str(out, service);
    LIT(out, "}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"gateway\"},\"spans\":[");
    for (size_t i = 0; i < n; i++) {
        if (reserve(out, SPAN_MAX) < 0)
            return -1;
        if (i)
            LIT(out, ",");
        encode_span(out, &spans[i], mono_to_unix_ns);
    }
    if (reserve(out, 16) < 0)
        return -1;
    LIT(out, "]}]}]}");
    out->p[out->len] = '\0';
    return 0;
}

void gw_otlp_buf_free(gw_otlp_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
