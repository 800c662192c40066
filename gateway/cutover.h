/* cutover.h — the cutover plans' driver, on the main thread's loop. A 1 s timer reads each
 * active plan's evidence (gw_metrics_side_read: per route, per side, summed over workers;
 * nothing on the request path beyond the counters), keeps it in a sliding window
 * (cutover_window.h), judges the step in force (routes/cutover_plan.h) and, on a verdict,
 * makes the route change through the admin API's change queue (gw_admin_cutover_step: the
 * same validation, write to the active source, audit with who "cutover" and the plan's
 * reason, publish). Plans are kept in a sidecar file next to the active route source
 * (ROUTES_FILE.cutovers.json, or the PostgreSQL cache file's), written atomically off the
 * loop after every transition, and read back at start, so a restart resumes them; evidence
 * starts again from zero then (the step's time still counts from when it began).
 *
 * Evidence is the driving instance's own traffic. Behind an L4 balancer every instance sees
 * a uniform sample of the clients, so its share of a route's traffic tells the same error
 * rates and percentiles as the whole, only from fewer requests (min_requests counts them);
 * gathering every instance's counters through the store would add a write per instance per
 * second and a lag, for no change in what the gates decide. */
#ifndef GW_CUTOVER_H
#define GW_CUTOVER_H

#include <jansson.h>
#include <uv.h>

#include "gateway/admin.h"

#define GW_CUT_MAX_PLANS 64     /* plans kept, running or ended */
#define GW_CUT_TICK_MS 1000
#define GW_CUT_FIRST_MISMATCHES 5

typedef struct gw_cutover gw_cutover;

/* Reads the plans in STATE_FILE (absent: none) and starts the timer. Returns 0, or -1 with
 * err as "FILE: cutovers[i].field: reason". With PG (the PostgreSQL route source; NULL for
 * the file source) the plans live in gateway_cutover_plans instead (000002_cutover_plans)
 * and STATE_FILE is not used: every second an instance that does not drive the plans tries
 * pg_try_advisory_lock; the one that holds it reads them and drives them, the others show
 * them as stored and answer changes with 409. The lock is the session's: when the driving
 * instance dies or loses its connection, another one takes over within about a second
 * (each plan resumes at its step, with fresh evidence). */
struct rt_pg_source;
int gw_cutover_open(gw_cutover **out, uv_loop_t *loop, gw_admin *admin, const char *state_file,
                    struct rt_pg_source *pg, char *err, size_t errlen);
/* Only reads and validates STATE_FILE (gateway --check). */
int gw_cutover_check(const char *state_file, char *err, size_t errlen);
/* The sidecar's path for the active route source. */
void gw_cutover_state_path(const gw_config *cfg, char *out, size_t n);
/* Stops the timer; the memory goes once the changes and the write in flight are done. */
void gw_cutover_close(gw_cutover *c);

/* Reads, answered at once (new references; NULL: no plan for ROUTE):
 * list {"cutovers":[status...]}; status: the plan (rt_cut_plan_to_json) plus "verdict" (the
 * latest judgement), "evidence" {"window_ms","legacy":{...},"target":{...}},
 * "first_mismatches" [{"at_ms","request_id","diff"}], "next_verdict_in_ms", "applying",
 * "last_error"; verdict: {"route","state","step","weight","verdict",...judgement}. */
json_t *gw_cutover_list(gw_cutover *c);
json_t *gw_cutover_status(gw_cutover *c, const char *route);
json_t *gw_cutover_verdict(gw_cutover *c, const char *route);

/* Prometheus text for the plans, appended to a malloc'd buffer (*out, *len; realloc'd):
 * gateway_cutover_plan_weight{route,target,state} (the percent in force, -1 legacy only) and
 * gateway_cutover_driving (1 when this instance drives the plans). Returns 0 or -1 (OOM). */
int gw_cutover_metrics(gw_cutover *c, char **out, size_t *len);

/* Changes, answered through DONE(ARG) once the route change is in force (status 0 with the
 * plan's status), or with 400 (bad spec), 404 (no such route or plan), 409 (a plan already
 * runs on the route, an invalid transition, a change in progress), 422 (the route change
 * does not validate), 503. WHO is the token's name. */
void gw_cutover_start(gw_cutover *c, const json_t *spec, const char *who, gw_store_done done,
                      void *arg);
void gw_cutover_command(gw_cutover *c, const char *route, const char *cmd, const char *who,
                        gw_store_done done, void *arg);

#endif
