/* span_export.h — spans sent to an OpenTelemetry collector as OTLP/HTTP JSON ("tracing" in
 * gateway.json). Workers record finished spans into rings of their own (http/span.h: no lock,
 * no allocation, never a wait); one exporter thread with its own loop drains them every tick,
 * batches them (batch_size, or whatever came within flush_ms), encodes them
 * (http/otlp_json.h) and POSTs one batch at a time with the one-shot HTTP client
 * (http/oneshot.h), each POST bounded by timeout_ms.
 *
 * A slow, hung or absent collector costs the request path nothing: while a POST is out the
 * rings are not drained, and a full ring drops new spans (counted, reason "queue_full");
 * a failed POST drops its batch (reason "export_failed"). On shutdown (after the workers
 * stopped) what is queued is flushed once more within timeout_ms; what is left is dropped
 * (reason "shutdown"). */
#ifndef GW_SPAN_EXPORT_H
#define GW_SPAN_EXPORT_H

#include <stddef.h>

#include "gateway/config.h"
#include "http/span.h"

/* Starts the exporter for N_WORKERS workers when cfg->tracing.otlp_endpoint is set (else
 * does nothing), and applies tracing.sample_ratio. 0, or -1 when it cannot start. */
int gw_span_export_start(const gw_config *cfg, int n_workers);
/* Worker I's ring (NULL when export is off): gw_span_attach it on the worker's thread. */
gw_span_ring *gw_span_export_ring(int i);
/* The last flush (bounded by timeout_ms), then stops the thread and frees everything.
 * Call after the workers have stopped. Safe when it never started. */
void gw_span_export_stop(void);
/* The gateway_trace_* lines of /metrics into OUT (N bytes); their length. */
size_t gw_span_export_metrics(char *out, size_t n);

#endif
