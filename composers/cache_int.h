/* cache_int.h — what cache.c, cache_lru.c and cache_redis.c share. Not part of the API. */
#ifndef CMP_CACHE_INT_H
#define CMP_CACHE_INT_H

#include <stdint.h>
#include <uv.h>

#include "composers/cache.h"
#include "composers/redis_client.h"
#include "http/queue.h"

typedef struct cmp__entry cmp__entry;

/* ---- LRU (cache_lru.c) ---------------------------------------------------------------- */
typedef struct cmp__lru {
    cmp__entry **buckets; /* chained hash, a power of two >= capacity */
    uint32_t mask;
    uint32_t n, cap;
    gw_queue list;        /* head: most recently used */
    uint64_t k0, k1;      /* SipHash key, random per cache: chains can't be flooded */
} cmp__lru;

int cmp__lru_init(cmp__lru *l, uint32_t cap);
void cmp__lru_free(cmp__lru *l);
/* The live entry for KEY, pinned (release with cmp__entry_unref), or NULL. An entry past
 * ttl+stale is removed. */
cmp__entry *cmp__lru_get(cmp__lru *l, const char *key, size_t klen, uint64_t now);
int cmp__lru_set(cmp__lru *l, const char *key, size_t klen, const char *val, size_t vlen,
                 uint64_t now, uint64_t keep_ms);
void cmp__lru_del(cmp__lru *l, const char *key, size_t klen);
void cmp__entry_unref(cmp__entry *e);
const char *cmp__entry_value(const cmp__entry *e, size_t *len, uint64_t *stored_ms);

/* ---- requests (cache.c) --------------------------------------------------------------- */
enum { CMP__REQ_GET, CMP__REQ_SET, CMP__REQ_DEL };

/* A request is freed when both flags are clear, by whichever side clears the last one. */
#define CMP__REQ_OWED 0x1     /* outcome not delivered yet: the req is on c->deferred or
                                 c->inflight (node linked) */
#define CMP__REQ_HIREDIS 0x2  /* the Redis client holds it (cmd): its reply function will still
                                 run (always does: with NULL on teardown); a split DEL: its
                                 parts hold it */
#define CMP__REQ_DEFERRED 0x4 /* on c->deferred (else on c->inflight) */

typedef struct cmp__req {
    gw_queue node;
    cmp_redis_cmd cmd;   /* while HIREDIS */
    struct cmp__req *parent; /* a part of a split DEL: the DEL it confirms */
    uint16_t parts_left, parts_held; /* a split DEL: parts to confirm, parts holding it */
    cmp_cache *c;
    cmp_cache_get_cb cb; /* gets, and confirmed dels */
    void *arg;
    cmp__entry *entry;   /* LRU hit waiting for delivery: pinned */
    uint64_t deadline;   /* loop time (ms) by which Redis must have answered */
    cmp_cache_status st; /* deferred outcome */
    uint8_t kind, flags;
} cmp__req;

typedef enum {
    CMP__R_OFF = 0,    /* no Redis configured (LRU mode) */
    CMP__R_WAIT,       /* the client (c->rc) is not usable (yet): gets fail open */
    CMP__R_UP,         /* the client said it is up (cluster: a key's node may still be
                          down: the client refuses that key's commands) */
    CMP__R_CLOSED,     /* cmp_cache_close ran; rc NULL */
} cmp__rstate;

#define CMP__F_CLOSING 0x1

struct cmp_cache {
    uv_loop_t *loop;
    unsigned flags;
    uint32_t timeout_ms;
    char *prefix;
    size_t prefix_len;
    int handles_open; /* close callbacks still to come */

    uv_idle_t idle;   /* delivers c->deferred on the next loop iteration */
    gw_queue deferred;
    uint32_t n_deferred;
    gw_queue free_reqs;
    uint32_t n_free, n_live;

    cmp__lru lru;     /* LRU mode only */

    /* Redis mode (rc != NULL until closed) */
    char *where;          /* for logs: the address, or the sentinel/cluster description */
    cmp__rstate rstate;
    cmp_redis *rc;
    int cluster;          /* a multi-key DEL is split per key */
    uv_timer_t cmd_timer; /* the oldest c->inflight deadline */
    gw_queue inflight;    /* commands sent, oldest first (deadline order) */
    int ever_up, logged_down;
    int logged_refused;   /* per command (1 << CMP__REQ_*): refused this streak, logged */
    char *scratch;       /* SET payload buffer, reused */
    size_t scratch_cap;

    cmp_cache_stats st;
};

cmp__req *cmp__req_new(cmp_cache *c, int kind);
void cmp__req_release(cmp__req *r, unsigned flag);
/* Delivers R's outcome (counts it, unlinks it, calls the owner for a get) and clears OWED. */
void cmp__finish(cmp__req *r, cmp_cache_status st, const char *v, size_t len, uint64_t age);
void cmp__defer(cmp_cache *c, cmp__req *r, cmp_cache_status st);
void cmp__maybe_free(cmp_cache *c);
void cmp__log(const cmp_cache *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cmp__on_handle_closed(uv_handle_t *h);

/* ---- Redis (cache_redis.c) ------------------------------------------------------------ */
/* Opens the client for CONF; 0, or -1 when out of memory. */
int cmp__redis_start(cmp_cache *c, const cmp_redis_conf *conf);
/* 0: sent (R is on c->inflight, HIREDIS set); <0: not connected, nothing happened. */
int cmp__redis_send(cmp_cache *c, cmp__req *r, const char *key, const char *val, size_t vlen,
                    uint64_t keep_ms);
/* As cmp__redis_send, for one DEL of KEYS[0..N). */
int cmp__redis_send_del(cmp_cache *c, cmp__req *r, const char *const *keys, int n);
/* Closes the client (pending commands fire now). */
void cmp__redis_close(cmp_cache *c);

#endif
