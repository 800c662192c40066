/* fetch.h — one internal GET on this gateway's own routes: the path is resolved through the
 * live route table (so it follows the cutover), the route picks the upstream, the upstream's
 * circuit breaker may refuse at once, and the whole answer (up to 1 MiB) comes back in one
 * callback. Used by composition legs and by cached lookups. */
#ifndef CMP_FETCH_H
#define CMP_FETCH_H

#include <stddef.h>
#include <stdint.h>

#include "http/trace.h"
#include "routes/route_table.h"

typedef struct cmp_worker cmp_worker;
typedef struct cmp_fetch cmp_fetch;

/* Header lines of an answer, "Name: value\r\n" each (see http/oneshot.h: only the kept
 * ones, composers/cache_policy.h cmp_kept_headers). TRUNCATED: some did not fit and were
 * dropped. */
typedef struct cmp_headers {
    const char *p;
    size_t n;
    int truncated;
} cmp_headers;

/* STATUS: the upstream's status (BODY, LEN its answer, HDRS its kept headers: never NULL,
 * valid during the call), or 0 with WHY ("timeout", "connect
 * failed", "circuit open", "no route", ...) and TIMED_OUT set for timeouts. UPSTREAM: the
 * upstream's name, or NULL if none was chosen. Never called from inside cmp_fetch_start, and
 * never after cmp_fetch_cancel. */
typedef void (*cmp_fetch_cb)(int status, const char *body, size_t len, const cmp_headers *hdrs,
                             const char *why, int timed_out, const char *upstream, void *arg);

/* PATH may carry a query. TRACE (may be NULL: no trace headers) is the client request's
 * trace: the exchange is sent as a child span of it. TIMEOUT_MS bounds the whole exchange.
 * Returns NULL only when out of memory. */
cmp_fetch *cmp_fetch_start(cmp_worker *w, rt_table *table, const char *path,
                           const char *request_id, const gw_trace_ctx *trace,
                           const char *client_ip, uint32_t timeout_ms, cmp_fetch_cb cb,
                           void *arg);
/* As cmp_fetch_start, but on upstream UI (an index of the worker's upstreams: the one the
 * route picked for the client's request) instead of the route's own pick; UI < 0: the
 * route picks, as cmp_fetch_start. */
cmp_fetch *cmp_fetch_start_on(cmp_worker *w, rt_table *table, const char *path, int ui,
                              const char *request_id, const gw_trace_ctx *trace,
                              const char *client_ip, uint32_t timeout_ms, cmp_fetch_cb cb,
                              void *arg);
void cmp_fetch_cancel(cmp_fetch *f);

#endif
