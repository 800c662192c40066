/* cache.h — the user cache in front of the user leg: an asynchronous get/set/del on the
 * worker's libuv loop, backed either by Redis (hiredis async, shared by every gateway
 * instance) or, when no Redis is configured, by an in-process LRU.
 *
 * One cmp_cache per worker loop; not thread-safe. Fail-open: with Redis down or slow, a get
 * answers CMP_CACHE_ERROR within timeout_ms (at once when disconnected) and sets/dels are
 * dropped, while the connection is re-established in the background (backoff 100 ms -> 5 s).
 *
 * Callback contract for gets: the callback runs exactly once, never from inside
 * cmp_cache_get (LRU answers are deferred to the next loop iteration with a uv_idle), and at
 * the latest timeout_ms (+ timer granularity) after the call. The only exception: a get made
 * while the cache is closing (from a callback fired by cmp_cache_close) answers
 * CMP_CACHE_ERROR synchronously. The callback may call any cmp_cache_* function, including
 * cmp_cache_close.
 */
#ifndef CMP_CACHE_H
#define CMP_CACHE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define CMP_CACHE_DEFAULT_TIMEOUT_MS 20
#define CMP_CACHE_DEFAULT_LRU_ENTRIES 10000
#define CMP_CACHE_MAX_VALUE (64 * 1024)  /* larger values are not cached (see cmp_cache_set) */
#define CMP_CACHE_CONNECT_TIMEOUT_MS 1000 /* name lookup + TCP connect + PING answered */
#define CMP_CACHE_HEADER_LEN 8 /* Redis value = stored-at (ms since the epoch, big endian) + value */

typedef struct cmp_cache cmp_cache;

typedef struct cmp_cache_conf {
    const char *redis;     /* "host:port" ("[v6]:port"), or NULL/"": in-process LRU only */
    const struct cmp_redis_conf *topology; /* instead of redis: one server, Sentinel or
                              Cluster (composers/redis_client.h); NULL or kind NONE: unused */
    uint32_t timeout_ms;   /* a Redis command unanswered this long is an error (0: 20) */
    uint32_t lru_entries;  /* LRU capacity (0: 10000); LRU mode only */
    const char *prefix;    /* Redis key prefix, e.g. "gw:user:" (NULL: none) */
} cmp_cache_conf;

typedef enum { CMP_CACHE_HIT, CMP_CACHE_MISS, CMP_CACHE_ERROR } cmp_cache_status;

/* VALUE/LEN: the stored bytes on a hit (NULL/0 otherwise), valid only during the call.
 * AGE_MS: how long ago the value was stored (0 unless a hit); the caller decides whether
 * that is fresh (age < ttl) or only good as a stale fallback. With Redis the age comes from
 * the wall clocks of the writing and the reading instance. */
typedef void (*cmp_cache_get_cb)(cmp_cache_status st, const char *value, size_t len,
                                 uint64_t age_ms, void *arg);

typedef struct cmp_cache_stats {
    uint64_t hits, misses, errors; /* gets by outcome; errors also counts sets/dels that were
                                      dropped (disconnected), failed or timed out */
    uint64_t sets, dels;           /* sets/dels stored (LRU) or sent (Redis) */
    uint64_t reconnects;           /* Redis connections re-established after a loss/failure */
    int connected;                 /* Redis: 1 when usable; LRU mode: always 1 */
} cmp_cache_stats;

/* NULL when CONF is invalid (see cmp_cache_conf_error) or out of memory. With Redis, the
 * first connection attempt starts at once; gets fail open until it is up. The strings in
 * CONF are copied. */
cmp_cache *cmp_cache_new(uv_loop_t *loop, const cmp_cache_conf *conf);
/* NULL when CONF is usable, else a static reason ("redis: invalid host:port"). */
const char *cmp_cache_conf_error(const cmp_cache_conf *conf);

/* KEY: NUL-terminated (the prefix is added for Redis). See the callback contract above. */
void cmp_cache_get(cmp_cache *c, const char *key, cmp_cache_get_cb cb, void *arg);
/* Stores VALUE: fresh for TTL_MS, kept until TTL_MS + STALE_MS (stale-if-error). In Redis:
 * SET <prefix><key> <header><value> PX <ttl+stale>. Fire-and-forget. A value over
 * CMP_CACHE_MAX_VALUE, or ttl+stale == 0, is not stored and deletes the key instead (so an
 * older value is not served). */
void cmp_cache_set(cmp_cache *c, const char *key, const char *value, size_t len,
                   uint32_t ttl_ms, uint32_t stale_ms);
void cmp_cache_del(cmp_cache *c, const char *key);
/* Deletes KEYS[0..N) (in Redis: one DEL of them all) and calls CB once: CMP_CACHE_HIT when
 * the store confirmed it, CMP_CACHE_ERROR when it could not (Redis not connected, an error
 * reply, no reply within timeout_ms). Never from inside this call — the LRU deletes at once
 * and calls back on the next loop iteration — except while the cache is closing (ERROR,
 * synchronously, as for a get). VALUE is NULL and AGE 0 in the callback. */
void cmp_cache_del_confirmed(cmp_cache *c, const char *const *keys, int n, cmp_cache_get_cb cb,
                             void *arg);

/* Every pending get fires CMP_CACHE_ERROR, before this returns (when called from inside a
 * cache callback: at the latest when that callback returns). The memory is freed once the
 * handles closed: run the loop. Safe to call twice; NULL is fine. */
void cmp_cache_close(cmp_cache *c);

void cmp_cache_stats_get(const cmp_cache *c, cmp_cache_stats *out);
const char *cmp_cache_status_str(cmp_cache_status st);

#endif
