/* cutover_window.c — see cutover_window.h. */
#include "gateway/cutover_window.h"

#include <string.h>

void gw_cut_window_reset(gw_cut_window *w)
{
    w->n = 0;
    w->head = -1;
}

void gw_cut_window_push(gw_cut_window *w, int64_t at_ms, const rt_cut_side *legacy,
                        const rt_cut_side *target)
{
    if (w->n > 0 && at_ms < w->ring[w->head].at_ms)
        at_ms = w->ring[w->head].at_ms; /* the wall clock stepped back: keep the order */
    w->head = (w->head + 1) % GW_CUT_RING;
    if (w->n < GW_CUT_RING)
        w->n++;
    gw_cut_snapshot *s = &w->ring[w->head];
    s->at_ms = at_ms;
    s->legacy = *legacy;
    s->target = *target;
}

/* The i-th snapshot counted from the oldest. */
static const gw_cut_snapshot *nth(const gw_cut_window *w, int i)
{
    int oldest = (w->head - w->n + 1 + GW_CUT_RING) % GW_CUT_RING;
    return &w->ring[(oldest + i) % GW_CUT_RING];
}

int gw_cut_window_evidence(const gw_cut_window *w, int64_t from_ms, rt_cut_evidence *out)
{
    memset(out, 0, sizeof *out);
    if (w->n == 0 || w->ring[w->head].at_ms < from_ms)
        return -1;
    int lo = 0, hi = w->n - 1; /* the first snapshot at or after from_ms */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (nth(w, mid)->at_ms >= from_ms)
            hi = mid;
        else
            lo = mid + 1;
    }
    const gw_cut_snapshot *a = nth(w, lo), *b = &w->ring[w->head];
    rt_cut_side_sub(&out->legacy, &b->legacy, &a->legacy);
    rt_cut_side_sub(&out->target, &b->target, &a->target);
    out->window_ms = (uint64_t)(b->at_ms - a->at_ms);
    return 0;
}
