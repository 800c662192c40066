/* ratelimit.c — see ratelimit.h. */
#include "gateway/ratelimit.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "gateway/ratelimit_local.h"
#include "http/http1.h"

static const char *const key_class[] = { "client_ip", "header", "route" };
static const char *const mode_name[GW_RL__MODES] = { "local", "shared", "fallback" };

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 33);
}

gw_slice gw_rl_key_value(const rt_rate_limit *l, const gw_request *req)
{
    gw_slice v = { "", 0 };
    switch (l->key) {
    case RT_RL_KEY_CLIENT_IP:
        v.p = req->client_addr;
        v.n = strlen(req->client_addr);
        break;
    case RT_RL_KEY_HEADER:
        v = gw_request_header(req, l->key_header);
        if (!v.n) {
            v.p = "-";
            v.n = 1;
        }
        break;
    default:
        break;
    }
    return v;
}

uint64_t gw_rl_key_hash(const rt_route *route, const rt_rate_limit *l, const gw_request *req)
{
    gw_slice v = gw_rl_key_value(l, req); /* all of it: long values differing late stay apart */
    uint64_t h = fnv(0xcbf29ce484222325ull, route->id, strlen(route->id) + 1);
    h = fnv(h, &l->key, sizeof l->key);
    return mix(fnv(h, v.p, v.n));
}

/* ---- counters: (route, key class, mode) -> allowed, limited; insert-only ---- */
#define RL_STAT_SLOTS 512
typedef struct rl_stat {
    atomic_int used;
    char route[64];
    int key, mode;
    atomic_uint_fast64_t allowed, limited;
} rl_stat;

static rl_stat stats[RL_STAT_SLOTS];
static pthread_mutex_t stats_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_uint_fast64_t stats_overflow;
static atomic_int workers_in[GW_RL__MODES];
static atomic_uint instances_seen; /* the fallback divisor in use (ratelimit_redis.c) */

void gw_rl_instances_seen(uint32_t n)
{
    atomic_store_explicit(&instances_seen, n, memory_order_relaxed);
}

static atomic_uint_fast64_t redis_errors;

void gw_rl_redis_errors_add(uint64_t n)
{
    atomic_fetch_add_explicit(&redis_errors, n, memory_order_relaxed);
}

static int stat_is(const rl_stat *s, const char *route, int key, int mode)
{
    return s->key == key && s->mode == mode && strcmp(s->route, route) == 0;
}

/* The counters of (ROUTE, KEY, MODE): found without a lock, inserted under one. */
static rl_stat *stat_slot(const char *route, int key, int mode)
{
    uint64_t h = mix(fnv(fnv(0xcbf29ce484222325ull, route, strlen(route)), &key, sizeof key) ^
                     (uint64_t)mode);
    for (unsigned i = 0; i < RL_STAT_SLOTS; i++) {
        rl_stat *s = &stats[(h + i) % RL_STAT_SLOTS];
        if (!atomic_load_explicit(&s->used, memory_order_acquire))
            break;
        if (stat_is(s, route, key, mode))
            return s;
    }
    rl_stat *found = NULL;
    pthread_mutex_lock(&stats_mu);
    for (unsigned i = 0; i < RL_STAT_SLOTS && !found; i++) {
        rl_stat *s = &stats[(h + i) % RL_STAT_SLOTS];
        if (!atomic_load_explicit(&s->used, memory_order_acquire)) {
            snprintf(s->route, sizeof s->route, "%s", route);
            s->key = key;
            s->mode = mode;
            atomic_store_explicit(&s->used, 1, memory_order_release);
            found = s;
        } else if (stat_is(s, route, key, mode)) {
            found = s;
        }
    }
    pthread_mutex_unlock(&stats_mu);
    return found;
}

void gw_rl_count(const rt_route *route, const rt_rate_limit *l, gw_rl_mode mode, int allowed)
{
    rl_stat *s = stat_slot(route->id, l->key, (int)mode);
    if (!s) {
        atomic_fetch_add_explicit(&stats_overflow, 1, memory_order_relaxed);
        return;
    }
    atomic_fetch_add_explicit(allowed ? &s->allowed : &s->limited, 1, memory_order_relaxed);
}

void gw_rl_workers_in_mode(gw_rl_mode from, gw_rl_mode to)
{
    if (from < GW_RL__MODES)
        atomic_fetch_sub(&workers_in[from], 1);
    if (to < GW_RL__MODES)
        atomic_fetch_add(&workers_in[to], 1);
}

void gw_rl_decide_hash(const rt_route *route, const rt_rate_limit *l, uint64_t key,
                       uint32_t divisor, gw_rl_mode mode, gw_gcra_result *r)
{
    gw_gcra g;
    gw_gcra_init(&g, l->rate, l->per_ms, l->burst, divisor);
    /* the fallback share has its own buckets: going back to shared starts them afresh */
    gw_rl_local_check(key ^ (mode == GW_RL_FALLBACK ? 0x5bd1e995ull : 0), &g, uv_hrtime(), r);
    gw_rl_count(route, l, mode, r->allowed);
}

void gw_rl_decide_local(const rt_route *route, const rt_rate_limit *l, const gw_request *req,
                        uint32_t divisor, gw_rl_mode mode, gw_gcra_result *r)
{
    gw_rl_decide_hash(route, l, gw_rl_key_hash(route, l, req), divisor, mode, r);
}

static uint64_t ceil_s(uint64_t ns)
{
    return (ns + 999999999ull) / 1000000000ull;
}

/* A bounded appender: the header lines run on every allowed answer of a limited route, so
 * they are put together without printf (one snprintf of nine fields was ~4,000
 * instructions, a fifth of a proxied GET). */
typedef struct hdr_out {
    char *p, *end; /* end: the last byte, kept for the NUL */
    int full;
} hdr_out;

static void put(hdr_out *o, const char *s, size_t k)
{
    if (o->full || (size_t)(o->end - o->p) < k) {
        o->full = 1;
        return;
    }
    memcpy(o->p, s, k);
    o->p += k;
}

#define PUT_LIT(o, lit) put((o), (lit), sizeof(lit) - 1)

static void put_u(hdr_out *o, uint64_t v)
{
    char tmp[20];
    put(o, tmp, (size_t)(gw_put_u64(tmp, v) - tmp));
}

size_t gw_rl_headers(char *out, size_t n, const rt_route *route, const rt_rate_limit *l,
                     const gw_gcra_result *r)
{
    if (n == 0)
        return 0;
    uint64_t reset = ceil_s(r->reset_ns), w = (l->per_ms + 999) / 1000;
    size_t idn = strlen(route->id);
    hdr_out o = { out, out + n - 1, 0 };
    PUT_LIT(&o, "RateLimit-Policy: \"");
    put(&o, route->id, idn);
    PUT_LIT(&o, "\";q=");
    put_u(&o, l->rate);
    PUT_LIT(&o, ";w=");
    put_u(&o, w);
    PUT_LIT(&o, "\r\nRateLimit: \"");
    put(&o, route->id, idn);
    PUT_LIT(&o, "\";r=");
    put_u(&o, r->remaining);
    PUT_LIT(&o, ";t=");
    put_u(&o, reset);
    PUT_LIT(&o, "\r\nX-RateLimit-Limit: ");
    put_u(&o, l->rate);
    PUT_LIT(&o, "\r\nX-RateLimit-Remaining: ");
    put_u(&o, r->remaining);
    PUT_LIT(&o, "\r\nX-RateLimit-Reset: ");
    put_u(&o, reset);
    PUT_LIT(&o, "\r\n");
    if (o.full) {
        out[0] = '\0';
        return 0;
    }
    *o.p = '\0';
    return (size_t)(o.p - out);
}

void gw_rl_mark_allowed(gw_request *req, const rt_route *route, const rt_rate_limit *l,
                        const gw_gcra_result *r)
{
    char h[sizeof req->resp_extra];
    gw_request_set_response_headers(req, h, gw_rl_headers(h, sizeof h, route, l, r));
}

void gw_rl_answer_limited(gw_request *req, const rt_route *route, const rt_rate_limit *l,
                          const gw_gcra_result *r)
{
    char h[512];
    uint64_t retry = ceil_s(r->retry_after_ns);
    if (retry == 0)
        retry = 1;
    int k = snprintf(h, sizeof h, "Retry-After: %" PRIu64 "\r\n", retry);
    gw_rl_headers(h + k, sizeof h - (size_t)k, route, l, r);
    gw_response_error_headers(req, 429, "rate limit exceeded", h);
}

/* ---- /metrics ---- */
int gw_rl_metrics_render(char **out, size_t *len)
{
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    if (!b)
        return -1;
#define EMIT(...)                                                                           \
    do {                                                                                    \
        int k_ = snprintf(b + n, cap - n, __VA_ARGS__);                                     \
        if (k_ < 0)                                                                         \
            goto fail;                                                                      \
        if ((size_t)k_ >= cap - n) {                                                        \
            char *nb = realloc(b, cap * 2 + (size_t)k_);                                    \
            if (!nb)                                                                        \
                goto fail;                                                                  \
            b = nb;                                                                         \
            cap = cap * 2 + (size_t)k_;                                                     \
            k_ = snprintf(b + n, cap - n, __VA_ARGS__);                                     \
        }                                                                                   \
        n += (size_t)k_;                                                                    \
    } while (0)
    EMIT("# HELP gateway_ratelimit_requests_total Requests on rate-limited routes, by route, "
         "key class, mode (local, shared, fallback) and result (allowed, limited).\n"
         "# TYPE gateway_ratelimit_requests_total counter\n");
    for (unsigned i = 0; i < RL_STAT_SLOTS; i++) {
        rl_stat *s = &stats[i];
        if (!atomic_load_explicit(&s->used, memory_order_acquire))
            continue;
        for (int res = 0; res < 2; res++)
            EMIT("gateway_ratelimit_requests_total{route=\"%s\",key=\"%s\",mode=\"%s\","
                 "result=\"%s\"} %" PRIu64 "\n",
                 s->route, key_class[s->key], mode_name[s->mode], res ? "limited" : "allowed",
                 (uint64_t)atomic_load_explicit(res ? &s->limited : &s->allowed,
                                                memory_order_relaxed));
    }
    EMIT("# HELP gateway_ratelimit_workers Workers whose limiter is in each mode (shared: "
         "Redis decides; fallback: Redis slow or down, rate/instances per instance).\n"
         "# TYPE gateway_ratelimit_workers gauge\n");
    for (int m = 0; m < GW_RL__MODES; m++)
        EMIT("gateway_ratelimit_workers{mode=\"%s\"} %d\n", mode_name[m],
             atomic_load(&workers_in[m]));
    EMIT("# HELP gateway_ratelimit_instances Gateway instances sharing the limits: the fallback "
         "divisor (rate_limits.instances, or learned from the instances seen in Redis).\n"
         "# TYPE gateway_ratelimit_instances gauge\n"
         "gateway_ratelimit_instances %u\n", atomic_load_explicit(&instances_seen,
                                                                memory_order_relaxed));
    EMIT("# HELP gateway_ratelimit_redis_errors_total Script calls of the shared limits answered "
         "with an error by Redis (e.g. NOPERM: the ACL user may not run EVALSHA or EVAL): "
         "their requests were decided locally.\n"
         "# TYPE gateway_ratelimit_redis_errors_total counter\n"
         "gateway_ratelimit_redis_errors_total %" PRIu64 "\n",
         (uint64_t)atomic_load_explicit(&redis_errors, memory_order_relaxed));
    EMIT("# HELP gateway_ratelimit_local_evictions_total Keys forgotten while still limited "
         "(the in-process store was full).\n"
         "# TYPE gateway_ratelimit_local_evictions_total counter\n"
         "gateway_ratelimit_local_evictions_total %" PRIu64 "\n",
         gw_rl_local_evictions());
#undef EMIT
    *out = b;
    *len = n;
    return 0;
fail:
    free(b);
    return -1;
}
