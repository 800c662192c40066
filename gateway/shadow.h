/* shadow.h — a shadow copy of a request sent to a candidate upstream while the primary
 * answers the client. The two answers are compared (status, then the JSON bodies with the
 * route's ignore_fields removed; byte for byte when a body is not JSON), the result is
 * counted per route, and a mismatch is logged with the request id and a short diff.
 *
 * The shadow never touches the client: it is a background one-shot exchange (http/oneshot.h)
 * on the worker's set, with the route's own shadow.timeout_ms for the whole exchange, and is
 * skipped (gateway_shadow_skipped_total{route,reason}) when the worker's background caps are
 * full or the worker drains. Its state outlives the client request if it is slower. It is
 * freed when both sides have reported (refcount of two: primary side, shadow side). */
#ifndef GW_SHADOW_H
#define GW_SHADOW_H

#include <stddef.h>

#include "routes/route_table.h"
#include "http/upstream.h"

typedef struct gw_shadow gw_shadow;
typedef struct gw_metrics gw_metrics;
typedef struct gw_access_log gw_access_log;

/* Starts the shadow exchange on UP with the request HEAD (copied; the body follows it in the
 * same bytes) for the client's REQ (its id, method, trace); SPAN_ID is the copy's own span in
 * REQ's trace ("": none), exported as a CLIENT span (role "shadow") when spans are. TABLE is
 * ref'd for the route's ignore_fields. Returns NULL when it did not start (skipped and
 * counted, or no memory): the primary goes on alone. Mismatches are logged through LOG (see
 * gw_log_event). */
gw_shadow *gw_shadow_start(gw_upstream *up, gw_metrics *metrics, gw_access_log *log, rt_table *table,
                           const rt_route *route, const char *head, size_t head_len,
                           const gw_request *req, const char *span_id);
/* The primary's answer, as it reaches the client. */
void gw_shadow_primary_head(gw_shadow *s, int status);
void gw_shadow_primary_body(gw_shadow *s, const char *p, size_t n);
/* The primary is finished: OK = its whole answer was seen. Drops the primary's reference. */
void gw_shadow_primary_done(gw_shadow *s, int ok);

/* Compares two bodies as JSON after removing IGNORE (dotted paths). Returns 1 when equal, and
 * otherwise writes a one-line difference into diff. Exposed for unit tests. */
int gw_shadow_bodies_equal(const char *a, size_t an, const char *b, size_t bn,
                           const char *const *ignore, int n_ignore, char *diff, size_t difflen);

#endif
