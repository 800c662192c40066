/* mockd.h — the mock upstream used by the tests, the demo and the benchmarks. One process,
 * one libuv loop, served by the gateway's own HTTP server (gateway/server.h). It serves the
 * demo world (users, orders, shipments in the legacy monolith shape and in the per-service
 * shape), /echo, /bytes/{n}, /upload, /__stats and POST /__faults?error_rate=F, and injects latency, errors, hangs and
 * resets from its command line and from X-Mock-* request headers. Prefix: mk_. */
#ifndef MOCKD_H
#define MOCKD_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "http/server.h"

#define MK_NAME_MAX 64
#define MK_ID_MAX 512 /* longest id accepted (after percent-decoding) */

/* ---- data.c: deterministic demo data ------------------------------------------------- */

#define MK_FNV_INIT 0xcbf29ce484222325ULL

/* FNV-1a 64 over p[0..n), continuing from h (start with MK_FNV_INIT). */
uint64_t mk_fnv1a64(uint64_t h, const void *p, size_t n);
/* A UUID-looking string (36 chars + NUL) derived from salt and id. */
void mk_uuid(const char *salt, const char *id, size_t n, char out[37]);
/* A JSON string from arbitrary bytes: UTF-8 kept, anything invalid read as Latin-1. */
json_t *mk_jstring(const char *p, size_t n);
/* The demo documents; the same id always gives the same document. New references. */
json_t *mk_user_json(const char *id, size_t n);
json_t *mk_order_json(const char *id, size_t n);
json_t *mk_shipment_json(const char *order_id, size_t n);

/* ---- doc_cache.c: rendered demo documents, memoised --------------------------------- */

enum { MK_DOC_USER = 1, MK_DOC_ORDER, MK_DOC_SHIPMENT };
/* The compact JSON of document kind for id; valid until the next call. -1: out of memory. */
int mk_doc_get(int kind, const char *id, size_t n, const char **body, size_t *body_n);
void mk_doc_cache_free(void);

/* ---- stats.c: what reached this instance (GET /__stats) ------------------------------- */

typedef struct mk_stats {
    uint64_t requests;   /* requests received, /__stats* excluded */
    uint64_t connections;/* distinct client connections seen since start or reset */
    uint64_t body_bytes; /* request body bytes received */
    json_t *by_path;     /* {"/users/42": n, ...}, path without query */
    uint64_t n_paths;    /* keys in by_path; past MK_STATS_MAX_PATHS counted as "(other)" */
    uint64_t *conns;     /* open-addressing set of connection keys seen (0 = empty) */
    size_t conns_cap, conns_n;
    int64_t ws_open;     /* WebSocket connections open now (ws.c; not reset) */
    uint64_t ws_bytes_out; /* bytes ws.c queued to its clients (flood included) */
} mk_stats;

#define MK_STATS_MAX_PATHS 65536
#define MK_STATS_MAX_CONNS (1u << 20) /* past this the set starts over */

int mk_stats_init(mk_stats *st);
void mk_stats_free(mk_stats *st);
void mk_stats_reset(mk_stats *st);
/* Counts one request: its connection (a non-zero key) and its path without the query. */
void mk_stats_request(mk_stats *st, uint64_t conn, const char *path, size_t n);
/* {"name","requests","connections","by_path","body_bytes"}; new reference or NULL. */
json_t *mk_stats_json(const mk_stats *st, const char *name);

/* ---- handlers.c: routing and responses ----------------------------------------------- */

typedef struct mk_conf {
    char name[MK_NAME_MAX];
    uint32_t latency_ms; /* added to every request without X-Mock-Latency-Ms */
    double error_rate;   /* probability of a 500 */
    double hang_rate;    /* probability of never answering */
    double reset_rate;   /* probability of a connection reset instead of an answer */
    uint64_t seed;
} mk_conf;

/* One per process, reached from a request through gw_server_options(server)->data. */
typedef struct mk_ctx {
    mk_conf conf;
    uint64_t rng;     /* splitmix64 state, seeded from conf.seed */
    mk_stats stats;
    uv_loop_t *loop;
    gw_server *server;
    int stopping;
    json_t *scripts;      /* PUT /__script: {path: {"status", "headers": [...], "body"}} */
    int json_head_n;      /* 0 until json_head is formatted */
    char json_head[160];  /* Content-Type: application/json + X-Mock-Name, CRLF-terminated */
} mk_ctx;

extern const gw_handler mk_handler;
/* ws.c: REQ under /ws is the WebSocket echo's: 1 when it took it. */
int mk_ws_request(gw_request *req);
/* Once, before the loop runs. */
void mk_handlers_init(void);

#endif
