/* spec.h — compositions as declared in configuration (conf/composers.json): which endpoint
 * the gateway answers itself, and the legs it assembles the answer from.
 *
 *   { "compositions": [ {
 *       "id": "order-details",
 *       "path": "/api/orders/{id}/details",        // GET only; {param} segments
 *       "deadline_ms": 1000,                       // overall: the answer leaves by then
 *       "legs": [
 *         { "name": "order", "url": "/api/orders/{id}", "required": true, "timeout_ms": 500 },
 *         { "name": "user", "url": "/api/users/{order.user_id}", "timeout_ms": 300 },
 *         { "name": "shipment", "url": "/api/orders/{id}/shipment", "timeout_ms": 300,
 *           "after": [] } ] } ] }
 *
 * A leg URL is a path on this gateway: it is resolved through the live route table, so a
 * leg follows the cutover. {param} is a parameter of the composition's path; {leg.a.b} is a
 * field of another leg's JSON answer, which makes this leg wait for that one ("after" adds
 * explicit dependencies). Legs that wait on nothing start at once, in parallel. */
#ifndef CMP_SPEC_H
#define CMP_SPEC_H

#include <stdint.h>

#include "http/gw_slice.h"

#define CMP_MAX_LEGS 16
#define CMP_MAX_PARAMS 8
#define CMP_MAX_COMPOSITIONS 64

typedef struct cmp_leg_spec {
    char *name;
    char *url;             /* template */
    int required;
    uint32_t timeout_ms;   /* default 1000, never more than the deadline */
    unsigned deps;         /* bit i: waits for leg i */
} cmp_leg_spec;

typedef struct cmp_composition {
    char *id;
    char *path;            /* pattern: literal and {param} segments */
    uint32_t deadline_ms;  /* default 2000 */
    uint32_t max_in_flight; /* answers being composed at once in the process; 0 = unlimited
                               (above it the gateway answers 503: gateway/inflight_limit.h) */
    cmp_leg_spec legs[CMP_MAX_LEGS];
    int n_legs;
} cmp_composition;

typedef struct cmp_spec {
    cmp_composition comps[CMP_MAX_COMPOSITIONS];
    int n;
} cmp_spec;

/* Reads and validates FILE. On error returns NULL with "FILE: json.path: reason". */
cmp_spec *cmp_spec_load(const char *file, char *err, size_t errlen);
cmp_spec *cmp_spec_parse(const char *json, size_t len, const char *source, char *err, size_t errlen);
void cmp_spec_free(cmp_spec *s);

typedef struct cmp_params {
    int n;
    gw_slice names[CMP_MAX_PARAMS];
    gw_slice values[CMP_MAX_PARAMS];
} cmp_params;

/* The composition answering GET PATH, or NULL; fills params (slices into path / spec). */
const cmp_composition *cmp_spec_match(const cmp_spec *s, gw_slice method, gw_slice path,
                                      cmp_params *params);

#endif
