/* test_cutover_plan.c — routes/cutover_plan: verdicts on synthetic windowed counters (pass,
 * wait, fail, inconclusive), rollback to the last passed step or all the way, operator
 * commands and their invalid transitions, plan JSON (validation errors, and a stored state
 * read back: a restart resumes the plan where it was). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "routes/cutover_plan.h"
#include "routes/route_edit.h"
#include "routes/route_table.h"

#define T0 1700000000000LL /* an arbitrary wall clock, ms */

/* N requests on S, ERRORS of them 5xx, all with latency US. */
static void side(rt_cut_side *s, uint64_t n, uint64_t errors, uint64_t us)
{
    s->requests += n;
    s->errors += errors;
    s->lat[rt_cut_lat_bucket(us)] += n;
}

/* A plan orders: legacy -> order-service, steps 0,10,50,100, 10 s per step, 50 requests. */
static void plan(rt_cut_plan *p)
{
    json_error_t je;
    json_t *spec = json_loads("{\"route\":\"orders\",\"target\":\"order-service\","
                              "\"steps\":[0,10,50,100],\"step_time_ms\":10000,"
                              "\"min_requests\":50}", 0, &je);
    char err[256] = "";
    assert_int_equal(rt_cut_plan_from_json(p, spec, "legacy", 0, err, sizeof err), 0);
    json_decref(spec);
    rt_cut_action a;
    rt_cut_begin(p, "admin", T0, &a);
    assert_int_equal(a.change, 1);
    assert_int_equal(a.weight, 0);
    assert_string_equal(a.verb, "start");
}

static const rt_cut_gate_eval *gate(const rt_cut_judgement *j, const char *name)
{
    for (int i = 0; i < j->n_gates; i++)
        if (strcmp(j->gates[i].name, name) == 0)
            return &j->gates[i];
    fail_msg("no gate %s", name);
    return NULL;
}

static void test_latency_buckets_and_p99(void **state)
{
    (void)state;
    assert_int_equal(rt_cut_lat_bucket(0), 0);
    assert_int_equal(rt_cut_lat_bucket(50), 0);
    assert_int_equal(rt_cut_lat_bucket(51), 1);
    assert_int_equal(rt_cut_lat_bucket(100000000), RT_CUT_LAT_BUCKETS);
    rt_cut_side s = { 0 };
    assert_true(rt_cut_p99_ms(&s) < 0);
    side(&s, 990, 0, 1000);   /* 990 at 1 ms */
    side(&s, 10, 0, 200000);  /* 10 at 200 ms: exactly the last 1 % */
    assert_true(rt_cut_p99_ms(&s) >= 1.0 && rt_cut_p99_ms(&s) < 1.4);
    side(&s, 1, 0, 200000);   /* one more slow one: now over 1 % are slow */
    assert_true(rt_cut_p99_ms(&s) >= 200.0 && rt_cut_p99_ms(&s) < 230.0);
    /* differences floor at zero: a snapshot from before a restart never underflows */
    rt_cut_side d, zero = { 0 };
    rt_cut_side_sub(&d, &zero, &s);
    assert_int_equal(d.requests, 0);
}

static void test_shadow_step_waits_then_passes(void **state)
{
    (void)state;
    rt_cut_plan p;
    plan(&p);
    rt_cut_evidence e = { 0 };
    rt_cut_judgement j;
    e.target.shadow_compared = 49;
    rt_cut_judge(&p, &e, T0 + 20000, &j);
    assert_int_equal(j.verdict, RT_CUT_WAIT); /* too few comparisons, however long */
    e.target.shadow_compared = 500;
    rt_cut_judge(&p, &e, T0 + 9999, &j);
    assert_int_equal(j.verdict, RT_CUT_WAIT); /* enough, but the step's time is not over */
    rt_cut_judge(&p, &e, T0 + 10000, &j);
    assert_int_equal(j.verdict, RT_CUT_PASS);
    assert_int_equal(gate(&j, "mismatch")->result, RT_GATE_PASS);
    rt_cut_action a;
    assert_int_equal(rt_cut_apply_verdict(&p, &j, T0 + 10000, &a), 1);
    assert_int_equal(a.change, 1);
    assert_int_equal(a.weight, 10);
    assert_string_equal(a.verb, "advance");
    assert_int_equal(p.step, 1);
    assert_int_equal(p.last_passed, 0);
    assert_int_equal(p.step_started_ms, T0 + 10000);
    assert_non_null(strstr(p.reason, "every gate passed"));
}

static void test_mismatches_fail_the_shadow_step(void **state)
{
    (void)state;
    rt_cut_plan p;
    plan(&p);
    rt_cut_evidence e = { 0 };
    e.target.shadow_compared = 100;
    e.target.shadow_mismatched = 1; /* 1 % > 0.1 % */
    rt_cut_judgement j;
    rt_cut_judge(&p, &e, T0 + 1000, &j); /* fails early: no need to wait out the step */
    assert_int_equal(j.verdict, RT_CUT_FAIL);
    assert_int_equal(gate(&j, "mismatch")->result, RT_GATE_FAIL);
    assert_non_null(strstr(j.reason, "gate mismatch failed"));
    rt_cut_action a;
    assert_int_equal(rt_cut_apply_verdict(&p, &j, T0 + 1000, &a), 1);
    /* nothing passed yet: all the way back, whatever the mode */
    assert_int_equal(a.weight, -1);
    assert_string_equal(a.verb, "rollback");
    assert_int_equal(p.state, RT_CUT_ROLLED_BACK);
    assert_int_equal(rt_cut_weight(&p), -1);
}

/* The plan at step 2 (50 %) with steps 0 and 1 passed. */
static void at_step_2(rt_cut_plan *p)
{
    plan(p);
    rt_cut_evidence e = { 0 };
    e.target.shadow_compared = 100;
    rt_cut_judgement j;
    rt_cut_action a;
    rt_cut_judge(p, &e, T0 + 10000, &j);
    assert_int_equal(rt_cut_apply_verdict(p, &j, T0 + 10000, &a), 1);
    e = (rt_cut_evidence){ 0 };
    side(&e.target, 100, 0, 2000);
    side(&e.legacy, 900, 0, 2000);
    rt_cut_judge(p, &e, T0 + 20000, &j);
    assert_int_equal(j.verdict, RT_CUT_PASS);
    assert_int_equal(rt_cut_apply_verdict(p, &j, T0 + 20000, &a), 1);
    assert_int_equal(a.weight, 50);
    assert_int_equal(p->last_passed, 1);
}

static void test_error_rate_fails_and_rolls_back_one_step(void **state)
{
    (void)state;
    rt_cut_plan p;
    at_step_2(&p);
    rt_cut_evidence e = { 0 };
    side(&e.target, 100, 5, 2000); /* 5 % errors, the limit is 1 % */
    side(&e.legacy, 100, 0, 2000);
    rt_cut_judgement j;
    rt_cut_judge(&p, &e, T0 + 21000, &j);
    assert_int_equal(j.verdict, RT_CUT_FAIL);
    assert_int_equal(gate(&j, "error_rate")->result, RT_GATE_FAIL);
    assert_true(gate(&j, "error_rate")->value > 4.99 && gate(&j, "error_rate")->value < 5.01);
    rt_cut_action a;
    assert_int_equal(rt_cut_apply_verdict(&p, &j, T0 + 21000, &a), 1);
    assert_int_equal(a.weight, 10); /* back to the last passed step */
    assert_int_equal(p.step, 1);
    assert_int_equal(p.state, RT_CUT_PAUSED);
    assert_int_equal(p.last_passed, 0);
    assert_non_null(strstr(p.reason, "rolled back to step 1 (10 %), paused"));
    /* paused: verdicts are shown, never applied */
    rt_cut_judge(&p, &e, T0 + 60000, &j);
    assert_int_equal(j.verdict, RT_CUT_PAUSE);
    assert_int_equal(rt_cut_apply_verdict(&p, &j, T0 + 60000, &a), 0);
    /* resumed, the step is judged again from scratch */
    char err[128];
    assert_int_equal(rt_cut_command(&p, "resume", "ops", T0 + 70000, &a, err, sizeof err), 0);
    assert_int_equal(a.change, 0);
    assert_int_equal(p.state, RT_CUT_RUNNING);
    assert_int_equal(p.step_started_ms, T0 + 70000);
    /* and failing at step 1 now goes back to step 0 */
    rt_cut_judge(&p, &e, T0 + 71000, &j);
    assert_int_equal(rt_cut_apply_verdict(&p, &j, T0 + 71000, &a), 1);
    assert_int_equal(a.weight, 0);
    assert_int_equal(p.step, 0);
}

static void test_rollback_all_the_way(void **state)
{
    (void)state;
    rt_cut_plan p;
    at_step_2(&p);
    p.rollback = RT_CUT_BACK_ALL;
    rt_cut_evidence e = { 0 };
    side(&e.target, 100, 5, 2000);
    side(&e.legacy, 100, 0, 2000);
    rt_cut_judgement j;
    rt_cut_judge(&p, &e, T0 + 21000, &j);
    rt_cut_action a;
    assert_int_equal(rt_cut_apply_verdict(&p, &j, T0 + 21000, &a), 1);
    assert_int_equal(a.weight, -1);
    assert_int_equal(p.state, RT_CUT_ROLLED_BACK);
    assert_non_null(strstr(p.reason, "rolled back to legacy"));
}

static void test_relative_gates(void **state)
{
    (void)state;
    rt_cut_plan p;
    at_step_2(&p);
    rt_cut_evidence e = { 0 };
    rt_cut_judgement j;
    p.gates.max_error_rate = 5;   /* only the relative gate decides here */
    side(&e.target, 1000, 10, 2000); /* 1 % */
    side(&e.legacy, 1000, 8, 2000);  /* 0.8 %: 1 <= 0.8 + 0.5 */
    rt_cut_judge(&p, &e, T0 + 31000, &j);
    assert_int_equal(j.verdict, RT_CUT_PASS);
    assert_int_equal(gate(&j, "error_delta")->result, RT_GATE_PASS);
    e.legacy.errors = 2;             /* 0.2 %: 1 > 0.2 + 0.5 */
    rt_cut_judge(&p, &e, T0 + 31000, &j);
    assert_int_equal(j.verdict, RT_CUT_FAIL);
    assert_int_equal(gate(&j, "error_delta")->result, RT_GATE_FAIL);
    /* p99: 20 ms legacy, 50 ms target: 50 > 1.5 x 20 */
    e = (rt_cut_evidence){ 0 };
    side(&e.target, 1000, 0, 50000);
    side(&e.legacy, 1000, 0, 20000);
    rt_cut_judge(&p, &e, T0 + 31000, &j);
    assert_int_equal(j.verdict, RT_CUT_FAIL);
    assert_int_equal(gate(&j, "p99_ratio")->result, RT_GATE_FAIL);
    assert_non_null(strstr(j.reason, "p99_ratio"));
    /* 0.2 ms legacy, 0.6 ms target: 3 x, but under the noise floor: a pass */
    e = (rt_cut_evidence){ 0 };
    side(&e.target, 1000, 0, 600);
    side(&e.legacy, 1000, 0, 200);
    rt_cut_judge(&p, &e, T0 + 31000, &j);
    assert_int_equal(gate(&j, "p99_ratio")->result, RT_GATE_PASS);
    assert_true(gate(&j, "p99_ratio")->limit > RT_CUT_P99_NOISE_MS);
    /* too little legacy traffic: the relative gates wait, so no pass (and no fail) */
    e = (rt_cut_evidence){ 0 };
    side(&e.target, 1000, 0, 2000);
    side(&e.legacy, 10, 0, 2000);
    rt_cut_judge(&p, &e, T0 + 31000, &j);
    assert_int_equal(j.verdict, RT_CUT_WAIT);
    assert_int_equal(gate(&j, "error_delta")->result, RT_GATE_WAIT);
    /* the absolute p99 ceiling */
    p.gates.max_p99_ms = 1;
    rt_cut_judge(&p, &e, T0 + 31000, &j);
    assert_int_equal(j.verdict, RT_CUT_FAIL);
    assert_int_equal(gate(&j, "p99")->result, RT_GATE_FAIL);
}

static void test_fallback_rate(void **state)
{
    (void)state;
    rt_cut_plan p;
    at_step_2(&p);
    rt_cut_evidence e = { 0 };
    side(&e.target, 90, 0, 2000);
    e.target.fallbacks = 10; /* 10 of the 100 routed to the target fell back: 10 % > 5 % */
    side(&e.legacy, 200, 0, 2000);
    rt_cut_judgement j;
    rt_cut_judge(&p, &e, T0 + 21000, &j);
    assert_int_equal(j.sample, 100);
    assert_int_equal(j.verdict, RT_CUT_FAIL);
    assert_int_equal(gate(&j, "fallback_rate")->result, RT_GATE_FAIL);
}

static void test_inconclusive_pauses(void **state)
{
    (void)state;
    rt_cut_plan p;
    at_step_2(&p);
    rt_cut_evidence e = { 0 };
    side(&e.target, 10, 0, 2000); /* 10 of the 50 needed */
    rt_cut_judgement j;
    rt_cut_judge(&p, &e, T0 + 20000 + 99999, &j);
    assert_int_equal(j.verdict, RT_CUT_WAIT);
    rt_cut_judge(&p, &e, T0 + 20000 + 100000, &j); /* 10 x the step time */
    assert_int_equal(j.verdict, RT_CUT_PAUSE);
    assert_non_null(strstr(j.reason, "inconclusive"));
    rt_cut_action a;
    assert_int_equal(rt_cut_apply_verdict(&p, &j, T0 + 120000, &a), 1);
    assert_int_equal(a.change, 0);
    assert_int_equal(p.state, RT_CUT_PAUSED);
    assert_int_equal(p.step, 2);
}

static void test_last_step_completes_without_legacy(void **state)
{
    (void)state;
    rt_cut_plan p;
    at_step_2(&p);
    rt_cut_evidence e = { 0 };
    side(&e.target, 100, 0, 2000);
    side(&e.legacy, 100, 0, 2000);
    rt_cut_judgement j;
    rt_cut_action a;
    rt_cut_judge(&p, &e, T0 + 30000, &j);
    assert_int_equal(rt_cut_apply_verdict(&p, &j, T0 + 30000, &a), 1);
    assert_int_equal(a.weight, 100);
    e.legacy = (rt_cut_side){ 0 }; /* at 100 % legacy sees nothing */
    rt_cut_judge(&p, &e, T0 + 40000, &j);
    assert_int_equal(j.verdict, RT_CUT_PASS);
    assert_int_equal(gate(&j, "error_delta")->result, RT_GATE_NA);
    assert_int_equal(gate(&j, "p99_ratio")->result, RT_GATE_NA);
    assert_int_equal(rt_cut_apply_verdict(&p, &j, T0 + 40000, &a), 1);
    assert_int_equal(a.change, 0);
    assert_string_equal(a.verb, "complete");
    assert_int_equal(p.state, RT_CUT_COMPLETED);
}

static void test_commands_and_invalid_transitions(void **state)
{
    (void)state;
    rt_cut_plan p;
    plan(&p);
    rt_cut_action a;
    char err[128];
    assert_int_equal(rt_cut_command(&p, "resume", "ops", T0, &a, err, sizeof err), -2);
    assert_string_equal(err, "cannot resume a plan that is running");
    assert_int_equal(rt_cut_command(&p, "jump", "ops", T0, &a, err, sizeof err), -1);
    assert_int_equal(rt_cut_command(&p, "pause", "ops", T0 + 1, &a, err, sizeof err), 0);
    assert_int_equal(a.change, 0);
    assert_int_equal(p.state, RT_CUT_PAUSED);
    assert_int_equal(rt_cut_command(&p, "pause", "ops", T0 + 2, &a, err, sizeof err), -2);
    assert_int_equal(rt_cut_command(&p, "promote", "ops", T0 + 3, &a, err, sizeof err), 0);
    assert_int_equal(a.change, 1);
    assert_int_equal(a.weight, 100);
    assert_int_equal(p.state, RT_CUT_COMPLETED);
    assert_int_equal(rt_cut_command(&p, "abort", "ops", T0 + 4, &a, err, sizeof err), -2);
    assert_string_equal(err, "cannot abort a plan that is completed");
    plan(&p);
    assert_int_equal(rt_cut_command(&p, "abort", "ops", T0 + 5, &a, err, sizeof err), 0);
    assert_int_equal(a.weight, -1);
    assert_int_equal(p.state, RT_CUT_ABORTED);
    assert_non_null(strstr(p.reason, "aborted by ops"));
}

static void test_resume_from_stored_state(void **state)
{
    (void)state;
    rt_cut_plan p, q;
    at_step_2(&p);
    p.gates.max_p99_ms = -1;
    json_t *j = rt_cut_plan_to_json(&p);
    assert_non_null(j);
    char *text = json_dumps(j, 0);
    json_decref(j);
    json_error_t je;
    j = json_loads(text, 0, &je); /* what a restart reads from the sidecar file */
    free(text);
    char err[256] = "";
    assert_int_equal(rt_cut_plan_from_json(&q, j, NULL, 1, err, sizeof err), 0);
    json_decref(j);
    assert_string_equal(q.route, "orders");
    assert_string_equal(q.legacy, "legacy");
    assert_string_equal(q.target, "order-service");
    assert_int_equal(q.n_steps, 4);
    assert_int_equal(q.step, 2);
    assert_int_equal(q.last_passed, 1);
    assert_int_equal(q.state, RT_CUT_RUNNING);
    assert_int_equal(q.step_started_ms, T0 + 20000);
    assert_true(q.gates.max_p99_ms < 0);
    assert_true(q.gates.max_p99_ratio > 1.49 && q.gates.max_p99_ratio < 1.51);
    assert_string_equal(q.who, "admin");
    /* the resumed plan goes on: evidence counted since the restart decides the step */
    rt_cut_evidence e = { 0 };
    side(&e.target, 100, 0, 2000);
    side(&e.legacy, 100, 0, 2000);
    rt_cut_judgement jd;
    rt_cut_action a;
    rt_cut_judge(&q, &e, T0 + 30000, &jd);
    assert_int_equal(jd.verdict, RT_CUT_PASS);
    assert_int_equal(rt_cut_apply_verdict(&q, &jd, T0 + 30000, &a), 1);
    assert_int_equal(a.weight, 100);
}

static void expect_spec_error(const char *json, const char *want)
{
    json_error_t je;
    json_t *j = json_loads(json, 0, &je);
    assert_non_null(j);
    rt_cut_plan p;
    char err[256] = "";
    assert_int_equal(rt_cut_plan_from_json(&p, j, "legacy", 0, err, sizeof err), -1);
    json_decref(j);
    if (strcmp(err, want) != 0)
        fail_msg("for %s\n  got  %s\n  want %s", json, err, want);
}

static void test_spec_errors(void **state)
{
    (void)state;
    expect_spec_error("{\"target\":\"x\"}", "route: missing");
    expect_spec_error("{\"route\":\"r\"}", "target: missing");
    expect_spec_error("{\"route\":\"r\",\"target\":\"legacy\"}",
                      "target: \"legacy\" already answers the route");
    expect_spec_error("{\"route\":\"r\",\"target\":\"x\",\"steps\":[0,5,5,100]}",
                      "steps[2]: must be above 5 (steps only go up)");
    expect_spec_error("{\"route\":\"r\",\"target\":\"x\",\"steps\":[0,50]}",
                      "steps[1]: the last step must be 100");
    expect_spec_error("{\"route\":\"r\",\"target\":\"x\",\"steps\":[0,101]}",
                      "steps[1]: must be an integer from 0 to 100");
    expect_spec_error("{\"route\":\"r\",\"target\":\"x\",\"steps\":[]}",
                      "steps: must be an array of 1 to 16 weights");
    expect_spec_error("{\"route\":\"r\",\"target\":\"x\",\"step_time_ms\":-1}",
                      "step_time_ms: must be an integer from 100 to 86400000");
    expect_spec_error("{\"route\":\"r\",\"target\":\"x\",\"min_requests\":0}",
                      "min_requests: must be an integer from 1 to 100000000");
    expect_spec_error("{\"route\":\"r\",\"target\":\"x\",\"rollback\":\"some\"}",
                      "rollback: must be \"step\" (to the last passed step) or \"all\"");
    expect_spec_error("{\"route\":\"r\",\"target\":\"x\",\"gates\":{\"max_error_rate\":101}}",
                      "gates.max_error_rate: a percentage, at most 100");
    expect_spec_error("{\"route\":\"r\",\"target\":\"x\",\"gates\":{\"speed\":1}}",
                      "gates.speed: unknown gate (known: max_error_rate, max_error_delta, "
                      "max_p99_ms, max_p99_ratio, max_mismatch, max_fallback_rate)");
    expect_spec_error("{\"route\":\"r\",\"target\":\"x\",\"state\":\"running\"}",
                      "state: unknown member");
}

static const char *const UPS[] = { "legacy", "order-service" };

/* The route as each step of a plan leaves it. */
static void test_route_at_each_step(void **state)
{
    (void)state;
    static const char doc[] =
        "{\"routes\":[{\"id\":\"orders\",\"path\":\"/api/orders/{id}\",\"upstream\":\"legacy\","
        "\"rewrites\":{\"order-service\":{\"template\":\"/orders/{id}\"}},"
        "\"fallback\":{\"upstream\":\"legacy\",\"on\":[\"404\"]}}]}";
    char err[256] = "";
    rt_table *t = rt_table_parse(doc, strlen(doc), "t.json", UPS, 2, err, sizeof err);
    assert_non_null(t);
    rt_table *s0 = rt_table_cutover_step(t, "orders", "legacy", "order-service", 0, err, sizeof err);
    assert_non_null(s0);
    const rt_route *r = rt_table_find(s0, "orders");
    assert_string_equal(r->upstream, "legacy");
    assert_int_equal(r->n_split, 0);
    assert_string_equal(r->shadow.upstream, "order-service");
    assert_int_equal(r->shadow.percent, 100);
    rt_table *s1 = rt_table_cutover_step(s0, "orders", "legacy", "order-service", 5, err, sizeof err);
    assert_non_null(s1);
    r = rt_table_find(s1, "orders");
    assert_null(r->shadow.upstream);
    assert_int_equal(r->n_split, 2);
    assert_int_equal(r->split_total, 100);
    for (int i = 0; i < 2; i++)
        assert_int_equal(r->split[i].weight, strcmp(r->split[i].upstream, "legacy") == 0 ? 95 : 5);
    assert_string_equal(r->fallback.upstream, "legacy"); /* kept */
    assert_int_equal(r->n_rewrites, 1);
    rt_table *s2 = rt_table_cutover_step(s1, "orders", "legacy", "order-service", 100, err, sizeof err);
    assert_non_null(s2);
    r = rt_table_find(s2, "orders");
    assert_string_equal(r->upstream, "order-service");
    assert_int_equal(r->n_split, 0);
    rt_table *back = rt_table_cutover_step(s1, "orders", "legacy", "order-service", -1, err, sizeof err);
    assert_non_null(back);
    r = rt_table_find(back, "orders");
    assert_string_equal(r->upstream, "legacy");
    assert_int_equal(r->n_split, 0);
    assert_null(r->shadow.upstream);
    assert_null(rt_table_cutover_step(t, "nope", "legacy", "order-service", 5, err, sizeof err));
    assert_string_equal(err, "routes: no route \"nope\"");
    assert_null(rt_table_cutover_step(t, "orders", "legacy", "payments", 5, err, sizeof err));
    assert_non_null(strstr(err, "unknown upstream \"payments\""));
    rt_table_unref(t);
    rt_table_unref(s0);
    rt_table_unref(s1);
    rt_table_unref(s2);
    rt_table_unref(back);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_latency_buckets_and_p99),
        cmocka_unit_test(test_shadow_step_waits_then_passes),
        cmocka_unit_test(test_mismatches_fail_the_shadow_step),
        cmocka_unit_test(test_error_rate_fails_and_rolls_back_one_step),
        cmocka_unit_test(test_rollback_all_the_way),
        cmocka_unit_test(test_relative_gates),
        cmocka_unit_test(test_fallback_rate),
        cmocka_unit_test(test_inconclusive_pauses),
        cmocka_unit_test(test_last_step_completes_without_legacy),
        cmocka_unit_test(test_commands_and_invalid_transitions),
        cmocka_unit_test(test_resume_from_stored_state),
        cmocka_unit_test(test_spec_errors),
        cmocka_unit_test(test_route_at_each_step),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
