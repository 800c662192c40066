/* ctl_cutover.c — gatewayctl cutover: start, status, pause, resume, promote, abort, verdict
 * (the admin API's /admin/cutovers, see gateway/admin_cutover.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "ctl/ctl.h"

#define START_SYNOPSIS                                                                     \
    "cutover start ROUTE UPSTREAM [--steps 0,1,5,25,50,100] [--step-time 30s]\n"           \
    "        [--min-requests N] [--max-error-rate P] [--max-error-delta P] [--max-p99 MS]\n" \
    "        [--max-p99-ratio R] [--max-mismatch P] [--max-fallback-rate P]\n"             \
    "        [--rollback step|all] [--window 60s] [--inconclusive 5m]"
#define SYNOPSIS "cutover start|status|pause|resume|promote|abort|verdict ..."

/* "30s", "500ms", "2m", "1h", or plain seconds; returns ms, or -1. */
static long long parse_duration(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || !isfinite(v) || v < 0)
        return -1;
    double mult = strcmp(end, "ms") == 0 ? 1 : (strcmp(end, "s") == 0 || !*end) ? 1000
                : strcmp(end, "m") == 0 ? 60000 : strcmp(end, "h") == 0 ? 3600000 : -1;
    if (mult < 0 || v * mult > 1e12)
        return -1;
    return (long long)(v * mult + 0.5);
}

/* A number, with an optional trailing '%' for the percentages. */
static int parse_number(const char *s, int percent_ok, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || !isfinite(v))
        return -1;
    if (percent_ok && *end == '%')
        end++;
    if (*end)
        return -1;
    *out = v;
    return 0;
}

static json_t *parse_steps(const char *s)
{
    json_t *a = json_array();
    const char *p = s;
    while (a && *p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 100 || (*end && *end != ',')) {
            json_decref(a);
            return NULL;
        }
        json_array_append_new(a, json_integer(v));
        p = *end ? end + 1 : end;
        if (*end && !*p) { /* trailing comma */
            json_decref(a);
            return NULL;
        }
    }
    if (a && json_array_size(a) == 0) {
        json_decref(a);
        return NULL;
    }
    return a;
}

static const struct {
    const char *opt;
    const char *key;   /* in the spec, or in "gates" when gate is set */
    int gate;
    int kind;          /* 0 duration, 1 integer, 2 percent, 3 number */
} start_opts[] = {
    { "--step-time", "step_time_ms", 0, 0 },
    { "--window", "window_ms", 0, 0 },
    { "--inconclusive", "inconclusive_ms", 0, 0 },
    { "--min-requests", "min_requests", 0, 1 },
    { "--max-error-rate", "max_error_rate", 1, 2 },
    { "--max-error-delta", "max_error_delta", 1, 2 },
    { "--max-p99", "max_p99_ms", 1, 3 },
    { "--max-p99-ratio", "max_p99_ratio", 1, 3 },
    { "--max-mismatch", "max_mismatch", 1, 2 },
    { "--max-fallback-rate", "max_fallback_rate", 1, 2 },
};

/* The start request's body from the command line, or NULL (the usage error printed). */
static json_t *start_spec(int argc, char **argv, int *rc)
{
    *rc = CTL_USAGE;
    const char *route = NULL, *target = NULL;
    json_t *spec = json_object(), *gates = json_object();
    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];
        if (arg[0] != '-') {
            if (!route)
                route = arg;
            else if (!target)
                target = arg;
            else {
                ctl_usage("cutover start", START_SYNOPSIS, "too many arguments");
                goto fail;
            }
            continue;
        }
        if (i + 1 >= argc) {
            ctl_usage("cutover start", START_SYNOPSIS, "%s needs a value", arg);
            goto fail;
        }
        const char *val = argv[++i];
        if (strcmp(arg, "--steps") == 0) {
            json_t *steps = parse_steps(val);
            if (!steps) {
                ctl_usage("cutover start", START_SYNOPSIS,
                          "--steps: \"%s\" is not a comma-separated list of 0..100", val);
                goto fail;
            }
            json_object_set_new(spec, "steps", steps);
            continue;
        }
        if (strcmp(arg, "--rollback") == 0) {
            if (strcmp(val, "step") && strcmp(val, "all")) {
                ctl_usage("cutover start", START_SYNOPSIS, "--rollback: step or all");
                goto fail;
            }
            json_object_set_new(spec, "rollback", json_string(val));
            continue;
        }
        size_t k = 0, n = sizeof start_opts / sizeof start_opts[0];
        while (k < n && strcmp(arg, start_opts[k].opt) != 0)
            k++;
        if (k == n) {
            ctl_usage("cutover start", START_SYNOPSIS, "unknown option \"%s\"", arg);
            goto fail;
        }
        json_t *v = NULL;
        double d;
        long long ms;
        switch (start_opts[k].kind) {
        case 0:
            if ((ms = parse_duration(val)) >= 0)
                v = json_integer(ms);
            break;
        case 1:
            if (parse_number(val, 0, &d) == 0 && d >= 0 && d == floor(d) && d < 1e12)
                v = json_integer((json_int_t)d);
            break;
        default:
            if (parse_number(val, start_opts[k].kind == 2, &d) == 0)
                v = json_real(d);
            break;
        }
        if (!v) {
            ctl_usage("cutover start", START_SYNOPSIS, "%s: \"%s\" is not %s", arg, val,
                      start_opts[k].kind == 0 ? "a duration (500ms, 30s, 2m)"
                      : start_opts[k].kind == 1 ? "a whole number" : "a number");
            goto fail;
        }
        json_object_set_new(start_opts[k].gate ? gates : spec, start_opts[k].key, v);
    }
    if (!route || !target) {
        ctl_usage("cutover start", START_SYNOPSIS, "missing %s", route ? "UPSTREAM" : "ROUTE");
        goto fail;
    }
    json_object_set_new(spec, "route", json_string(route));
    json_object_set_new(spec, "target", json_string(target));
    if (json_object_size(gates))
        json_object_set(spec, "gates", gates);
    json_decref(gates);
    *rc = CTL_OK;
    return spec;
fail:
    json_decref(spec);
    json_decref(gates);
    return NULL;
}

static const char *str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "-";
}

static long long num(const json_t *o, const char *key)
{
    return (long long)json_integer_value(json_object_get(o, key));
}

/* One line a plan: what an operator scans. */
static int print_list(json_t *plans)
{
    ctl_table t = { .cols = 7 };
    char *head[] = { "ROUTE", "TARGET", "STATE", "STEP", "WEIGHT", "VERDICT", "REASON" };
    int bad = ctl_table_row(&t, head);
    size_t i;
    json_t *p;
    json_array_foreach(plans, i, p) {
        char step[32], weight[16];
        snprintf(step, sizeof step, "%lld/%zu", num(p, "step"),
                 json_array_size(json_object_get(p, "steps")));
        long long w = num(p, "weight");
        snprintf(weight, sizeof weight, w < 0 ? "legacy" : "%lld%%", w);
        json_t *v = json_object_get(p, "verdict");
        char *cells[7] = { (char *)str(p, "route"), (char *)str(p, "target"),
                           (char *)str(p, "state"), step, weight, (char *)str(v, "verdict"),
                           (char *)str(p, "reason") };
        bad |= ctl_table_row(&t, cells);
    }
    if (!bad)
        ctl_table_print(&t);
    ctl_table_free(&t);
    return bad ? ctl_fail("cutover status", "out of memory") : CTL_OK;
}

static void fmt_num(char *out, size_t n, const json_t *v, const char *unit)
{
    if (!v || json_is_null(v))
        snprintf(out, n, "-");
    else
        snprintf(out, n, "%.3g%s", json_number_value(v), unit);
}

/* One plan in full: state, the gates with the evidence, the first mismatches. */
static int print_plan(const json_t *p)
{
    long long w = num(p, "weight");
    printf("route %s: %s -> %s, %s at step %lld", str(p, "route"), str(p, "legacy"),
           str(p, "target"), str(p, "state"), num(p, "step"));
    if (w >= 0)
        printf(" (%lld %%)", w);
    printf("\n  steps");
    size_t i;
    json_t *x;
    json_array_foreach(json_object_get(p, "steps"), i, x)
        printf("%s%lld", i ? "," : " ", (long long)json_integer_value(x));
    printf(", %lld ms each, %lld requests min, rollback %s\n", num(p, "step_time_ms"),
           num(p, "min_requests"), str(p, "rollback"));
    printf("  reason: %s\n", str(p, "reason"));
    const json_t *v = json_object_get(p, "verdict");
    printf("  verdict: %s: %s\n", str(v, "verdict"), str(v, "reason"));
    json_t *next = json_object_get(p, "next_verdict_in_ms");
    if (json_is_integer(next))
        printf("  step time left: %lld ms\n", (long long)json_integer_value(next));
    ctl_table t = { .cols = 5 };
    char *head[] = { "  GATE", "RESULT", "VALUE", "LIMIT", "LEGACY" };
    int bad = ctl_table_row(&t, head);
    json_array_foreach(json_object_get(v, "gates"), i, x) {
        const char *g = str(x, "gate");
        const char *unit = strstr(g, "p99") ? " ms" : " %";
        char name[64], val[32], lim[32], leg[32];
        snprintf(name, sizeof name, "  %s", g);
        fmt_num(val, sizeof val, json_object_get(x, "value"), unit);
        fmt_num(lim, sizeof lim, json_object_get(x, "limit"), unit);
        fmt_num(leg, sizeof leg, json_object_get(x, "legacy"), unit);
        char *cells[5] = { name, (char *)str(x, "result"), val, lim, leg };
        bad |= ctl_table_row(&t, cells);
    }
    if (!bad)
        ctl_table_print(&t);
    ctl_table_free(&t);
    const json_t *e = json_object_get(p, "evidence");
    for (int s = 0; s < 2; s++) {
        const json_t *side = json_object_get(e, s ? "target" : "legacy");
        char p99[32];
        fmt_num(p99, sizeof p99, json_object_get(side, "p99_ms"), " ms");
        printf("  %s: %lld requests, %lld errors, p99 %s, %lld fallbacks, %lld/%lld shadow mismatches"
               " (window %lld ms)\n", s ? "target" : "legacy", num(side, "requests"),
               num(side, "errors"), p99, num(side, "fallbacks"), num(side, "shadow_mismatched"),
               num(side, "shadow_compared"), num(e, "window_ms"));
    }
    json_array_foreach(json_object_get(p, "first_mismatches"), i, x)
        printf("  mismatch %s: %s\n", str(x, "request_id"), str(x, "diff"));
    if (json_is_string(json_object_get(p, "last_error")))
        printf("  last error: %s\n", str(p, "last_error"));
    return bad ? ctl_fail("cutover status", "out of memory") : CTL_OK;
}

int ctl_cmd_cutover(const ctl_admin *a, int argc, char **argv)
{
    if (argc < 1)
        return ctl_usage("cutover", SYNOPSIS, "missing subcommand");
    const char *sub = argv[0];
    char what[64];
    snprintf(what, sizeof what, "cutover %.32s", sub);
    json_t *doc = NULL;
    ctl_buf path = { 0 };
    int rc;
    if (strcmp(sub, "start") == 0) {
        json_t *spec = start_spec(argc - 1, argv + 1, &rc);
        if (!spec)
            return rc;
        rc = ctl_admin_json(a, what, "POST", "/admin/cutovers", spec, &doc);
        json_decref(spec);
        if (rc == CTL_OK)
            rc = print_plan(doc);
        json_decref(doc);
        return rc;
    }
    int is_status = strcmp(sub, "status") == 0, is_verdict = strcmp(sub, "verdict") == 0;
    int is_cmd = !strcmp(sub, "pause") || !strcmp(sub, "resume") || !strcmp(sub, "promote") ||
                 !strcmp(sub, "abort");
    if (!is_status && !is_verdict && !is_cmd)
        return ctl_usage("cutover", SYNOPSIS, "unknown subcommand \"%s\"", sub);
    if (argc > 2 || (argc < 2 && !is_status) || (argc == 2 && !argv[1][0]))
        return ctl_usage(what, is_status ? "cutover status [ROUTE]" : "cutover pause|resume|promote|abort|verdict ROUTE",
                         argc > 2 ? "too many arguments" : "missing ROUTE");
    if (is_status && argc == 1) {
        rc = ctl_admin_json(a, what, "GET", "/admin/cutovers", NULL, &doc);
        if (rc == CTL_OK) {
            json_t *plans = json_object_get(doc, "cutovers");
            if (!json_is_array(plans))
                rc = ctl_fail(what, "unexpected response: no \"cutovers\" array");
            else if (json_array_size(plans) == 0)
                printf("no cutover plans\n");
            else
                rc = print_list(plans);
        }
        json_decref(doc);
        return rc;
    }
    if (ctl_buf_printf(&path, "/admin/cutovers/") != 0 || ctl_path_segment(&path, argv[1]) != 0 ||
        (!is_status && ctl_buf_printf(&path, "/%s", is_verdict ? "verdict" : sub) != 0)) {
        ctl_buf_free(&path);
        return ctl_fail(what, "out of memory");
    }
    rc = ctl_admin_json(a, what, is_cmd ? "POST" : "GET", path.p, NULL, &doc);
    ctl_buf_free(&path);
    if (rc == CTL_OK) {
        if (is_verdict) {
            char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
            if (text)
                printf("%s\n", text);
            free(text);
        } else {
            rc = print_plan(doc);
        }
    }
    json_decref(doc);
    return rc;
}
