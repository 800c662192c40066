/* cutover_window.h — the sliding window of a cutover plan's evidence: one snapshot of the
 * cumulative per-side counters (gw_metrics_side_read) a second, and the difference between
 * the newest and the oldest one inside the window. Exact counts, no sampling: the window's
 * edges are whole snapshots. Pure (no loop, no clock): the driver passes the times. */
#ifndef GW_CUTOVER_WINDOW_H
#define GW_CUTOVER_WINDOW_H

#include <stdint.h>

#include "routes/cutover_plan.h"

/* one a second over the longest window, plus the snapshots taken at step changes */
#define GW_CUT_RING (RT_CUT_WINDOW_MAX_MS / 1000 + 32)

typedef struct gw_cut_snapshot {
    int64_t at_ms;
    rt_cut_side legacy, target;
} gw_cut_snapshot;

typedef struct gw_cut_window {
    int n;                         /* snapshots held, up to GW_CUT_RING */
    int head;                      /* index of the newest */
    gw_cut_snapshot ring[GW_CUT_RING];
} gw_cut_window;

void gw_cut_window_reset(gw_cut_window *w);
/* Adds a snapshot taken at AT_MS (not before the newest one), dropping the oldest if full. */
void gw_cut_window_push(gw_cut_window *w, int64_t at_ms, const rt_cut_side *legacy,
                        const rt_cut_side *target);
/* The counters between the oldest snapshot taken at or after FROM_MS and the newest one, and
 * the time between them. Returns 0, or -1 (OUT zeroed) when no snapshot is that recent. */
int gw_cut_window_evidence(const gw_cut_window *w, int64_t from_ms, rt_cut_evidence *out);

#endif
