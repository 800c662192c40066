/* metrics.c — per-worker counters and their Prometheus rendering. */
#include "gateway/metrics.h"
#include "gateway/tunnels.h"
#include "gateway/inflight_limit.h"
#include "gateway/ratelimit.h"
#include "gateway/span_export.h"

#include "composers/compose.h"

#include <inttypes.h>
#include <pthread.h>
#include <time.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>

const double gw_latency_bounds[GW_LATENCY_BUCKETS] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5,
};

gw_process_metrics gw_process_stats;

static uint64_t fnv(const char *s, uint64_t h)
{
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
    return h;
}

#define ADD(a, v) atomic_fetch_add_explicit(&(a), (v), memory_order_relaxed)
#define GET(a) atomic_load_explicit(&(a), memory_order_relaxed)

/* Finds or inserts the slot for (route, upstream, cls) and adds one. Linear probing in an
 * insert-only table of which the calling worker is the only writer. Returns 0, or -1 when
 * the table is full around this hash. */
static uint64_t pair_hash(const char *route, const char *upstream)
{
    return fnv(upstream, fnv(route, 0xcbf29ce484222325ULL));
}

/* slot_add with H = pair_hash(route, upstream) ^ cls already computed. */
static int slot_add_h(gw_metric_slot *slots, unsigned n, uint64_t h, const char *route,
                      const char *upstream, int cls);

static int slot_add(gw_metric_slot *slots, unsigned n, const char *route, const char *upstream,
                    int cls)
{
    return slot_add_h(slots, n, pair_hash(route, upstream) ^ (uint64_t)cls, route, upstream, cls);
}

static int slot_add_h(gw_metric_slot *slots, unsigned n, uint64_t h, const char *route,
                      const char *upstream, int cls)
{
    for (unsigned i = 0; i < 64; i++) {
        gw_metric_slot *s = &slots[(h + i) % n];
        if (atomic_load_explicit(&s->used, memory_order_relaxed)) {
            if (s->hash == h && s->status_class == cls && strcmp(s->route, route) == 0 &&
                strcmp(s->upstream, upstream) == 0) {
                ADD(s->count, 1);
                return 0;
            }
            continue;
        }
        s->hash = h;
        s->status_class = cls;
        snprintf(s->route, sizeof s->route, "%s", route);
        snprintf(s->upstream, sizeof s->upstream, "%s", upstream);
        atomic_store_explicit(&s->count, 1, memory_order_relaxed);
        atomic_store_explicit(&s->used, 1, memory_order_release);
        return 0;
    }
    return -1;
}

static void observe(atomic_uint_fast64_t *buckets, atomic_uint_fast64_t *count,
                    atomic_uint_fast64_t *sum_us, double ms);

/* The side table's hash of a pair: pair_hash (shared with the request counter, so a request
 * hashes its labels once) with a salt that keeps the two tables' probe sequences apart. */
#define SIDE_SALT 0x9e3779b97f4a7c15ULL
static uint64_t side_hash(const char *route, const char *upstream)
{
    return pair_hash(route, upstream) ^ SIDE_SALT;
}

/* The (route, upstream) evidence slot (H = side_hash), inserted when new; NULL when the
 * table is full around its hash. Only the owning worker calls it. */
static gw_side_slot *side_slot_h(gw_metrics *m, uint64_t h, const char *route,
                                 const char *upstream)
{
    for (unsigned i = 0; i < 64; i++) {
        gw_side_slot *s = &m->sides[(h + i) % GW_SIDE_SLOTS];
        if (atomic_load_explicit(&s->used, memory_order_relaxed)) {
            if (s->hash == h && strcmp(s->route, route) == 0 && strcmp(s->upstream, upstream) == 0)
                return s;
            continue;
        }
        s->hash = h;
        snprintf(s->route, sizeof s->route, "%s", route);
        snprintf(s->upstream, sizeof s->upstream, "%s", upstream);
        atomic_store_explicit(&s->used, 1, memory_order_release);
        return s;
    }
    ADD(m->sides_overflow, 1);
    return NULL;
}

static gw_side_slot *side_slot(gw_metrics *m, const char *route, const char *upstream)
{
    return side_slot_h(m, side_hash(route, upstream), route, upstream);
}

static void side_request(gw_metrics *m, uint64_t pair, const char *route, const char *upstream,
                         int status, double total_ms)
{
    gw_side_slot *s = side_slot_h(m, pair ^ SIDE_SALT, route, upstream);
    if (!s)
        return;
    ADD(s->requests, 1);
    if (status >= 500)
        ADD(s->errors, 1);
    ADD(s->lat[rt_cut_lat_bucket(total_ms > 0 ? (uint64_t)(total_ms * 1000.0) : 0)], 1);
}

void gw_metrics_side_fallback(gw_metrics *m, const char *route, const char *from)
{
    gw_side_slot *s = route && from ? side_slot(m, route, from) : NULL;
    if (s)
        ADD(s->fallbacks, 1);
}

void gw_metrics_side_shadow(gw_metrics *m, const char *route, const char *upstream,
                            int mismatched)
{
    gw_side_slot *s = route && upstream ? side_slot(m, route, upstream) : NULL;
    if (!s)
        return;
    ADD(s->shadow_compared, 1);
    if (mismatched)
        ADD(s->shadow_mismatched, 1);
}

/* Worker M's published slot of (ROUTE, UPSTREAM) with hash H, or NULL. Any thread. */
static const gw_side_slot *side_find(const gw_metrics *m, uint64_t h, const char *route,
                                     const char *upstream)
{
    for (unsigned i = 0; i < 64; i++) {
        const gw_side_slot *s = &m->sides[(h + i) % GW_SIDE_SLOTS];
        if (!atomic_load_explicit(&s->used, memory_order_acquire))
            return NULL;
        if (s->hash == h && strcmp(s->route, route) == 0 && strcmp(s->upstream, upstream) == 0)
            return s;
    }
    return NULL;
}

void gw_metrics_side_read(gw_metrics *const *workers, int n, const char *route,
                          const char *upstream, rt_cut_side *out)
{
    memset(out, 0, sizeof *out);
    uint64_t h = side_hash(route, upstream);
    for (int w = 0; w < n; w++) {
        const gw_side_slot *s = side_find(workers[w], h, route, upstream);
        if (s) {
            out->requests += GET(s->requests);
            out->errors += GET(s->errors);
            out->fallbacks += GET(s->fallbacks);
            out->shadow_compared += GET(s->shadow_compared);
            out->shadow_mismatched += GET(s->shadow_mismatched);
            for (int b = 0; b <= RT_CUT_LAT_BUCKETS; b++)
                out->lat[b] += GET(s->lat[b]);
        }
    }
}

static struct {
    pthread_mutex_t lock;
    uint64_t next_seq;                 /* of the next sample; 0 before the first */
    gw_mismatch_sample ring[GW_MISMATCH_RING];
} mismatches = { PTHREAD_MUTEX_INITIALIZER, 1, { { 0 } } };

void gw_metrics_mismatch_sample(const char *route, const char *upstream,
                                const char *request_id, const char *diff)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (pthread_mutex_trylock(&mismatches.lock) != 0)
        return; /* busy: this example is skipped, the worker never waits */
    gw_mismatch_sample *s = &mismatches.ring[mismatches.next_seq % GW_MISMATCH_RING];
    s->seq = mismatches.next_seq++;
    s->at_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    snprintf(s->route, sizeof s->route, "%s", route ? route : "");
    snprintf(s->upstream, sizeof s->upstream, "%s", upstream ? upstream : "");
    snprintf(s->request_id, sizeof s->request_id, "%s", request_id ? request_id : "");
    snprintf(s->diff, sizeof s->diff, "%s", diff ? diff : "");
    pthread_mutex_unlock(&mismatches.lock);
}

int gw_metrics_mismatches_since(uint64_t *seq, gw_mismatch_sample *out, int max)
{
    int n = 0;
    pthread_mutex_lock(&mismatches.lock);
    uint64_t first = *seq + 1;
    if (mismatches.next_seq > GW_MISMATCH_RING && first < mismatches.next_seq - GW_MISMATCH_RING)
        first = mismatches.next_seq - GW_MISMATCH_RING; /* older ones were overwritten */
    for (uint64_t q = first; q < mismatches.next_seq && n < max; q++)
        out[n++] = mismatches.ring[q % GW_MISMATCH_RING];
    if (n > 0)
        *seq = out[n - 1].seq;
    pthread_mutex_unlock(&mismatches.lock);
    return n;
}

void gw_metrics_request(gw_metrics *m, const char *route, const char *upstream, int status,
                        double total_ms)
{
    int cls = status / 100;
    if (cls < 1 || cls > 5)
        cls = 5;
    const char *rl = route ? route : "-", *ul = upstream ? upstream : "gateway";
    uint64_t pair = pair_hash(rl, ul);
    if (slot_add_h(m->slots, GW_METRICS_SLOTS, pair ^ (uint64_t)cls, rl, ul, cls) != 0)
        ADD(m->overflow, 1);
    if (route && upstream && strcmp(route, "-") != 0)
        side_request(m, pair, route, upstream, status, total_ms);
    observe(m->duration_buckets, &m->duration_count, &m->duration_sum_us, total_ms);
}

void gw_metrics_shadow(gw_metrics *m, const char *route, int mismatched)
{
    slot_add(m->shadow_slots, GW_METRICS_SHADOW_SLOTS, route, "", 0);
    atomic_fetch_add(&gw_process_stats.shadow_compared, 1);
    if (mismatched) {
        slot_add(m->shadow_slots, GW_METRICS_SHADOW_SLOTS, route, "", 1);
        atomic_fetch_add(&gw_process_stats.shadow_mismatched, 1);
    }
}

void gw_metrics_shadow_skipped(gw_metrics *m, const char *route, const char *reason)
{
    slot_add(m->shadow_skipped_slots, GW_METRICS_SHADOW_SLOTS, route, reason, 0);
}

void gw_metrics_fallback(gw_metrics *m)
{
    ADD(m->fallbacks, 1);
}

void gw_metrics_composition(gw_metrics *m, int outcome)
{
    ADD(m->compositions[outcome], 1);
}

static void observe(atomic_uint_fast64_t *buckets, atomic_uint_fast64_t *count,
                    atomic_uint_fast64_t *sum_us, double ms)
{
    double sec = ms / 1000.0;
    int b = 0;
    while (b < GW_LATENCY_BUCKETS && sec > gw_latency_bounds[b])
        b++;
    ADD(buckets[b], 1);
    ADD(*count, 1);
    ADD(*sum_us, (uint64_t)(ms * 1000.0));
}

void gw_metrics_leg(gw_metrics *m, const char *composition, const char *leg, int degraded,
                    double ms)
{
    if (degraded)
        gw_metrics_leg_degraded(m, composition, leg);
    observe(m->leg_buckets, &m->leg_count, &m->leg_sum_us, ms);
}

void gw_metrics_leg_degraded(gw_metrics *m, const char *composition, const char *leg)
{
    slot_add(m->degraded_slots, GW_METRICS_SHADOW_SLOTS, composition, leg, 0);
}

void gw_metrics_upstream_error(gw_metrics *m, enum gw_upstream_err_kind kind)
{
    ADD(m->upstream_errors[kind], 1);
}

const char *gw_upstream_err_name(enum gw_upstream_err_kind kind)
{
    static const char *const names[] = { "connect", "timeout", "reset", "protocol", "no_endpoint" };
    return kind < GW_UERR__COUNT ? names[kind] : "other";
}

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
}

/* Label values are route ids and upstream names: validated to [A-Za-z0-9._~-], so no
 * escaping is needed; anything else is replaced rather than trusted. */
static const char *label(const char *s, char *tmp, size_t n)
{
    size_t i = 0;
    for (; s[i] && i < n - 1; i++)
        tmp[i] = (s[i] == '"' || s[i] == '\\' || s[i] == '\n') ? '_' : s[i];
    tmp[i] = '\0';
    return tmp;
}

/* which: 0 requests, 1 shadow comparisons, 2 degraded composition legs, 3 skipped shadows */
static gw_metric_slot *table_of(gw_metrics *m, int which, unsigned *n)
{
    *n = which ? GW_METRICS_SHADOW_SLOTS : GW_METRICS_SLOTS;
    return which == 3 ? m->shadow_skipped_slots : which == 2 ? m->degraded_slots
           : which ? m->shadow_slots : m->slots;
}

static const gw_metric_slot *find_in(gw_metrics *m, int shadow, const gw_metric_slot *key)
{
    unsigned n;
    const gw_metric_slot *slots = table_of(m, shadow, &n);
    for (unsigned j = 0; j < n; j++) {
        const gw_metric_slot *o = &slots[(key->hash + j) % n];
        if (!atomic_load_explicit(&o->used, memory_order_acquire))
            return NULL;
        if (o->hash == key->hash && o->status_class == key->status_class &&
            strcmp(o->route, key->route) == 0 && strcmp(o->upstream, key->upstream) == 0)
            return o;
    }
    return NULL;
}

/* One line per label set, summed over the workers (each label set is printed by the first
 * worker that has it). */
static void render_slots(sbuf *b, gw_metrics *const *workers, int nw, int shadow)
{
    char t1[GW_METRICS_KEY_MAX], t2[GW_METRICS_KEY_MAX];
    for (int w = 0; w < nw; w++) {
        unsigned n;
        const gw_metric_slot *slots = table_of(workers[w], shadow, &n);
        for (unsigned i = 0; i < n; i++) {
            const gw_metric_slot *s = &slots[i];
            if (!atomic_load_explicit(&s->used, memory_order_acquire))
                continue;
            int seen = 0;
            for (int v = 0; v < w && !seen; v++)
                seen = find_in(workers[v], shadow, s) != NULL;
            if (seen)
                continue;
            uint64_t total = 0;
            for (int v = w; v < nw; v++) {
                const gw_metric_slot *o = find_in(workers[v], shadow, s);
                if (o)
                    total += GET(((gw_metric_slot *)o)->count);
            }
            if (shadow == 3)
                sb_printf(b, "gateway_shadow_skipped_total{route=\"%s\",reason=\"%s\"} %" PRIu64 "\n",
                          label(s->route, t1, sizeof t1), label(s->upstream, t2, sizeof t2), total);
            else if (shadow == 2)
                sb_printf(b, "gateway_composition_degraded_legs_total{composition=\"%s\",leg=\"%s\"} %" PRIu64 "\n",
                          label(s->route, t1, sizeof t1), label(s->upstream, t2, sizeof t2), total);
            else if (shadow)
                sb_printf(b, "gateway_shadow_route_%s_total{route=\"%s\"} %" PRIu64 "\n",
                          s->status_class ? "mismatches" : "comparisons",
                          label(s->route, t1, sizeof t1), total);
            else
                sb_printf(b, "gateway_requests_total{route=\"%s\",upstream=\"%s\",status=\"%dxx\"} %" PRIu64 "\n",
                          label(s->route, t1, sizeof t1), label(s->upstream, t2, sizeof t2),
                          s->status_class, total);
        }
    }
}

/* The user cache per (route, upstream): hits, stale answers and misses, summed over the
 * workers; sides that never looked up the cache print nothing. */
static void render_side_cache(sbuf *b, gw_metrics *const *workers, int nw)
{
    static const char *const names[GW_SIDE_CACHE__N] = { "hit", "stale", "miss" };
    char t1[GW_METRICS_KEY_MAX], t2[GW_METRICS_KEY_MAX];
    for (int w = 0; w < nw; w++) {
        for (unsigned i = 0; i < GW_SIDE_SLOTS; i++) {
            const gw_side_slot *s = &workers[w]->sides[i];
            if (!atomic_load_explicit(&s->used, memory_order_acquire))
                continue;
            int seen = 0;
            for (int v = 0; v < w && !seen; v++)
                seen = side_find(workers[v], s->hash, s->route, s->upstream) != NULL;
            if (seen)
                continue;
            uint64_t c[GW_SIDE_CACHE__N] = { 0 }, any = 0;
            for (int v = w; v < nw; v++) {
                const gw_side_slot *o = side_find(workers[v], s->hash, s->route, s->upstream);
                for (int k = 0; o && k < GW_SIDE_CACHE__N; k++)
                    any |= c[k] += GET(o->cache[k]);
            }
            for (int k = 0; any && k < GW_SIDE_CACHE__N; k++)
                sb_printf(b, "gateway_cache_route_requests_total{route=\"%s\",upstream=\"%s\","
                             "result=\"%s\"} %" PRIu64 "\n",
                          label(s->route, t1, sizeof t1), label(s->upstream, t2, sizeof t2),
                          names[k], c[k]);
        }
    }
}

static void render_histogram(sbuf *b, gw_metrics *const *workers, int n, const char *name,
                             size_t buckets_off, size_t count_off, size_t sum_off)
{
    uint64_t cum = 0, count = 0, sum_us = 0;
    for (int k = 0; k <= GW_LATENCY_BUCKETS; k++) {
        for (int w = 0; w < n; w++)
            cum += GET(((atomic_uint_fast64_t *)((char *)workers[w] + buckets_off))[k]);
        if (k < GW_LATENCY_BUCKETS)
            sb_printf(b, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, gw_latency_bounds[k], cum);
        else
            sb_printf(b, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, cum);
    }
    for (int w = 0; w < n; w++) {
        count += GET(*(atomic_uint_fast64_t *)((char *)workers[w] + count_off));
        sum_us += GET(*(atomic_uint_fast64_t *)((char *)workers[w] + sum_off));
    }
    sb_printf(b, "%s_sum %.6f\n%s_count %" PRIu64 "\n", name, (double)sum_us / 1e6, name, count);
}

#define SUM(field) ({ uint64_t t_ = 0; for (int w_ = 0; w_ < n; w_++) t_ += GET(workers[w_]->field); t_; })

int gw_metrics_render(gw_metrics *const *workers, int n, uint64_t route_version,
                      const char *const *upstream_names, int n_upstreams, char **out, size_t *len)
{
    sbuf b = { malloc(16384), 0, 16384, 0 };
    if (!b.p)
        return -1;
    sb_printf(&b, "# HELP gateway_requests_total Requests answered, by route, upstream and status class.\n"
                  "# TYPE gateway_requests_total counter\n");
    render_slots(&b, workers, n, 0);
    sb_printf(&b, "# HELP gateway_shadow_route_comparisons_total Shadow comparisons by route (cls 0) and mismatches (cls 1).\n"
                  "# TYPE gateway_shadow_route_comparisons_total counter\n"
                  "# TYPE gateway_shadow_route_mismatches_total counter\n");
    render_slots(&b, workers, n, 1);
    sb_printf(&b, "# HELP gateway_shadow_skipped_total Shadow copies not sent (background caps full, draining, no endpoint), by route and reason.\n"
                  "# TYPE gateway_shadow_skipped_total counter\n");
    render_slots(&b, workers, n, 3);
    sb_printf(&b, "# HELP gateway_request_duration_seconds Time from a request's first byte to its last response byte written.\n"
                  "# TYPE gateway_request_duration_seconds histogram\n");
    render_histogram(&b, workers, n, "gateway_request_duration_seconds",
                     offsetof(gw_metrics, duration_buckets), offsetof(gw_metrics, duration_count),
                     offsetof(gw_metrics, duration_sum_us));
    sb_printf(&b, "# HELP gateway_upstream_errors_total Upstream failures by kind.\n"
                  "# TYPE gateway_upstream_errors_total counter\n");
    for (int k = 0; k < GW_UERR__COUNT; k++) {
        sb_printf(&b, "gateway_upstream_errors_total{kind=\"%s\"} %" PRIu64 "\n",
                  gw_upstream_err_name((enum gw_upstream_err_kind)k), SUM(upstream_errors[k]));
    }
    uint64_t acc = SUM(connections_accepted), ovf = SUM(overflow), fb = SUM(fallbacks);
    sb_printf(&b, "# HELP gateway_fallbacks_total Requests replayed to the legacy upstream by a route's fallback.\n"
                  "# TYPE gateway_fallbacks_total counter\ngateway_fallbacks_total %" PRIu64 "\n", fb);
    sb_printf(&b, "# TYPE gateway_connections_accepted_total counter\ngateway_connections_accepted_total %" PRIu64 "\n", acc);
    sb_printf(&b, "# HELP gateway_cutover_evidence_overflow_total Requests, fallbacks and shadow "
                  "comparisons not counted as cutover evidence: their (route, upstream) found no "
                  "slot in a worker's table.\n"
                  "# TYPE gateway_cutover_evidence_overflow_total counter\n"
                  "gateway_cutover_evidence_overflow_total %" PRIu64 "\n", SUM(sides_overflow));
    sb_printf(&b, "# HELP gateway_connections_rejected_total Client connections closed at once.\n"
                  "# TYPE gateway_connections_rejected_total counter\n"
                  "gateway_connections_rejected_total{reason=\"max_connections\"} %" PRIu64 "\n",
              SUM(connections_rejected_max));
    sb_printf(&b, "# HELP gateway_tls_handshakes_total TLS handshakes completed, full or resumed.\n"
                  "# TYPE gateway_tls_handshakes_total counter\n"
                  "gateway_tls_handshakes_total{resumed=\"false\"} %" PRIu64 "\n"
                  "gateway_tls_handshakes_total{resumed=\"true\"} %" PRIu64 "\n",
              SUM(tls_events[GW_TLS_HANDSHAKE]), SUM(tls_events[GW_TLS_RESUMED]));
    sb_printf(&b, "# HELP gateway_tls_errors_total TLS connections that failed, by kind.\n"
                  "# TYPE gateway_tls_errors_total counter\n");
    for (int k = GW_TLS_ERR_TIMEOUT; k < GW_TLS__EVENTS; k++)
        sb_printf(&b, "gateway_tls_errors_total{kind=\"%s\"} %" PRIu64 "\n",
                  gw_tls_event_name((enum gw_tls_event)k), SUM(tls_events[k]));
    uint64_t h2_open = SUM(h2_events[GW_H2_CONN_OPEN]), h2_closed = SUM(h2_events[GW_H2_CONN_CLOSE]);
    sb_printf(&b, "# HELP gateway_h2_connections_active Client connections speaking HTTP/2.\n"
                  "# TYPE gateway_h2_connections_active gauge\n"
                  "gateway_h2_connections_active %" PRIu64 "\n"
                  "# HELP gateway_h2_streams_total HTTP/2 request streams opened by clients.\n"
                  "# TYPE gateway_h2_streams_total counter\n"
                  "gateway_h2_streams_total %" PRIu64 "\n"
                  "# HELP gateway_h2_resets_received_total RST_STREAM frames received from clients.\n"
                  "# TYPE gateway_h2_resets_received_total counter\n"
                  "gateway_h2_resets_received_total %" PRIu64 "\n"
                  "# HELP gateway_h2_resets_rate_limited_total HTTP/2 connections ended (GOAWAY "
                  "INTERNAL_ERROR, as nghttp2 sends it) for resets over http2.reset_rate.\n"
                  "# TYPE gateway_h2_resets_rate_limited_total counter\n"
                  "gateway_h2_resets_rate_limited_total %" PRIu64 "\n"
                  "# HELP gateway_h2_goaways_sent_total GOAWAY frames sent (drain, idle, errors).\n"
                  "# TYPE gateway_h2_goaways_sent_total counter\n"
                  "gateway_h2_goaways_sent_total %" PRIu64 "\n",
              h2_open > h2_closed ? h2_open - h2_closed : 0, SUM(h2_events[GW_H2_STREAM]),
              SUM(h2_events[GW_H2_RESET]), SUM(h2_events[GW_H2_RESET_LIMITED]),
              SUM(h2_events[GW_H2_GOAWAY]));
    sb_printf(&b, "# TYPE gateway_requests_unlabelled_total counter\ngateway_requests_unlabelled_total %" PRIu64 "\n", ovf);
    sb_printf(&b, "# HELP gateway_route_table_version Version of the route table in force.\n"
                  "# TYPE gateway_route_table_version gauge\ngateway_route_table_version %" PRIu64 "\n",
              route_version);
    sb_printf(&b, "# TYPE gateway_route_reloads_total counter\n"
                  "gateway_route_reloads_total{result=\"ok\"} %" PRIu64 "\n"
                  "gateway_route_reloads_total{result=\"failed\"} %" PRIu64 "\n",
              (uint64_t)GET(gw_process_stats.reloads_ok), (uint64_t)GET(gw_process_stats.reloads_failed));
    sb_printf(&b, "# TYPE gateway_shadow_comparisons_total counter\n"
                  "gateway_shadow_comparisons_total %" PRIu64 "\n"
                  "# TYPE gateway_shadow_mismatches_total counter\n"
                  "gateway_shadow_mismatches_total %" PRIu64 "\n",
              (uint64_t)GET(gw_process_stats.shadow_compared), (uint64_t)GET(gw_process_stats.shadow_mismatched));
    static const char *const outcomes[] = { "ok", "degraded", "failed" };
    sb_printf(&b, "# HELP gateway_compositions_total Compositions answered, by outcome.\n"
                  "# TYPE gateway_compositions_total counter\n");
    for (int k = 0; k < 3; k++)
        sb_printf(&b, "gateway_compositions_total{outcome=\"%s\"} %" PRIu64 "\n", outcomes[k],
                  SUM(compositions[k]));
    sb_printf(&b, "# HELP gateway_composition_degraded_legs_total Legs answered as null (degraded), by composition and leg.\n"
                  "# TYPE gateway_composition_degraded_legs_total counter\n");
    render_slots(&b, workers, n, 2);
    sb_printf(&b, "# HELP gateway_composition_leg_duration_seconds Time a composition leg took.\n"
                  "# TYPE gateway_composition_leg_duration_seconds histogram\n");
    render_histogram(&b, workers, n, "gateway_composition_leg_duration_seconds",
                     offsetof(gw_metrics, leg_buckets), offsetof(gw_metrics, leg_count),
                     offsetof(gw_metrics, leg_sum_us));
    sb_printf(&b, "# HELP gateway_circuit_state Circuit breaker per upstream (0 closed, 1 open, 2 half-open; the worst worker).\n"
                  "# TYPE gateway_circuit_state gauge\n");
    for (int u = 0; u < n_upstreams && u < GW_METRICS_UPSTREAMS; u++) {
        if (!upstream_names[u] || !upstream_names[u][0])
            continue; /* a slot without an upstream (routes/upstreams.h) */
        int worst = 0;
        for (int w = 0; w < n; w++) {
            int st = atomic_load_explicit(&workers[w]->breaker_state[u], memory_order_relaxed);
            worst = st > worst ? st : worst;
        }
        char t[GW_METRICS_KEY_MAX];
        sb_printf(&b, "gateway_circuit_state{upstream=\"%s\"} %d\n", label(upstream_names[u], t, sizeof t), worst);
    }
    sb_printf(&b, "# HELP gateway_cache_requests_total User cache lookups by result.\n"
                  "# TYPE gateway_cache_requests_total counter\n"
                  "gateway_cache_requests_total{result=\"hit\"} %" PRIu64 "\n"
                  "gateway_cache_requests_total{result=\"miss\"} %" PRIu64 "\n"
                  "gateway_cache_requests_total{result=\"error\"} %" PRIu64 "\n"
                  "gateway_cache_requests_total{result=\"stale\"} %" PRIu64 "\n"
                  "# HELP gateway_cache_coalesced_total Lookups that waited for a fetch already in flight.\n"
                  "# TYPE gateway_cache_coalesced_total counter\n"
                  "gateway_cache_coalesced_total %" PRIu64 "\n"
                  "# HELP gateway_cache_bypass_total Upstream answers on cached routes passed on without being stored.\n"
                  "# TYPE gateway_cache_bypass_total counter\n"
                  "gateway_cache_bypass_total %" PRIu64 "\n",
              SUM(cache_hits), SUM(cache_misses), SUM(cache_errors), SUM(cache_stale),
              SUM(cache_coalesced), SUM(cache_bypass));
    sb_printf(&b, "# HELP gateway_cache_route_requests_total User-cache lookups by route and "
                  "upstream: hit (fresh), stale (served past its ttl, the upstream failing), "
                  "miss.\n# TYPE gateway_cache_route_requests_total counter\n");
    render_side_cache(&b, workers, n);
    char *rl;
    size_t rln;
    if (gw_rl_metrics_render(&rl, &rln) == 0) {
        sb_printf(&b, "%.*s", (int)rln, rl);
        free(rl);
    } else {
        b.oom = 1;
    }
    char spans[1024];
    size_t sn = gw_span_export_metrics(spans, sizeof spans);
    sb_printf(&b, "%.*s", (int)sn, spans);
    if (gw_inflight_metrics_render(&rl, &rln, upstream_names, n_upstreams) == 0) {
        sb_printf(&b, "%.*s", (int)rln, rl);
        free(rl);
    } else {
        b.oom = 1;
    }
    if (gw_tunnels_metrics_render(&rl, &rln) == 0) {
        sb_printf(&b, "%.*s", (int)rln, rl);
        free(rl);
    } else {
        b.oom = 1;
    }
    if (b.oom) {
        free(b.p);
        return -1;
    }
    *out = b.p;
    *len = b.len;
    return 0;
}

/* ---- the composers' reporting interface (composers/compose.h), on gw_metrics ---- */

static void rep_composition(void *data, cmp_outcome outcome)
{
    gw_metrics_composition(data, outcome == CMP_COMPOSED_OK         ? GW_COMP_OK
                                 : outcome == CMP_COMPOSED_DEGRADED ? GW_COMP_DEGRADED
                                                                    : GW_COMP_FAILED);
}

static void rep_leg(void *data, const char *composition, const char *leg, double ms)
{
    gw_metrics_leg(data, composition, leg, 0, ms);
}

static void rep_leg_degraded(void *data, const char *composition, const char *leg)
{
    gw_metrics_leg_degraded(data, composition, leg);
}

static void rep_cache(void *data, const char *route, const char *upstream, cmp_cache_event ev)
{
    gw_metrics *m = data;
    int side = -1; /* hits, stale answers and misses also per (route, upstream) */
    switch (ev) {
    case CMP_CACHE_EV_HIT: ADD(m->cache_hits, 1); side = GW_SIDE_CACHE_HIT; break;
    case CMP_CACHE_EV_MISS: ADD(m->cache_misses, 1); side = GW_SIDE_CACHE_MISS; break;
    case CMP_CACHE_EV_ERROR: ADD(m->cache_errors, 1); break;
    case CMP_CACHE_EV_STALE: ADD(m->cache_stale, 1); side = GW_SIDE_CACHE_STALE; break;
    case CMP_CACHE_EV_COALESCED: ADD(m->cache_coalesced, 1); break;
    case CMP_CACHE_EV_BYPASS: ADD(m->cache_bypass, 1); break;
    }
    gw_side_slot *s = side >= 0 && route && upstream ? side_slot(m, route, upstream) : NULL;
    if (s)
        ADD(s->cache[side], 1);
}

static atomic_int *rep_breaker_mirror(void *data, int upstream)
{
    gw_metrics *m = data;
    return upstream >= 0 && upstream < GW_METRICS_UPSTREAMS ? &m->breaker_state[upstream] : NULL;
}

void gw_metrics_composer_report(gw_metrics *m, cmp_report *out)
{
    *out = (cmp_report){
        .data = m,
        .composition = rep_composition,
        .leg = rep_leg,
        .leg_degraded = rep_leg_degraded,
        .cache = rep_cache,
        .breaker_mirror = rep_breaker_mirror,
    };
}
