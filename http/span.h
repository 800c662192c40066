/* span.h — finished spans, recorded on the request path for an exporter to collect
 * (gateway/span_export.c sends them as OTLP/HTTP JSON). Recording never blocks and never
 * allocates: each worker thread writes into its own bounded single-producer ring, which the
 * exporter's thread drains; a full ring drops the span and counts it.
 *
 * A thread records only after gw_span_attach gave it a ring; without one (export off, the
 * admin loop, tests) gw_span_begin answers NULL at the cost of one thread-local load. Only
 * sampled traces are recorded (W3C trace-flags 01). */
#ifndef GW_SPAN_H
#define GW_SPAN_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

enum { GW_SPAN_SERVER = 2, GW_SPAN_CLIENT = 3 }; /* OTLP SpanKind values */

typedef struct gw_span {
    uint8_t kind;           /* GW_SPAN_SERVER or GW_SPAN_CLIENT */
    uint8_t error;          /* 1: the span failed (status ERROR) */
    uint16_t status;        /* HTTP status; 0: no answer */
    char trace_id[33];
    char span_id[17];
    char parent_id[17];     /* "" for a root span */
    char method[12];
    char route[64];         /* route or composition id ("" when none matched) */
    char upstream[64];      /* upstream name ("" when the gateway answered itself) */
    char peer[48];          /* SERVER: the client's address */
    char role[12];          /* CLIENT: "proxy", "fallback", "shadow", "fetch" */
    char error_text[48];    /* why it failed ("upstream timeout"); "" */
    uint64_t start_ns, end_ns; /* uv_hrtime() clock (monotonic) */
} gw_span;

/* One producer (a worker thread), one consumer (the exporter). */
typedef struct gw_span_ring {
    _Atomic uint64_t head; /* next slot the producer fills */
    char pad1[56];
    _Atomic uint64_t tail; /* next slot the consumer takes */
    char pad2[56];
    _Atomic uint64_t dropped; /* spans refused because the ring was full */
    uint32_t mask;
    gw_span slots[];
} gw_span_ring;

/* A ring of at least CAP spans (at least 16, rounded up to a power of two); NULL when out
 * of memory. */
gw_span_ring *gw_span_ring_new(uint32_t cap);
void gw_span_ring_free(gw_span_ring *r);
/* The consumer: copies up to MAX spans out, oldest first; returns how many. */
size_t gw_span_ring_take(gw_span_ring *r, gw_span *out, size_t max);

/* This thread records into R from now on (NULL: stops). */
void gw_span_attach(gw_span_ring *r);

/* Whether a span of a trace with FLAGS would be recorded now (before preparing one). */
int gw_span_enabled(uint8_t trace_flags);

/* A slot for a span of a trace with FLAGS: NULL when this thread has no ring, the trace is
 * not sampled, or the ring is full (counted as dropped). Fill it, then gw_span_commit. */
gw_span *gw_span_begin(uint8_t trace_flags);
void gw_span_commit(void);

/* Copies at most N - 1 bytes of S (length SN) into OUT, NUL ended: for the span's fields. */
void gw_span_copy(char *out, size_t n, const char *s, size_t sn);
#define GW_SPAN_SET(field, s) gw_span_copy((field), sizeof(field), (s), (s) ? strlen(s) : 0)

#endif
