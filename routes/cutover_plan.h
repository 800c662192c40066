// cutover_plan.h — progressive cutover plans: the pure part. A plan moves one route from its
// legacy upstream to a target upstream through steps (percent of traffic on the target; 0 =
// shadow copies only), judging each step on windowed counters per side against gates, and
// says what to do: next step, roll back (to the last passed step or all the way), pause for
// a human, or wait for more evidence. No clock, no I/O, no libuv: the caller (the gateway's
// driver, gateway/cutover.c) passes the time, the counters, and applies the route change.
//
// Verdict rules for the step in force (weight W = steps[step]):
//   - the sample is the target's requests (W > 0: answered by it, or replayed from it to the
//     fallback) or its shadow comparisons (W = 0); min_requests of them are needed before any
//     verdict;
//   - with enough sample, any failed gate fails the step at once (no need to wait out the
//     step time: a failing candidate is rolled back as soon as the evidence says so);
//   - the step passes when its min time is over, the sample is enough and no gate fails or
//     still waits (a gate comparing with legacy needs min_requests legacy requests too);
//   - still no verdict after inconclusive_ms in the step: paused (a human decides).
// Gates (a limit < 0 turns a gate off):
//   error_rate      target 5xx (the upstream's and the gateway's 502/504) % <= max_error_rate
//   error_delta     target error % <= legacy error % + max_error_delta (points)
//   p99             target p99 <= max_p99_ms                         (0: off)
//   p99_ratio       target p99 <= max_p99_ratio x legacy p99         (0: off), but never
//                   below legacy p99 + RT_CUT_P99_NOISE_MS: sub-millisecond p99s differ by
//                   large ratios on a warm-up or a scheduler hiccup, which is not a regression
//   mismatch        shadow mismatches % <= max_mismatch              (shadow steps only)
//   fallback_rate   replays to the fallback % <= max_fallback_rate   (W > 0)
// At W = 100 no legacy traffic is left: the gates that compare with legacy do not apply.
#ifndef RT_CUTOVER_PLAN_H
#define RT_CUTOVER_PLAN_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define RT_CUT_LAT_BUCKETS 40        /* latency histogram buckets, plus one overflow */
#define RT_CUT_MAX_STEPS 16
#define RT_CUT_MAX_GATES 6
#define RT_CUT_NAME_MAX 96           /* route ids and upstream names (metrics' key size) */
#define RT_CUT_WINDOW_MAX_MS 300000  /* the sliding window covers at most 5 minutes */
#define RT_CUT_P99_NOISE_MS 5.0      /* p99_ratio: a difference below this always passes */

/* Upper bounds of the latency buckets, microseconds: 50 us x 1.35^k (50 us .. ~6 s), so a
 * p99 read from them is at most 35 % above the true one, the same on both sides. */
extern const uint64_t rt_cut_lat_bounds_us[RT_CUT_LAT_BUCKETS];
int rt_cut_lat_bucket(uint64_t us);

/* One side's counters (cumulative, or a difference of two cumulative snapshots). */
typedef struct rt_cut_side {
    uint64_t requests;           /* answered by this side (errors included) */
    uint64_t errors;             /* 5xx among them */
    uint64_t fallbacks;          /* failed on this side and replayed to the fallback */
    uint64_t shadow_compared;    /* as the shadow target */
    uint64_t shadow_mismatched;
    uint64_t lat[RT_CUT_LAT_BUCKETS + 1];
} rt_cut_side;

void rt_cut_side_add(rt_cut_side *acc, const rt_cut_side *x);
/* OUT = NOW - THEN, each counter floored at 0 (THEN from before a restart never exceeds). */
void rt_cut_side_sub(rt_cut_side *out, const rt_cut_side *now, const rt_cut_side *then);
/* The 99th percentile in ms (the bucket's upper bound), or -1 without samples. */
double rt_cut_p99_ms(const rt_cut_side *s);

typedef struct rt_cut_evidence {
    rt_cut_side legacy, target;
    uint64_t window_ms;          /* the time the counters cover */
} rt_cut_evidence;

typedef struct rt_cut_gates {
    double max_error_rate;       /* %; default 1 */
    double max_error_delta;      /* points over legacy; default 0.5 */
    double max_p99_ms;           /* default 0 (off) */
    double max_p99_ratio;        /* default 1.5 */
    double max_mismatch;         /* %; default 0.1 */
    double max_fallback_rate;    /* %; default 5 */
} rt_cut_gates;

typedef enum rt_cut_state {
    RT_CUT_RUNNING, RT_CUT_PAUSED, RT_CUT_COMPLETED, RT_CUT_ROLLED_BACK, RT_CUT_ABORTED,
} rt_cut_state;

typedef enum rt_cut_rollback { RT_CUT_BACK_STEP, RT_CUT_BACK_ALL } rt_cut_rollback;

typedef enum rt_cut_verdict { RT_CUT_WAIT, RT_CUT_PASS, RT_CUT_FAIL, RT_CUT_PAUSE } rt_cut_verdict;

typedef struct rt_cut_plan {
    char route[RT_CUT_NAME_MAX];
    char legacy[RT_CUT_NAME_MAX];   /* the route's primary when the plan started */
    char target[RT_CUT_NAME_MAX];
    int n_steps;
    uint32_t steps[RT_CUT_MAX_STEPS]; /* 0..100, strictly increasing, the last is 100 */
    uint64_t step_time_ms;        /* minimum time per step; default 30 s */
    uint64_t min_requests;        /* minimum sample per step; default 100 */
    uint64_t window_ms;           /* sliding window; default the step time, 10 s .. 5 min */
    uint64_t inconclusive_ms;     /* no verdict after this long in a step: paused; default
                                     10 x step time */
    rt_cut_rollback rollback;     /* default RT_CUT_BACK_STEP */
    rt_cut_gates gates;
    /* state */
    rt_cut_state state;
    int step;                     /* the step in force; -1: legacy only (rolled back/aborted) */
    int last_passed;              /* highest passed step below `step`, -1 none */
    int64_t step_started_ms;      /* wall clock, ms since the epoch */
    int64_t created_ms, updated_ms;
    char who[64];                 /* who started it */
    char reason[512];             /* why the last transition */
} rt_cut_plan;

typedef enum rt_cut_gate_result { RT_GATE_PASS, RT_GATE_FAIL, RT_GATE_WAIT, RT_GATE_NA } rt_cut_gate_result;

typedef struct rt_cut_gate_eval {
    const char *name;             /* "error_rate", ... (static) */
    rt_cut_gate_result result;
    double value;                 /* the target's figure (-1 unknown) */
    double limit;                 /* the limit it was held to (for ratio/delta: absolute) */
    double legacy;                /* legacy's figure for the relative gates, else -1 */
} rt_cut_gate_eval;

typedef struct rt_cut_judgement {
    rt_cut_verdict verdict;
    int weight;                   /* of the step judged, -1 none */
    uint64_t sample, needed;      /* the target's sample and min_requests */
    uint64_t legacy_requests;
    uint64_t elapsed_ms, step_time_ms;
    int n_gates;
    rt_cut_gate_eval gates[RT_CUT_MAX_GATES];
    char reason[320];
} rt_cut_judgement;

/* What the caller must do to the route after a transition. */
typedef struct rt_cut_action {
    int change;                   /* 1: put the route at `weight` */
    int weight;                   /* -1 legacy only, 0 shadow, 1..99 split, 100 target */
    const char *verb;             /* "start", "advance", "rollback", "pause", "resume",
                                     "promote", "abort", "complete" (static) */
} rt_cut_action;

/* Defaults for a new plan of ROUTE from LEGACY to TARGET. */
void rt_cut_plan_defaults(rt_cut_plan *p, const char *route, const char *legacy,
                          const char *target);
/* Reads a plan from JSON. SPEC (POST /admin/cutovers): "route", "target" required; "steps",
 * "step_time_ms", "min_requests", "window_ms", "inconclusive_ms", "rollback" ("step"|"all"),
 * "gates": {...} optional, over the defaults; "legacy" is the caller's (LEGACY). With
 * STORED, the state members written by rt_cut_plan_to_json are read too. Returns 0, or -1
 * with err as "json.path: reason" (e.g. "steps[2]: must be above 5"). Unknown members are
 * refused. */
int rt_cut_plan_from_json(rt_cut_plan *p, const json_t *j, const char *legacy, int stored,
                          char *err, size_t errlen);
/* The plan as JSON (config and state), new reference or NULL. */
json_t *rt_cut_plan_to_json(const rt_cut_plan *p);

/* Judges the step in force at NOW_MS on E. Paused and ended plans get RT_CUT_PAUSE / WAIT
 * with the gates evaluated all the same (for display). */
void rt_cut_judge(const rt_cut_plan *p, const rt_cut_evidence *e, int64_t now_ms,
                  rt_cut_judgement *out);
json_t *rt_cut_judgement_to_json(const rt_cut_judgement *j);
json_t *rt_cut_side_to_json(const rt_cut_side *s);

/* Applies J's verdict to a running plan: pass -> next step (or completed after the last),
 * fail -> rollback (step mode: to the last passed step, then paused; all, or nothing passed:
 * legacy only, rolled back), pause -> paused. Returns 1 with ACT when the plan changed. */
int rt_cut_apply_verdict(rt_cut_plan *p, const rt_cut_judgement *j, int64_t now_ms,
                         rt_cut_action *act);

/* Operator commands: "pause", "resume", "promote", "abort". Returns 0 with ACT, -1 for an
 * unknown command, -2 when the plan's state does not allow it (err says why: 409). */
int rt_cut_command(rt_cut_plan *p, const char *cmd, const char *who, int64_t now_ms,
                   rt_cut_action *act, char *err, size_t errlen);
/* The state of a just started plan: step 0 in force from NOW_MS. */
void rt_cut_begin(rt_cut_plan *p, const char *who, int64_t now_ms, rt_cut_action *act);

/* The weight in force: steps[step], or -1 at legacy only. */
int rt_cut_weight(const rt_cut_plan *p);
int rt_cut_active(const rt_cut_plan *p); /* running or paused */
/* The sliding window: window_ms, or the step time but at least 10 s; 1 s .. 5 min. */
uint64_t rt_cut_window_ms(const rt_cut_plan *p);
const char *rt_cut_state_name(rt_cut_state s);
const char *rt_cut_verdict_name(rt_cut_verdict v);

#endif
