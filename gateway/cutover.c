/* cutover.c — the cutover plans' driver (see cutover.h).
 *
 * A plan slot is either idle (its plan is the committed state) or applying (a route change
 * is queued in the admin API; `pending` is the plan as it will be once the change is in
 * force). Nothing is judged or commanded while applying; a failed change leaves the
 * committed plan as it was (the next tick judges again, so an automatic step is retried),
 * a failed start drops the slot. Every callback still to come (route changes, the sidecar
 * write) is counted in in_flight: the driver's memory goes when the last one returned after
 * gw_cutover_close. */
#include "gateway/cutover.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/cutover_window.h"
#include "gateway/metrics.h"
#include "routes/cutover_plan.h"
#include "routes/route_table.h"
#include "routes/source_file.h"
#include "routes/source_pg.h"

/* pg_advisory_lock key of the instance driving the plans: "gwcutovr" as a big-endian int64 */
#define LOCK_KEY "7455537064250930802"
/* Takes (or, held, re-takes) the lock and reads the plans, in one statement. */
static const char SQL_LOCK_AND_LOAD[] =
    "SELECT pg_try_advisory_lock(" LOCK_KEY ")::text || ' ' || coalesce((SELECT"
    " json_agg(doc ORDER BY route_id)::text FROM gateway_cutover_plans), '[]')";
/* Makes the table the plans in $1 (a JSON array), only while holding the lock: a driver
 * whose session was lost (and whose lock another instance took) cannot clobber them. */
static const char SQL_SAVE[] =
    "WITH lock AS (SELECT pg_try_advisory_lock(" LOCK_KEY ") AS ok),"
    " d AS (SELECT value AS doc FROM jsonb_array_elements($1::jsonb)),"
    " del AS (DELETE FROM gateway_cutover_plans WHERE (SELECT ok FROM lock)"
    "         AND route_id NOT IN (SELECT doc ->> 'route' FROM d))"
    " INSERT INTO gateway_cutover_plans (route_id, doc) SELECT doc ->> 'route', doc FROM d, lock"
    " WHERE lock.ok ON CONFLICT (route_id) DO UPDATE SET doc = EXCLUDED.doc, updated_at = now()";

typedef struct plan_slot {
    gw_cutover *c;
    rt_cut_plan plan;          /* committed */
    rt_cut_plan pending;       /* while applying */
    int applying;
    int is_new;                /* applying a start: the slot goes if it fails */
    gw_store_done done;        /* the operator waiting for the change, or NULL */
    void *done_arg;
    gw_cut_window *win;
    rt_cut_judgement judged;   /* the latest judgement, and what it saw */
    rt_cut_evidence evidence;
    gw_mismatch_sample first[GW_CUT_FIRST_MISMATCHES]; /* the first of this step */
    int n_first;
    char last_error[400];
} plan_slot;

struct gw_cutover {
    uv_loop_t *loop;
    gw_admin *admin;
    uv_timer_t timer;
    int timer_open;
    char path[1100];
    plan_slot *plans[GW_CUT_MAX_PLANS];
    int n;
    uint64_t mismatch_seq;     /* the last mismatch example looked at */
    int in_flight;             /* callbacks still to come */
    int writing, dirty;        /* the sidecar write in flight, and another one wanted */
    int closing;
    /* PostgreSQL: plans in gateway_cutover_plans; the instance holding the advisory lock
     * drives them (leader), the others show them */
    rt_pg_source *pg;
    int leader;
    uint64_t lock_session;     /* the session the lock was taken on */
    int pg_busy;               /* the lock-and-load query is in flight */
    char pg_error[300];        /* the last failure of it, logged once */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void gw_cutover_state_path(const gw_config *cfg, char *out, size_t n)
{
    snprintf(out, n, "%s.cutovers.json",
             cfg->routes_source == GW_ROUTES_POSTGRES ? cfg->routes_cache_file : cfg->routes_file);
}

static void slot_free(plan_slot *s)
{
    if (!s)
        return;
    free(s->win);
    free(s);
}

static plan_slot *slot_new(gw_cutover *c)
{
    plan_slot *s = calloc(1, sizeof *s);
    if (s && !(s->win = malloc(sizeof *s->win))) {
        free(s);
        return NULL;
    }
    if (s) {
        s->c = c;
        gw_cut_window_reset(s->win);
    }
    return s;
}

static void remove_slot(gw_cutover *c, plan_slot *s)
{
    for (int i = 0; i < c->n; i++) {
        if (c->plans[i] == s) {
            memmove(&c->plans[i], &c->plans[i + 1], (size_t)(c->n - i - 1) * sizeof c->plans[0]);
            c->n--;
            break;
        }
    }
    slot_free(s);
}

static void maybe_free(gw_cutover *c)
{
    if (!c->closing || c->in_flight > 0 || c->timer_open)
        return;
    for (int i = 0; i < c->n; i++)
        slot_free(c->plans[i]);
    free(c);
}

/* The plan (committed, or being started) for ROUTE. */
static plan_slot *find(gw_cutover *c, const char *route)
{
    for (int i = 0; i < c->n; i++)
        if (strcmp(c->plans[i]->plan.route, route) == 0)
            return c->plans[i];
    return NULL;
}

/* ---- the sidecar file ---------------------------------------------------------------- */

typedef struct state_write {
    uv_work_t work;
    gw_cutover *c;
    json_t *doc;
    int rc;
    char path[1100];
    char err[1200];
} state_write;

static void write_work(uv_work_t *w)
{
    state_write *sw = w->data;
    sw->rc = rt_file_write_atomic(sw->path, sw->doc, sw->err, sizeof sw->err);
}

static void persist(gw_cutover *c);

static void write_done(uv_work_t *w, int status)
{
    state_write *sw = w->data;
    gw_cutover *c = sw->c;
    if (status != 0 || sw->rc != 0)
        fprintf(stderr, "gateway: cutover: cannot save the plans: %s\n",
                status != 0 ? uv_strerror(status) : sw->err);
    json_decref(sw->doc);
    free(sw);
    c->writing = 0;
    c->in_flight--;
    if (c->dirty && !c->closing) {
        c->dirty = 0;
        persist(c);
    }
    maybe_free(c);
}

/* Writes every committed plan to the sidecar, on the threadpool; one write at a time, the
 * latest state always written last. */
static void on_pg_saved(int status, const char *err, const char *value, uint64_t session,
                        void *arg)
{
    gw_cutover *c = arg;
    (void)value;
    (void)session;
    if (status != 0)
        fprintf(stderr, "gateway: cutover: cannot save the plans: %s\n", err ? err : "postgres");
    c->writing = 0;
    c->in_flight--;
    if (c->dirty && !c->closing) {
        c->dirty = 0;
        persist(c);
    }
    maybe_free(c);
}

static void persist(gw_cutover *c)
{
    if (c->writing) {
        c->dirty = 1;
        return;
    }
    if (c->pg && (!c->leader || c->closing))
        return; /* only the driving instance writes; at shutdown the store goes away */
    json_t *list = json_array();
    for (int i = 0; i < c->n; i++)
        if (!c->plans[i]->is_new)
            json_array_append_new(list, rt_cut_plan_to_json(&c->plans[i]->plan));
    if (c->pg) {
        char *text = json_dumps(list, JSON_COMPACT);
        json_decref(list);
        const char *params[1] = { text };
        int r = text ? rt_pg_source_query(c->pg, SQL_SAVE, 1, params, on_pg_saved, c) : UV_ENOMEM;
        free(text);
        if (r != 0) {
            fprintf(stderr, "gateway: cutover: cannot save the plans: %s\n", uv_strerror(r));
            return;
        }
        c->writing = 1;
        c->in_flight++;
        return;
    }
    state_write *sw = calloc(1, sizeof *sw);
    json_t *doc = json_pack("{s:o}", "cutovers", list);
    if (!sw || !doc) {
        free(sw);
        json_decref(doc);
        fprintf(stderr, "gateway: cutover: cannot save the plans: out of memory\n");
        return;
    }
    sw->c = c;
    sw->doc = doc;
    snprintf(sw->path, sizeof sw->path, "%s", c->path);
    sw->work.data = sw;
    c->writing = 1;
    c->in_flight++;
    (void)uv_queue_work(c->loop, &sw->work, write_work, write_done);
}

/* Reads the sidecar into OUT (up to MAX plans); returns the count, or -1 with err. */
static int load_plans(const char *path, rt_cut_plan *out, int max, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0; /* no plans yet */
    json_error_t je;
    json_t *doc = json_loadf(f, JSON_REJECT_DUPLICATES, &je);
    fclose(f);
    if (!doc) {
        snprintf(err, errlen, "%.900s: line %d: %s", path, je.line, je.text);
        return -1;
    }
    json_t *list = json_object_get(doc, "cutovers");
    if (!json_is_array(list) || json_object_size(doc) != 1) {
        snprintf(err, errlen, "%.900s: cutovers: must be the only member, an array", path);
        json_decref(doc);
        return -1;
    }
    if (json_array_size(list) > (size_t)max) {
        snprintf(err, errlen, "%.900s: cutovers: at most %d plans", path, max);
        json_decref(doc);
        return -1;
    }
    size_t i;
    json_t *pj;
    json_array_foreach(list, i, pj) {
        char perr[400];
        if (rt_cut_plan_from_json(&out[i], pj, NULL, 1, perr, sizeof perr) != 0) {
            snprintf(err, errlen, "%.900s: cutovers[%zu].%s", path, i, perr);
            json_decref(doc);
            return -1;
        }
        for (size_t k = 0; k < i; k++) {
            if (strcmp(out[k].route, out[i].route) == 0) {
                snprintf(err, errlen, "%.900s: cutovers[%zu].route: a second plan for \"%s\"",
                         path, i, out[i].route);
                json_decref(doc);
                return -1;
            }
        }
    }
    int n = (int)json_array_size(list);
    json_decref(doc);
    return n;
}

int gw_cutover_check(const char *state_file, char *err, size_t errlen)
{
    rt_cut_plan *plans = malloc(GW_CUT_MAX_PLANS * sizeof *plans);
    if (!plans) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int n = load_plans(state_file, plans, GW_CUT_MAX_PLANS, err, errlen);
    free(plans);
    return n < 0 ? -1 : 0;
}

/* ---- evidence and verdicts ----------------------------------------------------------- */

static void take_sample(gw_cutover *c, plan_slot *s, int64_t now)
{
    rt_cut_side l, t;
    gw_metrics_side_read(c->admin->metrics, c->admin->n_workers, s->plan.route, s->plan.legacy, &l);
    gw_metrics_side_read(c->admin->metrics, c->admin->n_workers, s->plan.route, s->plan.target, &t);
    gw_cut_window_push(s->win, now, &l, &t);
}

static void judge(plan_slot *s, int64_t now)
{
    const rt_cut_plan *p = &s->plan;
    /* the window ends at the latest snapshot (at most a tick old) */
    int64_t newest = s->win->n > 0 ? s->win->ring[s->win->head].at_ms : now;
    int64_t from = newest - (int64_t)rt_cut_window_ms(p);
    if (from < p->step_started_ms)
        from = p->step_started_ms;
    gw_cut_window_evidence(s->win, from, &s->evidence);
    rt_cut_judge(p, &s->evidence, now, &s->judged);
}

/* Whether route R is as step P->step leaves it; else WHY says what differs. */
static int route_in_step(const rt_route *r, const rt_cut_plan *p, char *why, size_t n)
{
    int w = rt_cut_weight(p);
    if (!r) {
        snprintf(why, n, "the route is gone");
        return 0;
    }
    const char *primary = w == 100 ? p->target : p->legacy;
    if (strcmp(r->upstream, primary) != 0) {
        snprintf(why, n, "its upstream is \"%s\", the plan expects \"%s\"", r->upstream, primary);
        return 0;
    }
    if (w > 0 && w < 100) {
        uint32_t lw = 0, tw = 0;
        for (int i = 0; i < r->n_split; i++) {
            if (strcmp(r->split[i].upstream, p->legacy) == 0)
                lw = r->split[i].weight;
            else if (strcmp(r->split[i].upstream, p->target) == 0)
                tw = r->split[i].weight;
            else if (r->split[i].weight > 0)
                lw = tw = UINT32_MAX; /* a third side: not the plan's split */
        }
        if (lw != (uint32_t)(100 - w) || tw != (uint32_t)w) {
            snprintf(why, n, "its split is not %s=%d,%s=%d", p->legacy, 100 - w, p->target, w);
            return 0;
        }
    } else if (r->n_split > 0) {
        snprintf(why, n, "it has a split the plan did not set");
        return 0;
    }
    if (w == 0 && !(r->shadow.upstream && strcmp(r->shadow.upstream, p->target) == 0)) {
        snprintf(why, n, "it no longer shadows to \"%s\"", p->target);
        return 0;
    }
    return 1;
}

static json_t *slot_status(plan_slot *s, int64_t now);

static void log_transition(const plan_slot *s, const rt_cut_plan *p, const char *verb)
{
    fprintf(stderr, "gateway: cutover %s route=%s state=%s step=%d weight=%d: %s\n", verb,
            p->route, rt_cut_state_name(p->state), p->step, rt_cut_weight(p), p->reason);
    (void)s;
}

/* A change of S is in force (or failed with STATUS, ERR). */
static void on_changed(int status, const char *err, void *arg)
{
    plan_slot *s = arg;
    gw_cutover *c = s->c;
    c->in_flight--;
    gw_store_done done = s->done;
    void *done_arg = s->done_arg;
    s->done = NULL;
    s->applying = 0;
    if (status != 0) {
        snprintf(s->last_error, sizeof s->last_error, "route change failed (%d): %s", status,
                 err ? err : "");
        fprintf(stderr, "gateway: cutover route=%s: %s\n", s->plan.route, s->last_error);
        if (s->is_new)
            remove_slot(c, s);
        if (done)
            done(status, err, NULL, done_arg);
        maybe_free(c);
        return;
    }
    int64_t now = now_ms();
    int step_changed = s->is_new || s->pending.step != s->plan.step;
    if (step_changed) {
        s->pending.step_started_ms = now; /* the step counts from when it is in force */
        if (rt_cut_weight(&s->pending) == 0)
            s->n_first = 0; /* a new shadow step: its own first mismatches (kept otherwise:
                               they explain a rollback) */
    }
    s->plan = s->pending;
    s->is_new = 0;
    s->last_error[0] = '\0';
    log_transition(s, &s->plan, "changed");
    if (!c->closing && rt_cut_active(&s->plan)) {
        take_sample(c, s, now); /* the new step's window starts here */
        judge(s, now);
    } /* an ended plan keeps the judgement that ended it */
    persist(c); /* also while closing: the route is changed, the plan must say so */
    if (done) {
        json_t *st = slot_status(s, now);
        done(0, NULL, st, done_arg);
        json_decref(st);
    }
    maybe_free(c);
}

/* Makes NEXT the plan of S: at once when ACT changes no route, else once the route change
 * is in force. DONE (may be NULL) is answered either way. */
static void transition(gw_cutover *c, plan_slot *s, const rt_cut_plan *next,
                       const rt_cut_action *act, gw_store_done done, void *done_arg)
{
    if (!act->change) {
        s->plan = *next;
        log_transition(s, next, act->verb ? act->verb : "update");
        persist(c);
        if (done) {
            json_t *st = slot_status(s, now_ms());
            done(0, NULL, st, done_arg);
            json_decref(st);
        }
        return;
    }
    s->pending = *next;
    s->applying = 1;
    s->done = done;
    s->done_arg = done_arg;
    c->in_flight++;
    char action[32];
    snprintf(action, sizeof action, "cutover-%s", act->verb ? act->verb : "step");
    log_transition(s, next, act->verb ? act->verb : "step");
    gw_admin_cutover_step(c->admin, next->route, next->legacy, next->target, act->weight, action,
                          next->reason, on_changed, s);
}

/* New mismatch examples go to the shadow-step plans they belong to (the first few each). */
static void collect_mismatches(gw_cutover *c)
{
    gw_mismatch_sample got[GW_MISMATCH_RING];
    int n = gw_metrics_mismatches_since(&c->mismatch_seq, got, GW_MISMATCH_RING);
    for (int i = 0; i < n; i++) {
        plan_slot *s = find(c, got[i].route);
        if (!s || s->applying || !rt_cut_active(&s->plan) || rt_cut_weight(&s->plan) != 0 ||
            strcmp(s->plan.target, got[i].upstream) != 0 || got[i].at_ms < s->plan.step_started_ms ||
            s->n_first >= GW_CUT_FIRST_MISMATCHES)
            continue;
        s->first[s->n_first++] = got[i];
    }
}

/* Replaces the plans with those of the store (TEXT: a JSON array), evidence from now. Not
 * while a route change is being applied (the next round adopts them). */
static void adopt_plans(gw_cutover *c, const char *text)
{
    for (int i = 0; i < c->n; i++)
        if (c->plans[i]->applying)
            return;
    json_error_t je;
    json_t *list = json_loads(text, 0, &je);
    if (!json_is_array(list)) {
        fprintf(stderr, "gateway: cutover: postgres: plans: not a JSON array: %s\n", je.text);
        json_decref(list);
        return;
    }
    for (int i = 0; i < c->n; i++)
        slot_free(c->plans[i]);
    c->n = 0;
    int64_t now = now_ms();
    size_t i;
    json_t *pj;
    json_array_foreach(list, i, pj) {
        char err[400];
        plan_slot *s = c->n < GW_CUT_MAX_PLANS ? slot_new(c) : NULL;
        if (!s)
            break;
        if (rt_cut_plan_from_json(&s->plan, pj, NULL, 1, err, sizeof err) != 0) {
            fprintf(stderr, "gateway: cutover: postgres: gateway_cutover_plans[%zu].%s: skipped\n",
                    i, err);
            slot_free(s);
            continue;
        }
        c->plans[c->n++] = s;
        take_sample(c, s, now);
    }
    json_decref(list);
}

static void on_lock_and_load(int status, const char *err, const char *value, uint64_t session,
                             void *arg)
{
    gw_cutover *c = arg;
    c->pg_busy = 0;
    c->in_flight--;
    if (c->closing) {
        maybe_free(c);
        return;
    }
    if (status != 0 || !value) {
        char msg[sizeof c->pg_error];
        snprintf(msg, sizeof msg, "%s", err ? err : "no answer");
        if (strcmp(msg, c->pg_error) != 0)
            fprintf(stderr, "gateway: cutover: plans unavailable: %s%s\n", msg,
                    strstr(msg, "gateway_cutover_plans") ? " (gatewayctl db migrate)" : "");
        snprintf(c->pg_error, sizeof c->pg_error, "%s", msg);
        return;
    }
    c->pg_error[0] = '\0';
    int got = strncmp(value, "true ", 5) == 0;
    const char *plans = strchr(value, ' ');
    if (got && !c->leader) {
        adopt_plans(c, plans ? plans + 1 : "[]");
        c->leader = 1;
        c->lock_session = session;
        fprintf(stderr, "gateway: cutover: this instance drives the plans (advisory lock %s, %d plans)\n",
                LOCK_KEY, c->n);
        for (int i = 0; i < c->n; i++)
            if (rt_cut_active(&c->plans[i]->plan))
                fprintf(stderr, "gateway: cutover resumed route=%s state=%s step=%d weight=%d\n",
                        c->plans[i]->plan.route, rt_cut_state_name(c->plans[i]->plan.state),
                        c->plans[i]->plan.step, rt_cut_weight(&c->plans[i]->plan));
    } else if (!got) {
        adopt_plans(c, plans ? plans + 1 : "[]"); /* another instance drives: show its plans */
    }
}

/* PostgreSQL: keep or take the lock; a lost session lost it. */
static void pg_round(gw_cutover *c)
{
    if (c->leader && rt_pg_source_session(c->pg) != c->lock_session) {
        c->leader = 0;
        fprintf(stderr, "gateway: cutover: the PostgreSQL session was lost: no longer driving the plans\n");
    }
    if (c->leader || c->pg_busy)
        return;
    if (rt_pg_source_query(c->pg, SQL_LOCK_AND_LOAD, 0, NULL, on_lock_and_load, c) == 0) {
        c->pg_busy = 1;
        c->in_flight++;
    }
}

static void on_tick(uv_timer_t *t)
{
    gw_cutover *c = t->data;
    int64_t now = now_ms();
    if (c->pg) {
        pg_round(c);
        if (!c->leader)
            return; /* another instance drives; its plans are shown as read */
    }
    collect_mismatches(c);
    rt_table *table = rt_current_acquire();
    for (int i = 0; i < c->n; i++) {
        plan_slot *s = c->plans[i];
        if (!rt_cut_active(&s->plan) || s->applying)
            continue;
        take_sample(c, s, now);
        judge(s, now);
        if (s->plan.state != RT_CUT_RUNNING)
            continue;
        char why[400];
        rt_cut_plan next = s->plan;
        rt_cut_action act;
        if (table && !route_in_step(rt_table_find(table, s->plan.route), &s->plan, why, sizeof why)) {
            /* someone changed the route by hand: a human is in charge now */
            next.state = RT_CUT_PAUSED;
            next.updated_ms = now;
            snprintf(next.reason, sizeof next.reason,
                     "route changed outside the plan (%.400s): paused at step %d", why, next.step);
            act = (rt_cut_action){ 0, rt_cut_weight(&next), "pause" };
            transition(c, s, &next, &act, NULL, NULL);
            continue;
        }
        if (rt_cut_apply_verdict(&next, &s->judged, now, &act))
            transition(c, s, &next, &act, NULL, NULL);
    }
    if (table)
        rt_table_unref(table);
}

/* ---- reads --------------------------------------------------------------------------- */

static json_t *slot_status(plan_slot *s, int64_t now)
{
    if (rt_cut_active(&s->plan) && !s->applying)
        judge(s, now); /* fresh elapsed time on the latest window */
    json_t *j = rt_cut_plan_to_json(&s->plan);
    if (!j)
        return NULL;
    json_object_set_new(j, "verdict", rt_cut_judgement_to_json(&s->judged));
    json_object_set_new(j, "evidence",
                        json_pack("{s:I, s:o, s:o}", "window_ms", (json_int_t)s->evidence.window_ms,
                                  "legacy", rt_cut_side_to_json(&s->evidence.legacy),
                                  "target", rt_cut_side_to_json(&s->evidence.target)));
    json_t *mm = json_array();
    for (int i = 0; i < s->n_first; i++)
        json_array_append_new(mm, json_pack("{s:I, s:s, s:s}", "at_ms", (json_int_t)s->first[i].at_ms,
                                            "request_id", s->first[i].request_id,
                                            "diff", s->first[i].diff));
    json_object_set_new(j, "first_mismatches", mm);
    json_t *next = json_null();
    if (s->plan.state == RT_CUT_RUNNING) {
        int64_t left = s->plan.step_started_ms + (int64_t)s->plan.step_time_ms - now;
        next = json_integer(left > 0 ? left : 0);
    }
    json_object_set_new(j, "next_verdict_in_ms", next);
    json_object_set_new(j, "applying", json_boolean(s->applying));
    json_object_set_new(j, "driving", json_boolean(!s->c->pg || s->c->leader));
    json_object_set_new(j, "last_error", s->last_error[0] ? json_string(s->last_error) : json_null());
    return j;
}

json_t *gw_cutover_list(gw_cutover *c)
{
    json_t *list = json_array();
    int64_t now = now_ms();
    for (int i = 0; i < c->n; i++)
        if (!c->plans[i]->is_new)
            json_array_append_new(list, slot_status(c->plans[i], now));
    return json_pack("{s:o, s:b, s:s}", "cutovers", list, "driving", !c->pg || c->leader,
                     "store", c->pg ? "postgres" : "file");
}

/* 409 unless this instance drives the plans. */
static int not_driving(gw_cutover *c, gw_store_done done, void *arg)
{
    if (!c->pg || c->leader)
        return 0;
    done(409, "another instance drives the cutover plans (PostgreSQL advisory lock "
              LOCK_KEY "): send this to that instance", NULL, arg);
    return 1;
}

json_t *gw_cutover_status(gw_cutover *c, const char *route)
{
    plan_slot *s = find(c, route);
    return s && !s->is_new ? slot_status(s, now_ms()) : NULL;
}

json_t *gw_cutover_verdict(gw_cutover *c, const char *route)
{
    plan_slot *s = find(c, route);
    if (!s || s->is_new)
        return NULL;
    if (rt_cut_active(&s->plan) && !s->applying)
        judge(s, now_ms());
    json_t *j = rt_cut_judgement_to_json(&s->judged);
    /* an ended plan's verdict is its outcome: completed passes, the others failed */
    const char *v = s->plan.state == RT_CUT_COMPLETED ? "pass"
                    : s->plan.state == RT_CUT_ROLLED_BACK || s->plan.state == RT_CUT_ABORTED ? "fail"
                    : rt_cut_verdict_name(s->judged.verdict);
    json_object_set_new(j, "verdict", json_string(v));
    json_object_set_new(j, "route", json_string(s->plan.route));
    json_object_set_new(j, "target", json_string(s->plan.target));
    json_object_set_new(j, "state", json_string(rt_cut_state_name(s->plan.state)));
    json_object_set_new(j, "step", json_integer(s->plan.step));
    json_object_set_new(j, "weight", json_integer(rt_cut_weight(&s->plan)));
    json_object_set_new(j, "plan_reason", json_string(s->plan.reason));
    return j;
}

int gw_cutover_metrics(gw_cutover *c, char **out, size_t *len)
{
    size_t cap = *len + 1024 + (size_t)c->n * (2 * RT_CUT_NAME_MAX + 96);
    char *p = realloc(*out, cap + 1);
    if (!p)
        return -1;
    *out = p;
    size_t at = *len;
    at += (size_t)snprintf(p + at, cap - at,
                           "# HELP gateway_cutover_plan_weight Percent of the route's traffic a "
                           "cutover plan has on its target (-1: legacy only).\n"
                           "# TYPE gateway_cutover_plan_weight gauge\n");
    for (int i = 0; i < c->n; i++) {
        const rt_cut_plan *pl = &c->plans[i]->plan;
        if (c->plans[i]->is_new)
            continue;
        at += (size_t)snprintf(p + at, cap - at,
                               "gateway_cutover_plan_weight{route=\"%s\",target=\"%s\",state=\"%s\"} %d\n",
                               pl->route, pl->target, rt_cut_state_name(pl->state),
                               rt_cut_weight(pl));
    }
    at += (size_t)snprintf(p + at, cap - at,
                           "# HELP gateway_cutover_driving 1 when this instance drives the cutover plans.\n"
                           "# TYPE gateway_cutover_driving gauge\ngateway_cutover_driving %d\n",
                           !c->pg || c->leader);
    *len = at;
    return 0;
}

/* ---- changes ------------------------------------------------------------------------- */

void gw_cutover_start(gw_cutover *c, const json_t *spec, const char *who, gw_store_done done,
                      void *arg)
{
    char err[600], perr[400];
    if (c->closing) {
        done(503, "shutting down", NULL, arg);
        return;
    }
    if (not_driving(c, done, arg))
        return;
    const char *route = json_string_value(json_object_get(spec, "route"));
    if (!json_is_object(spec) || !route) {
        done(400, !json_is_object(spec) ? "request body: must be a JSON object"
                                        : "request body: route: missing (a string)", NULL, arg);
        return;
    }
    rt_table *t = rt_current_acquire();
    const rt_route *r = t ? rt_table_find(t, route) : NULL;
    if (!r) {
        snprintf(err, sizeof err, "routes: no route \"%.128s\"", route);
        if (t)
            rt_table_unref(t);
        done(404, err, NULL, arg);
        return;
    }
    rt_cut_plan p;
    int bad = rt_cut_plan_from_json(&p, spec, r->upstream, 0, perr, sizeof perr);
    int known = 0;
    for (int i = 0; !bad && i < rt_table_upstream_count(t); i++)
        known |= rt_table_upstream(t, i) && strcmp(rt_table_upstream(t, i), p.target) == 0;
    rt_table_unref(t);
    if (bad || !known) {
        if (bad)
            snprintf(err, sizeof err, "request body: %s", perr);
        else
            snprintf(err, sizeof err, "request body: target: unknown upstream \"%s\"", p.target);
        done(400, err, NULL, arg);
        return;
    }
    plan_slot *old = find(c, route);
    if (old && (old->applying || rt_cut_active(&old->plan))) {
        snprintf(err, sizeof err, "a cutover plan already runs on route \"%.128s\" (%s at step %d)",
                 route, rt_cut_state_name(old->plan.state), old->plan.step);
        done(409, err, NULL, arg);
        return;
    }
    if (old) {
        remove_slot(c, old); /* an ended plan gives way to the new one */
    } else if (c->n == GW_CUT_MAX_PLANS) {
        plan_slot *oldest = NULL; /* make room: the ended plan that ended first goes */
        for (int i = 0; i < c->n; i++) {
            plan_slot *e = c->plans[i];
            if (!rt_cut_active(&e->plan) && !e->applying &&
                (!oldest || e->plan.updated_ms < oldest->plan.updated_ms))
                oldest = e;
        }
        if (!oldest) {
            done(503, "too many cutover plans running", NULL, arg);
            return;
        }
        remove_slot(c, oldest);
    }
    plan_slot *s = slot_new(c);
    if (!s) {
        done(500, "out of memory", NULL, arg);
        return;
    }
    rt_cut_action act;
    rt_cut_begin(&p, who, now_ms(), &act);
    s->plan = p;
    s->is_new = 1;
    c->plans[c->n++] = s;
    transition(c, s, &p, &act, done, arg);
}

void gw_cutover_command(gw_cutover *c, const char *route, const char *cmd, const char *who,
                        gw_store_done done, void *arg)
{
    char err[300];
    plan_slot *s = find(c, route);
    if (c->closing) {
        done(503, "shutting down", NULL, arg);
        return;
    }
    if (!s || s->is_new) {
        snprintf(err, sizeof err, "no cutover plan for route \"%.128s\"", route);
        done(404, err, NULL, arg);
        return;
    }
    if (not_driving(c, done, arg))
        return;
    if (s->applying) {
        done(409, "a route change of this plan is in progress; try again", NULL, arg);
        return;
    }
    rt_cut_plan next = s->plan;
    rt_cut_action act;
    int r = rt_cut_command(&next, cmd, who, now_ms(), &act, err, sizeof err);
    if (r != 0) {
        done(r == -2 ? 409 : 404, err, NULL, arg);
        return;
    }
    transition(c, s, &next, &act, done, arg);
}

/* ---- lifetime ------------------------------------------------------------------------ */

int gw_cutover_open(gw_cutover **out, uv_loop_t *loop, gw_admin *admin, const char *state_file,
                    rt_pg_source *pg, char *err, size_t errlen)
{
    gw_cutover *c = calloc(1, sizeof *c);
    rt_cut_plan *plans = malloc(GW_CUT_MAX_PLANS * sizeof *plans);
    if (!c || !plans) {
        free(c);
        free(plans);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    c->loop = loop;
    c->admin = admin;
    snprintf(c->path, sizeof c->path, "%s", state_file);
    c->pg = pg;
    /* PostgreSQL: the plans come from the store once connected (pg_round) */
    int n = pg ? 0 : load_plans(state_file, plans, GW_CUT_MAX_PLANS, err, errlen);
    for (int i = 0; i < n; i++) {
        plan_slot *s = slot_new(c);
        if (!s) {
            n = -1;
            snprintf(err, errlen, "out of memory");
            break;
        }
        s->plan = plans[i];
        c->plans[c->n++] = s;
        if (rt_cut_active(&s->plan))
            fprintf(stderr, "gateway: cutover resumed route=%s state=%s step=%d weight=%d\n",
                    s->plan.route, rt_cut_state_name(s->plan.state), s->plan.step,
                    rt_cut_weight(&s->plan));
    }
    free(plans);
    if (n < 0) {
        for (int i = 0; i < c->n; i++)
            slot_free(c->plans[i]);
        free(c);
        return -1;
    }
    int64_t now = now_ms();
    for (int i = 0; i < c->n; i++)
        take_sample(c, c->plans[i], now); /* evidence counts from here after a restart */
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    c->timer_open = 1;
    uv_timer_start(&c->timer, on_tick, GW_CUT_TICK_MS, GW_CUT_TICK_MS);
    *out = c;
    return 0;
}

static void on_timer_closed(uv_handle_t *h)
{
    gw_cutover *c = h->data;
    c->timer_open = 0;
    maybe_free(c);
}

void gw_cutover_close(gw_cutover *c)
{
    if (!c || c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}
