/* trace.h — W3C trace context (https://www.w3.org/TR/trace-context/, version 00): take a
 * valid incoming traceparent or start a trace, and give each upstream request a child span
 * of its own. Pure functions over fixed buffers: no allocation, no system call per request
 * (ids come from the per-thread PRNG of request_id.h, seeded from getrandom once). */
#ifndef GW_TRACE_H
#define GW_TRACE_H

#include <stddef.h>
#include <stdint.h>

#include "http/gw_slice.h"

struct gw_header; /* http/server.h, which embeds a gw_trace in each request */

#define GW_TRACEPARENT_LEN 55   /* "00-" 32 hex "-" 16 hex "-" 2 hex */
#define GW_TRACESTATE_MAX 512   /* what we pass on at least (W3C: 512), whole members only */
#define GW_TRACE_SAMPLED 0x01
#define GW_TRACE_MARK_SHADOW "gw=shadow" /* tracestate member put first on shadow copies */

enum gw_trace_origin {
    GW_TRACE_NONE = 0,      /* not set yet (the head never completed) */
    GW_TRACE_STARTED,       /* no valid traceparent came: a new trace starts here */
    GW_TRACE_CONTINUED,     /* the client's traceparent was valid: its tracestate passes on */
};

typedef struct gw_trace {
    uint8_t origin;         /* enum gw_trace_origin */
    uint8_t flags;          /* trace-flags sent on: the sampled bit only (others unknown) */
    char trace_id[33];      /* 32 lowercase hex + NUL */
    char span_id[17];       /* the gateway's own span for this request */
    char parent_id[17];     /* the client's parent-id ("" when the trace started here) */
} gw_trace;

/* Parses one traceparent value (surrounding spaces and tabs ignored). Version 00: exactly
 * 55 bytes; a later version (not ff): 55 bytes, or more when byte 55 is '-' (its extra
 * fields are ignored, the 00 fields read). Lowercase hex only; all-zero trace-id or
 * parent-id is invalid. Returns 0 and fills trace_id/parent_id (NUL-terminated) and *flags,
 * or -1. */
int gw_traceparent_parse(gw_slice v, char trace_id[33], char parent_id[17], uint8_t *flags);

/* The request's trace from its headers: the single valid traceparent continues (several
 * traceparent headers are invalid), anything else starts a new, sampled trace. A new span
 * id is made for the gateway either way. */
void gw_trace_begin(gw_trace *t, const struct gw_header *hdrs, int n);
/* As gw_trace_begin with no headers: a fresh trace, sampled with the ratio below. */
void gw_trace_start(gw_trace *t);
/* The share of new traces marked sampled (flags 01): 0.0 .. 1.0, default 1. A continued
 * trace keeps the client's flag whatever this is. Process-wide. */
void gw_trace_set_sample_ratio(double ratio);

/* "00-<trace-id>-<new span id>-<flags>" into out (>= GW_TRACEPARENT_LEN + 1 bytes, NUL
 * ended): the traceparent of one upstream request, a child of the gateway's span. When
 * span_out is not NULL the new span id is copied there (17 bytes). */
void gw_trace_child(const gw_trace *t, char *out, char *span_out);

/* The tracestate to send on for T: for a continued trace the members of every tracestate
 * header in hdrs joined with ",", in order (empty ones and surrounding spaces dropped);
 * for a started one none. MARK (may be NULL) goes first, and the members with its key are
 * dropped (W3C: a vendor's updated member moves to the front). Stops at the last whole
 * member that fits in cap - 1 (and GW_TRACESTATE_MAX). Returns the length written (NUL
 * ended), 0 when there is nothing to send. */
size_t gw_trace_state(const gw_trace *t, const struct gw_header *hdrs, int n, const char *mark,
                      char *out, size_t cap);

/* A request's trace with the tracestate to pass on, copied out of the request for the
 * exchanges that start later or outlive its head (composition legs, lookups). */
typedef struct gw_trace_ctx {
    gw_trace t;
    char state[GW_TRACESTATE_MAX + 1]; /* "" when none is sent */
} gw_trace_ctx;

void gw_trace_ctx_from(gw_trace_ctx *c, const gw_trace *t, const struct gw_header *hdrs, int n);
/* The trace header lines of one internal request (a child span: a new parent-id), as
 * "traceparent: ...\r\n" and, when there is a state, "tracestate: ...\r\n", NUL ended,
 * into out (>= GW_TRACE_LINES_MAX). C NULL or unset: "". Returns the length. SPAN_OUT (17
 * bytes, may be NULL) gets the new span id ("" when none was made). */
#define GW_TRACE_LINES_MAX (16 + GW_TRACEPARENT_LEN + 16 + GW_TRACESTATE_MAX)
size_t gw_trace_ctx_lines(const gw_trace_ctx *c, char *out, char *span_out);

#endif
