/* cutover_plan.c — plan model, JSON, verdicts and transitions (see cutover_plan.h). */
#include "routes/cutover_plan.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const uint64_t rt_cut_lat_bounds_us[RT_CUT_LAT_BUCKETS] = {
    50, 68, 91, 123, 166, 224, 302, 408, 551, 744, 1004, 1356, 1830, 2471, 3336, 4503, 6080,
    8208, 11080, 14958, 20193, 27261, 36802, 49683, 67072, 90547, 122238, 165022, 222780,
    300753, 406016, 548122, 739965, 998953, 1348586, 1820591, 2457798, 3318027, 4479336,
    6047104,
};

int rt_cut_lat_bucket(uint64_t us)
{
    int lo = 0, hi = RT_CUT_LAT_BUCKETS; /* first bound >= us, or the overflow bucket */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (rt_cut_lat_bounds_us[mid] >= us)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static void errf(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ---- counters ------------------------------------------------------------------------ */

void rt_cut_side_add(rt_cut_side *acc, const rt_cut_side *x)
{
    acc->requests += x->requests;
    acc->errors += x->errors;
    acc->fallbacks += x->fallbacks;
    acc->shadow_compared += x->shadow_compared;
    acc->shadow_mismatched += x->shadow_mismatched;
    for (int i = 0; i <= RT_CUT_LAT_BUCKETS; i++)
        acc->lat[i] += x->lat[i];
}

static uint64_t sub0(uint64_t a, uint64_t b)
{
    return a > b ? a - b : 0;
}

void rt_cut_side_sub(rt_cut_side *out, const rt_cut_side *now, const rt_cut_side *then)
{
    out->requests = sub0(now->requests, then->requests);
    out->errors = sub0(now->errors, then->errors);
    out->fallbacks = sub0(now->fallbacks, then->fallbacks);
    out->shadow_compared = sub0(now->shadow_compared, then->shadow_compared);
    out->shadow_mismatched = sub0(now->shadow_mismatched, then->shadow_mismatched);
    for (int i = 0; i <= RT_CUT_LAT_BUCKETS; i++)
        out->lat[i] = sub0(now->lat[i], then->lat[i]);
}

double rt_cut_p99_ms(const rt_cut_side *s)
{
    uint64_t n = 0;
    for (int i = 0; i <= RT_CUT_LAT_BUCKETS; i++)
        n += s->lat[i];
    if (n == 0)
        return -1;
    /* the smallest bucket bound with at least 99 % of the samples at or below it */
    uint64_t want = n - n / 100, seen = 0;
    for (int i = 0; i < RT_CUT_LAT_BUCKETS; i++) {
        seen += s->lat[i];
        if (seen >= want)
            return (double)rt_cut_lat_bounds_us[i] / 1000.0;
    }
    return (double)rt_cut_lat_bounds_us[RT_CUT_LAT_BUCKETS - 1] / 1000.0 * 1.35;
}

static double pct(uint64_t part, uint64_t whole)
{
    return whole ? 100.0 * (double)part / (double)whole : 0.0;
}

/* ---- names --------------------------------------------------------------------------- */

const char *rt_cut_state_name(rt_cut_state s)
{
    static const char *const n[] = { "running", "paused", "completed", "rolled_back", "aborted" };
    return (unsigned)s < sizeof n / sizeof n[0] ? n[s] : "unknown";
}

const char *rt_cut_verdict_name(rt_cut_verdict v)
{
    static const char *const n[] = { "wait", "pass", "fail", "paused" };
    return (unsigned)v < sizeof n / sizeof n[0] ? n[v] : "unknown";
}

static const char *gate_result_name(rt_cut_gate_result r)
{
    static const char *const n[] = { "pass", "fail", "wait", "n/a" };
    return (unsigned)r < sizeof n / sizeof n[0] ? n[r] : "unknown";
}

int rt_cut_weight(const rt_cut_plan *p)
{
    return p->step >= 0 && p->step < p->n_steps ? (int)p->steps[p->step] : -1;
}

int rt_cut_active(const rt_cut_plan *p)
{
    return p->state == RT_CUT_RUNNING || p->state == RT_CUT_PAUSED;
}

/* ---- plan and JSON ------------------------------------------------------------------- */

static void copy_name(char *dst, const char *src)
{
    snprintf(dst, RT_CUT_NAME_MAX, "%s", src ? src : "");
}

void rt_cut_plan_defaults(rt_cut_plan *p, const char *route, const char *legacy,
                          const char *target)
{
    static const uint32_t steps[] = { 0, 1, 5, 25, 50, 100 };
    memset(p, 0, sizeof *p);
    copy_name(p->route, route);
    copy_name(p->legacy, legacy);
    copy_name(p->target, target);
    p->n_steps = (int)(sizeof steps / sizeof steps[0]);
    memcpy(p->steps, steps, sizeof steps);
    p->step_time_ms = 30000;
    p->min_requests = 100;
    p->window_ms = 0;        /* 0: derived from the step time */
    p->inconclusive_ms = 0;  /* 0: derived from the step time */
    p->rollback = RT_CUT_BACK_STEP;
    p->gates = (rt_cut_gates){ .max_error_rate = 1, .max_error_delta = 0.5, .max_p99_ms = 0,
                               .max_p99_ratio = 1.5, .max_mismatch = 0.1,
                               .max_fallback_rate = 5 };
    p->state = RT_CUT_RUNNING;
    p->step = 0;
    p->last_passed = -1;
}

uint64_t rt_cut_window_ms(const rt_cut_plan *p)
{
    /* by default the step's own time, and never under 10 s: a short step is judged on all of
     * its evidence (the window starts no earlier than the step), a long one on the latest */
    uint64_t w = p->window_ms ? p->window_ms : p->step_time_ms < 10000 ? 10000 : p->step_time_ms;
    return w > RT_CUT_WINDOW_MAX_MS ? RT_CUT_WINDOW_MAX_MS : w < 1000 ? 1000 : w;
}

static uint64_t inconclusive_of(const rt_cut_plan *p)
{
    return p->inconclusive_ms ? p->inconclusive_ms : 10 * p->step_time_ms;
}

static int get_u64(const json_t *o, const char *key, uint64_t min, uint64_t max, uint64_t *out,
                   char *err, size_t errlen)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < (json_int_t)min ||
        (uint64_t)json_integer_value(v) > max) {
        errf(err, errlen, "%s: must be an integer from %llu to %llu", key,
             (unsigned long long)min, (unsigned long long)max);
        return -1;
    }
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int get_name(const json_t *o, const char *key, char *dst, int required, char *err,
                    size_t errlen)
{
    json_t *v = json_object_get(o, key);
    if (!v) {
        if (required) {
            errf(err, errlen, "%s: missing", key);
            return -1;
        }
        return 0;
    }
    const char *s = json_string_value(v);
    if (!s || !s[0] || strlen(s) >= RT_CUT_NAME_MAX) {
        errf(err, errlen, "%s: must be a non-empty string of at most %d bytes", key,
             RT_CUT_NAME_MAX - 1);
        return -1;
    }
    copy_name(dst, s);
    return 0;
}

static const char *const gate_keys[] = { "max_error_rate", "max_error_delta", "max_p99_ms",
                                         "max_p99_ratio", "max_mismatch", "max_fallback_rate" };

static double *gate_field(rt_cut_gates *g, int i)
{
    double *f[] = { &g->max_error_rate, &g->max_error_delta, &g->max_p99_ms, &g->max_p99_ratio,
                    &g->max_mismatch, &g->max_fallback_rate };
    return f[i];
}

static int parse_gates(rt_cut_gates *g, const json_t *j, char *err, size_t errlen)
{
    if (!json_is_object(j)) {
        errf(err, errlen, "gates: must be an object");
        return -1;
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)j, key, v) {
        int i = 0;
        while (i < 6 && strcmp(key, gate_keys[i]) != 0)
            i++;
        if (i == 6) {
            errf(err, errlen, "gates.%.64s: unknown gate (known: max_error_rate, "
                 "max_error_delta, max_p99_ms, max_p99_ratio, max_mismatch, max_fallback_rate)", key);
            return -1;
        }
        if (json_is_null(v)) {
            *gate_field(g, i) = -1; /* off */
            continue;
        }
        double d = json_number_value(v);
        if (!json_is_number(v) || !isfinite(d) || d > 1e9) {
            errf(err, errlen, "gates.%s: must be a number (negative or null: off)", key);
            return -1;
        }
        if ((i == 0 || i == 4 || i == 5) && d > 100) {
            errf(err, errlen, "gates.%s: a percentage, at most 100", key);
            return -1;
        }
        *gate_field(g, i) = d;
    }
    return 0;
}

static int parse_steps(rt_cut_plan *p, const json_t *j, char *err, size_t errlen)
{
    size_t n = json_array_size(j);
    if (!json_is_array(j) || n == 0 || n > RT_CUT_MAX_STEPS) {
        errf(err, errlen, "steps: must be an array of 1 to %d weights", RT_CUT_MAX_STEPS);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(j, i);
        json_int_t w = json_integer_value(v);
        if (!json_is_integer(v) || w < 0 || w > 100) {
            errf(err, errlen, "steps[%zu]: must be an integer from 0 to 100", i);
            return -1;
        }
        if (i > 0 && (uint32_t)w <= p->steps[i - 1]) {
            errf(err, errlen, "steps[%zu]: must be above %u (steps only go up)", i,
                 p->steps[i - 1]);
            return -1;
        }
        p->steps[i] = (uint32_t)w;
    }
    if (p->steps[n - 1] != 100) {
        errf(err, errlen, "steps[%zu]: the last step must be 100", n - 1);
        return -1;
    }
    p->n_steps = (int)n;
    return 0;
}

static int parse_state(const char *s, rt_cut_state *out)
{
    for (int i = RT_CUT_RUNNING; i <= RT_CUT_ABORTED; i++) {
        if (strcmp(s, rt_cut_state_name((rt_cut_state)i)) == 0) {
            *out = (rt_cut_state)i;
            return 0;
        }
    }
    return -1;
}

static int get_i64(const json_t *o, const char *key, int64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (v && json_is_integer(v))
        *out = (int64_t)json_integer_value(v);
    return v && !json_is_integer(v) ? -1 : 0;
}

static int get_text(const json_t *o, const char *key, char *dst, size_t n)
{
    json_t *v = json_object_get(o, key);
    if (v && json_is_string(v))
        snprintf(dst, n, "%s", json_string_value(v));
    return v && !json_is_string(v) ? -1 : 0;
}

static int read_state(rt_cut_plan *p, const json_t *j, char *err, size_t errlen)
{
    json_t *st = json_object_get(j, "state");
    if (!json_is_string(st) || parse_state(json_string_value(st), &p->state) != 0) {
        errf(err, errlen, "state: must be one of running, paused, completed, rolled_back, aborted");
        return -1;
    }
    int64_t step = 0, last = -1;
    if (get_i64(j, "step", &step) || get_i64(j, "last_passed", &last) || step < -1 ||
        step >= p->n_steps || last < -1 || last >= p->n_steps) {
        errf(err, errlen, "step: must be an integer from -1 to %d", p->n_steps - 1);
        return -1;
    }
    p->step = (int)step;
    p->last_passed = (int)last;
    if (get_i64(j, "step_started_ms", &p->step_started_ms) ||
        get_i64(j, "created_ms", &p->created_ms) || get_i64(j, "updated_ms", &p->updated_ms) ||
        get_text(j, "who", p->who, sizeof p->who) ||
        get_text(j, "reason", p->reason, sizeof p->reason)) {
        errf(err, errlen, "step_started_ms, created_ms, updated_ms: integers; who, reason: strings");
        return -1;
    }
    return 0;
}

int rt_cut_plan_from_json(rt_cut_plan *p, const json_t *j, const char *legacy, int stored,
                          char *err, size_t errlen)
{
    static const char *const spec_keys[] = {
        "route", "target", "legacy", "steps", "step_time_ms", "min_requests", "window_ms",
        "inconclusive_ms", "rollback", "gates", NULL };
    static const char *const state_keys[] = {
        "state", "step", "weight", "last_passed", "step_started_ms", "created_ms",
        "updated_ms", "who", "reason", NULL };
    if (!json_is_object(j)) {
        errf(err, errlen, "must be an object");
        return -1;
    }
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)j, key, v) {
        int known = 0;
        for (int i = 0; spec_keys[i] && !known; i++)
            known = strcmp(key, spec_keys[i]) == 0;
        for (int i = 0; stored && state_keys[i] && !known; i++)
            known = strcmp(key, state_keys[i]) == 0;
        if (!known || (!stored && strcmp(key, "legacy") == 0)) {
            errf(err, errlen, "%.64s: unknown member", key);
            return -1;
        }
    }
    rt_cut_plan_defaults(p, NULL, legacy, NULL);
    if (get_name(j, "route", p->route, 1, err, errlen) ||
        get_name(j, "target", p->target, 1, err, errlen) ||
        (stored && get_name(j, "legacy", p->legacy, 1, err, errlen)))
        return -1;
    if (!p->legacy[0]) {
        errf(err, errlen, "legacy: unknown");
        return -1;
    }
    if (strcmp(p->legacy, p->target) == 0) {
        errf(err, errlen, "target: \"%s\" already answers the route", p->target);
        return -1;
    }
    json_t *steps = json_object_get(j, "steps");
    if (steps && parse_steps(p, steps, err, errlen))
        return -1;
    if (get_u64(j, "step_time_ms", 100, 86400000, &p->step_time_ms, err, errlen) ||
        get_u64(j, "min_requests", 1, 100000000, &p->min_requests, err, errlen) ||
        get_u64(j, "window_ms", 1000, RT_CUT_WINDOW_MAX_MS, &p->window_ms, err, errlen) ||
        get_u64(j, "inconclusive_ms", 100, 864000000, &p->inconclusive_ms, err, errlen))
        return -1;
    json_t *rb = json_object_get(j, "rollback");
    if (rb) {
        const char *s = json_string_value(rb);
        if (s && strcmp(s, "step") == 0)
            p->rollback = RT_CUT_BACK_STEP;
        else if (s && strcmp(s, "all") == 0)
            p->rollback = RT_CUT_BACK_ALL;
        else {
            errf(err, errlen, "rollback: must be \"step\" (to the last passed step) or \"all\"");
            return -1;
        }
    }
    json_t *gates = json_object_get(j, "gates");
    if (gates && parse_gates(&p->gates, gates, err, errlen))
        return -1;
    if (stored && read_state(p, j, err, errlen))
        return -1;
    return 0;
}

static json_t *gate_value(double d)
{
    return d < 0 ? json_null() : json_real(d);
}

json_t *rt_cut_plan_to_json(const rt_cut_plan *p)
{
    json_t *steps = json_array(), *gates = json_object();
    for (int i = 0; i < p->n_steps; i++)
        json_array_append_new(steps, json_integer(p->steps[i]));
    rt_cut_gates g = p->gates;
    for (int i = 0; i < 6; i++)
        json_object_set_new(gates, gate_keys[i], gate_value(*gate_field(&g, i)));
    return json_pack("{s:s, s:s, s:s, s:o, s:I, s:I, s:I, s:I, s:s, s:o, s:s, s:i, s:i, s:i,"
                     " s:I, s:I, s:I, s:s, s:s}",
                     "route", p->route, "legacy", p->legacy, "target", p->target,
                     "steps", steps, "step_time_ms", (json_int_t)p->step_time_ms,
                     "min_requests", (json_int_t)p->min_requests,
                     "window_ms", (json_int_t)rt_cut_window_ms(p),
                     "inconclusive_ms", (json_int_t)inconclusive_of(p),
                     "rollback", p->rollback == RT_CUT_BACK_ALL ? "all" : "step",
                     "gates", gates, "state", rt_cut_state_name(p->state), "step", p->step,
                     "weight", rt_cut_weight(p), "last_passed", p->last_passed,
                     "step_started_ms", (json_int_t)p->step_started_ms,
                     "created_ms", (json_int_t)p->created_ms,
                     "updated_ms", (json_int_t)p->updated_ms, "who", p->who,
                     "reason", p->reason);
}

/* ---- verdicts ------------------------------------------------------------------------ */

static rt_cut_gate_eval *add_gate(rt_cut_judgement *j, const char *name)
{
    rt_cut_gate_eval *g = &j->gates[j->n_gates++];
    *g = (rt_cut_gate_eval){ name, RT_GATE_NA, -1, -1, -1 };
    return g;
}

/* A gate VALUE <= LIMIT, decided only with ENOUGH evidence; off when LIMIT_SET is 0. */
static void decide(rt_cut_gate_eval *g, int limit_set, int enough, double value, double limit)
{
    g->value = value;
    if (!limit_set) {
        g->result = RT_GATE_NA;
        return;
    }
    g->limit = limit;
    g->result = !enough ? RT_GATE_WAIT : value > limit + 1e-9 ? RT_GATE_FAIL : RT_GATE_PASS;
}

static const char *unit_of(const char *gate)
{
    return strstr(gate, "p99") ? " ms" : " %";
}

void rt_cut_judge(const rt_cut_plan *p, const rt_cut_evidence *e, int64_t now_ms,
                  rt_cut_judgement *out)
{
    memset(out, 0, sizeof *out);
    int w = rt_cut_weight(p);
    out->weight = w;
    out->needed = p->min_requests;
    out->step_time_ms = p->step_time_ms;
    out->elapsed_ms = now_ms > p->step_started_ms ? (uint64_t)(now_ms - p->step_started_ms) : 0;
    const rt_cut_side *t = &e->target, *l = &e->legacy;
    out->legacy_requests = l->requests;
    if (w < 0) {
        out->verdict = RT_CUT_WAIT;
        snprintf(out->reason, sizeof out->reason, "plan %s: legacy only", rt_cut_state_name(p->state));
        return;
    }
    const rt_cut_gates *gt = &p->gates;
    if (w == 0) {
        out->sample = t->shadow_compared;
        int enough = out->sample >= p->min_requests;
        decide(add_gate(out, "mismatch"), gt->max_mismatch >= 0, enough,
               pct(t->shadow_mismatched, t->shadow_compared), gt->max_mismatch);
    } else {
        uint64_t routed = t->requests + t->fallbacks;
        out->sample = routed;
        int enough = routed >= p->min_requests;
        /* relative gates need legacy evidence too; at 100 % there is none to compare with */
        int legacy_ok = l->requests >= p->min_requests;
        int relative = w < 100;
        double terr = pct(t->errors, t->requests), lerr = pct(l->errors, l->requests);
        double tp99 = rt_cut_p99_ms(t), lp99 = rt_cut_p99_ms(l);
        decide(add_gate(out, "error_rate"), gt->max_error_rate >= 0, enough, terr,
               gt->max_error_rate);
        rt_cut_gate_eval *g = add_gate(out, "error_delta");
        decide(g, relative && gt->max_error_delta >= 0, enough && legacy_ok, terr,
               lerr + gt->max_error_delta);
        g->legacy = relative ? lerr : -1;
        decide(add_gate(out, "p99"), gt->max_p99_ms > 0, enough, tp99, gt->max_p99_ms);
        g = add_gate(out, "p99_ratio");
        double ratio_limit = lp99 * gt->max_p99_ratio;
        if (ratio_limit < lp99 + RT_CUT_P99_NOISE_MS)
            ratio_limit = lp99 + RT_CUT_P99_NOISE_MS;
        decide(g, relative && gt->max_p99_ratio > 0, enough && legacy_ok && lp99 >= 0, tp99,
               ratio_limit);
        g->legacy = relative ? lp99 : -1;
        decide(add_gate(out, "fallback_rate"), gt->max_fallback_rate >= 0, enough,
               pct(t->fallbacks, routed), gt->max_fallback_rate);
    }
    const rt_cut_gate_eval *failed = NULL;
    int waiting = 0;
    for (int i = 0; i < out->n_gates; i++) {
        if (out->gates[i].result == RT_GATE_FAIL && !failed)
            failed = &out->gates[i];
        waiting |= out->gates[i].result == RT_GATE_WAIT;
    }
    const char *what = w == 0 ? "shadow comparisons" : "requests";
    if (failed) {
        out->verdict = RT_CUT_FAIL;
        snprintf(out->reason, sizeof out->reason,
                 "step %d (%d %%): gate %s failed: %.3g%s > %.3g%s over %llu %s", p->step, w,
                 failed->name, failed->value, unit_of(failed->name), failed->limit,
                 unit_of(failed->name), (unsigned long long)out->sample, what);
    } else if (out->elapsed_ms >= p->step_time_ms && out->sample >= p->min_requests && !waiting) {
        out->verdict = RT_CUT_PASS;
        snprintf(out->reason, sizeof out->reason,
                 "step %d (%d %%): every gate passed over %llu %s in %.1f s", p->step, w,
                 (unsigned long long)out->sample, what, (double)out->elapsed_ms / 1000.0);
    } else if (out->elapsed_ms >= inconclusive_of(p)) {
        out->verdict = RT_CUT_PAUSE;
        snprintf(out->reason, sizeof out->reason,
                 "step %d (%d %%): inconclusive after %.1f s: %llu of %llu %s on %s%s", p->step,
                 w, (double)out->elapsed_ms / 1000.0, (unsigned long long)out->sample,
                 (unsigned long long)p->min_requests, what, p->target,
                 waiting && out->sample >= p->min_requests ? ", too little legacy traffic to compare" : "");
    } else {
        out->verdict = RT_CUT_WAIT;
        snprintf(out->reason, sizeof out->reason, "step %d (%d %%): %llu of %llu %s, %.1f of %.1f s",
                 p->step, w, (unsigned long long)out->sample, (unsigned long long)p->min_requests,
                 what, (double)out->elapsed_ms / 1000.0, (double)p->step_time_ms / 1000.0);
    }
    if (p->state == RT_CUT_PAUSED)
        out->verdict = RT_CUT_PAUSE; /* not judged while paused: the gates are only shown */
}

static json_t *num_or_null(double d)
{
    return d < 0 ? json_null() : json_real(d);
}

json_t *rt_cut_judgement_to_json(const rt_cut_judgement *j)
{
    json_t *gates = json_array();
    for (int i = 0; i < j->n_gates; i++) {
        const rt_cut_gate_eval *g = &j->gates[i];
        json_array_append_new(gates, json_pack("{s:s, s:s, s:o, s:o, s:o}", "gate", g->name,
                                               "result", gate_result_name(g->result),
                                               "value", num_or_null(g->value),
                                               "limit", num_or_null(g->limit),
                                               "legacy", num_or_null(g->legacy)));
    }
    return json_pack("{s:s, s:i, s:I, s:I, s:I, s:I, s:I, s:o, s:s}",
                     "verdict", rt_cut_verdict_name(j->verdict), "weight", j->weight,
                     "sample", (json_int_t)j->sample, "needed", (json_int_t)j->needed,
                     "legacy_requests", (json_int_t)j->legacy_requests,
                     "elapsed_ms", (json_int_t)j->elapsed_ms,
                     "step_time_ms", (json_int_t)j->step_time_ms, "gates", gates,
                     "reason", j->reason);
}

json_t *rt_cut_side_to_json(const rt_cut_side *s)
{
    return json_pack("{s:I, s:I, s:f, s:o, s:I, s:f, s:I, s:I, s:f}",
                     "requests", (json_int_t)s->requests, "errors", (json_int_t)s->errors,
                     "error_rate", pct(s->errors, s->requests),
                     "p99_ms", num_or_null(rt_cut_p99_ms(s)),
                     "fallbacks", (json_int_t)s->fallbacks,
                     "fallback_rate", pct(s->fallbacks, s->requests + s->fallbacks),
                     "shadow_compared", (json_int_t)s->shadow_compared,
                     "shadow_mismatched", (json_int_t)s->shadow_mismatched,
                     "mismatch_rate", pct(s->shadow_mismatched, s->shadow_compared));
}

/* ---- transitions --------------------------------------------------------------------- */

static void enter(rt_cut_plan *p, int step, rt_cut_state state, int64_t now_ms)
{
    if (step != p->step)
        p->step_started_ms = now_ms;
    p->step = step;
    p->state = state;
    p->updated_ms = now_ms;
}

int rt_cut_apply_verdict(rt_cut_plan *p, const rt_cut_judgement *j, int64_t now_ms,
                         rt_cut_action *act)
{
    *act = (rt_cut_action){ 0, rt_cut_weight(p), NULL };
    if (p->state != RT_CUT_RUNNING || p->step < 0)
        return 0;
    switch (j->verdict) {
    case RT_CUT_PASS:
        if (p->step == p->n_steps - 1) {
            enter(p, p->step, RT_CUT_COMPLETED, now_ms);
            snprintf(p->reason, sizeof p->reason, "%.320s; completed: %s answers", j->reason, p->target);
            act->verb = "complete";
            return 1;
        }
        p->last_passed = p->step;
        enter(p, p->step + 1, RT_CUT_RUNNING, now_ms);
        snprintf(p->reason, sizeof p->reason, "%.320s; step %d (%u %%) next", j->reason, p->step,
                 p->steps[p->step]);
        *act = (rt_cut_action){ 1, rt_cut_weight(p), "advance" };
        return 1;
    case RT_CUT_FAIL:
        if (p->rollback == RT_CUT_BACK_STEP && p->last_passed >= 0) {
            int back = p->last_passed;
            p->last_passed = back - 1; /* the step gone back to is judged again on resume */
            enter(p, back, RT_CUT_PAUSED, now_ms);
            snprintf(p->reason, sizeof p->reason, "%.320s; rolled back to step %d (%u %%), paused",
                     j->reason, back, p->steps[back]);
        } else {
            p->last_passed = -1;
            enter(p, -1, RT_CUT_ROLLED_BACK, now_ms);
            snprintf(p->reason, sizeof p->reason, "%.320s; rolled back to %s", j->reason, p->legacy);
        }
        *act = (rt_cut_action){ 1, rt_cut_weight(p), "rollback" };
        return 1;
    case RT_CUT_PAUSE:
        enter(p, p->step, RT_CUT_PAUSED, now_ms);
        snprintf(p->reason, sizeof p->reason, "%.320s; paused", j->reason);
        act->verb = "pause";
        return 1;
    case RT_CUT_WAIT:
        break;
    }
    return 0;
}

void rt_cut_begin(rt_cut_plan *p, const char *who, int64_t now_ms, rt_cut_action *act)
{
    p->state = RT_CUT_RUNNING;
    p->step = 0;
    p->last_passed = -1;
    p->step_started_ms = p->created_ms = p->updated_ms = now_ms;
    snprintf(p->who, sizeof p->who, "%s", who ? who : "");
    snprintf(p->reason, sizeof p->reason, "started by %s: step 0 (%u %%)", p->who, p->steps[0]);
    *act = (rt_cut_action){ 1, rt_cut_weight(p), "start" };
}

int rt_cut_command(rt_cut_plan *p, const char *cmd, const char *who, int64_t now_ms,
                   rt_cut_action *act, char *err, size_t errlen)
{
    *act = (rt_cut_action){ 0, rt_cut_weight(p), NULL };
    int pause = strcmp(cmd, "pause") == 0, resume = strcmp(cmd, "resume") == 0;
    int promote = strcmp(cmd, "promote") == 0, abort_ = strcmp(cmd, "abort") == 0;
    if (!pause && !resume && !promote && !abort_) {
        errf(err, errlen, "unknown command \"%.32s\" (pause, resume, promote, abort)", cmd);
        return -1;
    }
    const char *st = rt_cut_state_name(p->state);
    if ((pause && p->state != RT_CUT_RUNNING) || (resume && p->state != RT_CUT_PAUSED) ||
        ((promote || abort_) && !rt_cut_active(p))) {
        errf(err, errlen, "cannot %s a plan that is %s", cmd, st);
        return -2;
    }
    who = who ? who : "";
    if (pause) {
        enter(p, p->step, RT_CUT_PAUSED, now_ms);
        snprintf(p->reason, sizeof p->reason, "paused by %s at step %d", who, p->step);
        act->verb = "pause";
    } else if (resume) {
        p->step_started_ms = now_ms; /* fresh evidence: the step is judged again */
        enter(p, p->step, RT_CUT_RUNNING, now_ms);
        snprintf(p->reason, sizeof p->reason, "resumed by %s at step %d", who, p->step);
        act->verb = "resume";
    } else if (promote) {
        enter(p, p->n_steps - 1, RT_CUT_COMPLETED, now_ms);
        snprintf(p->reason, sizeof p->reason, "promoted by %s: %s answers", who, p->target);
        *act = (rt_cut_action){ 1, 100, "promote" };
    } else {
        p->last_passed = -1;
        enter(p, -1, RT_CUT_ABORTED, now_ms);
        snprintf(p->reason, sizeof p->reason, "aborted by %s: back to %s", who, p->legacy);
        *act = (rt_cut_action){ 1, -1, "abort" };
    }
    return 0;
}
