/* dashboard_stats.c — see dashboard_stats.h. */
#include "gateway/dashboard_stats.h"

#include <stdlib.h>
#include <string.h>

#define SNAPS (GW_DASH_WINDOW + 1)

void gw_dash_stats_init(gw_dash_stats *st)
{
    memset(st, 0, sizeof *st);
}

void gw_dash_stats_free(gw_dash_stats *st)
{
    free(st->sides);
    gw_dash_stats_init(st);
}

static uint64_t key_hash(const char *route, const char *upstream)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *p = route; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
    h = (h ^ 0xffu) * 0x100000001b3ull; /* separator: ("ab","c") is not ("a","bc") */
    for (const char *p = upstream; *p; p++)
        h = (h ^ (unsigned char)*p) * 0x100000001b3ull;
    return h;
}

/* The index slot holding (ROUTE, UPSTREAM), or the empty slot where it would go. */
static int *slot_of(const gw_dash_stats *st, const char *route, const char *upstream)
{
    uint64_t h = key_hash(route, upstream);
    for (unsigned k = 0; k < GW_DASH_INDEX; k++) {
        int *s = (int *)&st->index[(h + k) % GW_DASH_INDEX];
        if (*s == 0)
            return s;
        const gw_dash_side *d = &st->sides[*s - 1];
        if (strcmp(d->route, route) == 0 && strcmp(d->upstream, upstream) == 0)
            return s;
    }
    return NULL; /* unreachable: the index has twice the room of the sides */
}

int gw_dash_stats_find(const gw_dash_stats *st, const char *route, const char *upstream)
{
    const int *s = slot_of(st, route, upstream);
    return s && *s ? *s - 1 : -1;
}

void gw_dash_stats_begin(gw_dash_stats *st)
{
    for (int i = 0; i < st->n; i++) {
        memset(&st->sides[i].cur, 0, sizeof st->sides[i].cur);
        memset(st->sides[i].cache_cur, 0, sizeof st->sides[i].cache_cur);
    }
    st->cache_cur[0] = st->cache_cur[1] = 0;
}

int gw_dash_stats_accumulate(gw_dash_stats *st, const char *route, const char *upstream,
                             const rt_cut_side *cumulative)
{
    if (strlen(route) >= GW_METRICS_KEY_MAX || strlen(upstream) >= GW_METRICS_KEY_MAX)
        return -1;
    int *s = slot_of(st, route, upstream);
    if (!s)
        return -1;
    if (*s == 0) {
        if (st->n >= GW_DASH_MAX_SIDES) {
            st->dropped++;
            return -1;
        }
        if (st->n == st->cap) {
            int cap = st->cap ? st->cap * 2 : 16;
            gw_dash_side *ns = realloc(st->sides, (size_t)cap * sizeof *ns);
            if (!ns) {
                st->dropped++;
                return -1;
            }
            st->sides = ns;
            st->cap = cap;
        }
        gw_dash_side *d = &st->sides[st->n];
        memset(d, 0, sizeof *d);
        strcpy(d->route, route);
        strcpy(d->upstream, upstream);
        d->first_tick = st->ticks;
        *s = ++st->n;
    }
    rt_cut_side_add(&st->sides[*s - 1].cur, cumulative);
    return 0;
}

void gw_dash_stats_side_cache(gw_dash_stats *st, const char *route, const char *upstream,
                              const uint64_t *cumulative)
{
    int i = gw_dash_stats_find(st, route, upstream);
    if (i < 0) {
        rt_cut_side zero;
        memset(&zero, 0, sizeof zero);
        if (gw_dash_stats_accumulate(st, route, upstream, &zero) != 0)
            return;
        i = st->n - 1;
    }
    for (int k = 0; k < GW_SIDE_CACHE__N; k++)
        st->sides[i].cache_cur[k] += cumulative[k];
}

void gw_dash_stats_cache(gw_dash_stats *st, uint64_t hits, uint64_t lookups)
{
    st->cache_cur[0] = hits;
    st->cache_cur[1] = lookups;
}

void gw_dash_stats_end(gw_dash_stats *st)
{
    uint64_t t = st->ticks;
    for (int i = 0; i < st->n; i++) {
        gw_dash_side *d = &st->sides[i];
        rt_cut_side prev, delta;
        if (t == 0) {
            prev = d->cur;                       /* the baseline */
        } else if (d->first_tick == t) {
            memset(&prev, 0, sizeof prev);       /* new since the last sample: from zero */
            for (int k = 1; k < SNAPS; k++) {    /* as if it had been at zero all along */
                memset(&d->snap[(t + SNAPS - (uint64_t)k) % SNAPS], 0, sizeof d->snap[0]);
                memset(d->cache_snap[(t + SNAPS - (uint64_t)k) % SNAPS], 0,
                       sizeof d->cache_snap[0]);
            }
        } else {
            prev = d->snap[(t - 1) % SNAPS];
        }
        rt_cut_side_sub(&delta, &d->cur, &prev);
        d->snap[t % SNAPS] = d->cur;
        memcpy(d->cache_snap[t % SNAPS], d->cache_cur, sizeof d->cache_cur);
        d->req[t % GW_DASH_SERIES] = delta.requests > UINT32_MAX ? UINT32_MAX : (uint32_t)delta.requests;
        d->err[t % GW_DASH_SERIES] = delta.errors > UINT32_MAX ? UINT32_MAX : (uint32_t)delta.errors;
    }
    st->cache_snap[t % SNAPS][0] = st->cache_cur[0];
    st->cache_snap[t % SNAPS][1] = st->cache_cur[1];
    st->ticks = t + 1;
}

/* The newest and the oldest snapshot tick the window uses for a side that appeared at FIRST
 * (a new side has zeros before it). Returns the seconds between them. */
static int window_ticks(const gw_dash_stats *st, uint64_t *newest, uint64_t *oldest)
{
    if (st->ticks < 2)
        return 0;
    *newest = st->ticks - 1;
    uint64_t span = *newest < GW_DASH_WINDOW ? *newest : GW_DASH_WINDOW;
    *oldest = *newest - span;
    return (int)span;
}

int gw_dash_stats_window(const gw_dash_stats *st, int i, rt_cut_side *out)
{
    memset(out, 0, sizeof *out);
    uint64_t nw, old;
    int secs = window_ticks(st, &nw, &old);
    if (secs == 0 || i < 0 || i >= st->n)
        return secs;
    const gw_dash_side *d = &st->sides[i];
    if (d->first_tick > nw)
        return secs; /* appeared in a sample still in progress */
    rt_cut_side zero;
    memset(&zero, 0, sizeof zero);
    /* a side younger than the window started from zero (its older snapshots are zeroed) */
    const rt_cut_side *then = d->first_tick > old && d->first_tick > 0 ? &zero : &d->snap[old % SNAPS];
    rt_cut_side_sub(out, &d->snap[nw % SNAPS], then);
    return secs;
}

int gw_dash_stats_side_cache_window(const gw_dash_stats *st, int i, uint64_t *out)
{
    memset(out, 0, GW_SIDE_CACHE__N * sizeof *out);
    uint64_t nw, old;
    int secs = window_ticks(st, &nw, &old);
    if (secs == 0 || i < 0 || i >= st->n)
        return secs;
    const gw_dash_side *d = &st->sides[i];
    if (d->first_tick > nw)
        return secs;
    static const uint64_t zero[GW_SIDE_CACHE__N];
    /* as gw_dash_stats_window: a side younger than the window counts from zero */
    const uint64_t *then = d->first_tick > old && d->first_tick > 0 ? zero : d->cache_snap[old % SNAPS];
    const uint64_t *now = d->cache_snap[nw % SNAPS];
    for (int k = 0; k < GW_SIDE_CACHE__N; k++)
        out[k] = now[k] > then[k] ? now[k] - then[k] : 0;
    return secs;
}

int gw_dash_stats_cache_window(const gw_dash_stats *st, uint64_t *hits, uint64_t *lookups)
{
    uint64_t nw, old;
    *hits = *lookups = 0;
    int secs = window_ticks(st, &nw, &old);
    if (secs == 0)
        return 0;
    const uint64_t *a = st->cache_snap[nw % SNAPS], *b = st->cache_snap[old % SNAPS];
    *hits = a[0] > b[0] ? a[0] - b[0] : 0;
    *lookups = a[1] > b[1] ? a[1] - b[1] : 0;
    return secs;
}

void gw_dash_stats_series(const gw_dash_stats *st, int i, uint32_t *req, uint32_t *err)
{
    memset(req, 0, GW_DASH_SERIES * sizeof *req);
    memset(err, 0, GW_DASH_SERIES * sizeof *err);
    if (i < 0 || i >= st->n || st->ticks < 2)
        return;
    const gw_dash_side *d = &st->sides[i];
    /* tick 0 is the baseline (no difference): the series starts at tick 1 */
    uint64_t first = d->first_tick > 1 ? d->first_tick : 1;
    for (int k = 0; k < GW_DASH_SERIES; k++) {
        /* position k shows tick ticks - GW_DASH_SERIES + k */
        if (st->ticks < (uint64_t)(GW_DASH_SERIES - k))
            continue;
        uint64_t t = st->ticks - (uint64_t)(GW_DASH_SERIES - k);
        if (t < first)
            continue;
        req[k] = d->req[t % GW_DASH_SERIES];
        err[k] = d->err[t % GW_DASH_SERIES];
    }
}

double gw_dash_quantile_ms(const rt_cut_side *s, double q)
{
    uint64_t total = 0;
    for (int b = 0; b <= RT_CUT_LAT_BUCKETS; b++)
        total += s->lat[b];
    if (total == 0 || q <= 0 || q > 1)
        return -1;
    /* the smallest bucket whose cumulative count reaches ceil(q * total) */
    uint64_t need = (uint64_t)(q * (double)total);
    if ((double)need < q * (double)total)
        need++;
    if (need == 0)
        need = 1;
    uint64_t acc = 0;
    for (int b = 0; b < RT_CUT_LAT_BUCKETS; b++) {
        acc += s->lat[b];
        if (acc >= need)
            return (double)rt_cut_lat_bounds_us[b] / 1000.0;
    }
    /* the overflow bucket: past the last bound (as rt_cut_p99_ms says it) */
    return (double)rt_cut_lat_bounds_us[RT_CUT_LAT_BUCKETS - 1] / 1000.0 * 1.35;
}

void gw_dash_domain(const char *route_id, char *out, size_t n)
{
    if (n == 0)
        return;
    size_t k = strcspn(route_id, ".-");
    if (k == 0)
        k = strlen(route_id); /* "-x": no prefix to speak of, the id itself */
    if (k >= n)
        k = n - 1;
    memcpy(out, route_id, k);
    out[k] = '\0';
}

double gw_dash_new_share(const rt_route *r, const char *legacy)
{
    if (r->n_split == 0 || r->split_total == 0)
        return strcmp(r->upstream, legacy) != 0 ? 100.0 : 0.0;
    uint64_t w = 0;
    for (int k = 0; k < r->n_split; k++)
        if (strcmp(r->split[k].upstream, legacy) != 0)
            w += r->split[k].weight;
    return 100.0 * (double)w / (double)r->split_total;
}
