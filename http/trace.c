/* trace.c — see trace.h. */
#include "http/trace.h"

#include <stdatomic.h>
#include <string.h>

#include "http/request_id.h" /* gw_random64 */
#include "http/server.h"

static const char hex[] = "0123456789abcdef";

/* Lowercase hex digit value, or -1 (uppercase is refused: W3C HEXDIGLC). */
static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* p[0..n) is lowercase hex and, when nonzero is set, not all '0'. */
static int hex_field(const char *p, size_t n, int nonzero)
{
    int any = 0;
    for (size_t i = 0; i < n; i++) {
        if (hexval((unsigned char)p[i]) < 0)
            return 0;
        any |= p[i] != '0';
    }
    return !nonzero || any;
}

int gw_traceparent_parse(gw_slice v, char trace_id[33], char parent_id[17], uint8_t *flags)
{
    const char *p = v.p;
    size_t n = v.n;
    while (n && (*p == ' ' || *p == '\t'))
        p++, n--;
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    if (!p || n < GW_TRACEPARENT_LEN)
        return -1;
    if (!hex_field(p, 2, 0) || (p[0] == 'f' && p[1] == 'f'))
        return -1;
    int version = hexval((unsigned char)p[0]) * 16 + hexval((unsigned char)p[1]);
    /* 00 is exactly 55 bytes; a later version may append fields after a '-' */
    if (version == 0 ? n != GW_TRACEPARENT_LEN : n > GW_TRACEPARENT_LEN && p[55] != '-')
        return -1;
    if (p[2] != '-' || p[35] != '-' || p[52] != '-')
        return -1;
    if (!hex_field(p + 3, 32, 1) || !hex_field(p + 36, 16, 1) || !hex_field(p + 53, 2, 0))
        return -1;
    memcpy(trace_id, p + 3, 32);
    trace_id[32] = '\0';
    memcpy(parent_id, p + 36, 16);
    parent_id[16] = '\0';
    *flags = (uint8_t)(hexval((unsigned char)p[53]) * 16 + hexval((unsigned char)p[54]));
    return 0;
}

/* 16 hex digits of a nonzero random value into out (NUL ended). */
static void random_hex16(char *out)
{
    uint64_t r;
    do
        r = gw_random64();
    while (r == 0);
    for (int i = 15; i >= 0; i--, r >>= 4)
        out[i] = hex[r & 15];
    out[16] = '\0';
}

/* New traces are sampled when a random 64-bit value is below this (all of them: the
 * default). Set at start-up, read with relaxed loads: a reload may change it any time. */
static _Atomic uint64_t sample_below = UINT64_MAX;

void gw_trace_set_sample_ratio(double ratio)
{
    uint64_t v = ratio >= 1.0 ? UINT64_MAX : ratio <= 0.0 ? 0 : (uint64_t)(ratio * 18446744073709551616.0);
    atomic_store_explicit(&sample_below, v, memory_order_relaxed);
}

void gw_trace_start(gw_trace *t)
{
    uint64_t below = atomic_load_explicit(&sample_below, memory_order_relaxed);
    t->origin = GW_TRACE_STARTED;
    t->flags = below == UINT64_MAX || gw_random64() < below ? GW_TRACE_SAMPLED : 0;
    random_hex16(t->trace_id);
    random_hex16(t->trace_id + 16);
    random_hex16(t->span_id);
    t->parent_id[0] = '\0';
}

void gw_trace_begin(gw_trace *t, const gw_header *hdrs, int n)
{
    int found = -1;
    for (int i = 0; i < n; i++) {
        if (hdrs[i].name.n == 11 && strncasecmp(hdrs[i].name.p, "traceparent", 11) == 0) {
            if (found >= 0) { /* two traceparents: which one is the caller? neither */
                found = -2;
                break;
            }
            found = i;
        }
    }
    uint8_t flags;
    if (found >= 0 && gw_traceparent_parse(hdrs[found].value, t->trace_id, t->parent_id, &flags) == 0) {
        t->origin = GW_TRACE_CONTINUED;
        t->flags = flags & GW_TRACE_SAMPLED; /* the only flag version 00 defines */
        random_hex16(t->span_id);
        return;
    }
    gw_trace_start(t);
}

void gw_trace_child(const gw_trace *t, char *out, char *span_out)
{
    memcpy(out, "00-", 3);
    memcpy(out + 3, t->trace_id, 32);
    out[35] = '-';
    random_hex16(out + 36);
    out[52] = '-';
    out[53] = hex[t->flags >> 4];
    out[54] = hex[t->flags & 15];
    out[55] = '\0';
    if (span_out)
        memcpy(span_out, out + 36, 17), span_out[16] = '\0';
}

/* Whether list member m (trimmed) has the key of mark ("key=value"). */
static int same_key(const char *m, size_t mn, const char *mark)
{
    const char *eq = strchr(mark, '=');
    size_t kn = eq ? (size_t)(eq - mark) : strlen(mark);
    return mn > kn && m[kn] == '=' && memcmp(m, mark, kn) == 0;
}

size_t gw_trace_state(const gw_trace *t, const gw_header *hdrs, int n, const char *mark,
                      char *out, size_t cap)
{
    if (cap == 0)
        return 0;
    size_t limit = cap - 1 < GW_TRACESTATE_MAX ? cap - 1 : GW_TRACESTATE_MAX;
    size_t len = 0;
    if (mark) {
        size_t mn = strlen(mark);
        if (mn <= limit) {
            memcpy(out, mark, mn);
            len = mn;
        }
    }
    for (int i = 0; t->origin == GW_TRACE_CONTINUED && i < n; i++) {
        if (hdrs[i].name.n != 10 || strncasecmp(hdrs[i].name.p, "tracestate", 10) != 0)
            continue;
        const char *p = hdrs[i].value.p, *end = p + hdrs[i].value.n;
        while (p < end) {
            const char *c = memchr(p, ',', (size_t)(end - p));
            const char *me = c ? c : end;
            const char *ms = p;
            while (ms < me && (*ms == ' ' || *ms == '\t'))
                ms++;
            const char *mt = me;
            while (mt > ms && (mt[-1] == ' ' || mt[-1] == '\t'))
                mt--;
            size_t mn = (size_t)(mt - ms);
            p = c ? c + 1 : end;
            if (mn == 0 || (mark && same_key(ms, mn, mark)))
                continue;
            if (len + (len ? 1 : 0) + mn > limit)
                goto done; /* whole members only */
            if (len)
                out[len++] = ',';
            memcpy(out + len, ms, mn);
            len += mn;
        }
    }
done:
    out[len] = '\0';
    return len;
}

void gw_trace_ctx_from(gw_trace_ctx *c, const gw_trace *t, const gw_header *hdrs, int n)
{
    c->t = *t;
    gw_trace_state(t, hdrs, n, NULL, c->state, sizeof c->state);
}

size_t gw_trace_ctx_lines(const gw_trace_ctx *c, char *out, char *span_out)
{
    size_t len = 0;
    if (span_out)
        span_out[0] = '\0';
    if (c && c->t.origin != GW_TRACE_NONE) {
        memcpy(out, "traceparent: ", 13);
        gw_trace_child(&c->t, out + 13, span_out);
        memcpy(out + 13 + GW_TRACEPARENT_LEN, "\r\n", 2);
        len = 15 + GW_TRACEPARENT_LEN;
        size_t sn = strlen(c->state);
        if (sn) {
            memcpy(out + len, "tracestate: ", 12);
            memcpy(out + len + 12, c->state, sn);
            memcpy(out + len + 12 + sn, "\r\n", 2);
            len += 14 + sn;
        }
    }
    out[len] = '\0';
    return len;
}
