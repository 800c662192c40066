/* otlp_json.h — spans (http/span.h) as one OTLP ExportTraceServiceRequest in JSON, the body
 * of a POST to a collector's /v1/traces (OTLP/HTTP, Content-Type application/json). Per the
 * OTLP JSON mapping: ids are lowercase hex strings, times and int values decimal strings,
 * enums numbers (kind 2 SERVER, 3 CLIENT; status code 2 ERROR, left unset otherwise). Pure:
 * no clock, no I/O. */
#ifndef GW_OTLP_JSON_H
#define GW_OTLP_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "http/span.h"

typedef struct gw_otlp_buf {
    char *p;      /* malloc'd, NUL ended after a successful encode */
    size_t len, cap;
} gw_otlp_buf;

/* Encodes SPANS[0..N) under one resource (service.name SERVICE) and one scope ("gateway")
 * into OUT (reused: len reset, grown as needed). MONO_TO_UNIX_NS is added to the spans'
 * monotonic times to make them Unix-epoch nanoseconds. Returns 0, or -1 out of memory. */
int gw_otlp_encode(const gw_span *spans, size_t n, const char *service, int64_t mono_to_unix_ns,
                   gw_otlp_buf *out);
void gw_otlp_buf_free(gw_otlp_buf *b);

#endif
