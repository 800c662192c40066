/* ctl_routes.c — gatewayctl: routes and rollback commands. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <llhttp.h>

#include "ctl/ctl.h"

/* ---- summaries of route fields ------------------------------------------------------------- */

static int is_weights(const json_t *v)
{
    if (!json_is_object(v) || json_object_size(v) == 0)
        return 0;
    const char *k;
    json_t *w;
    json_object_foreach((json_t *)v, k, w) {
        if (!json_is_integer(w))
            return 0;
    }
    return 1;
}

/* A field's value the way an operator reads it: "-" for absent/null, strings as they are,
 * a split as "legacy 90 / order-service 10", a shadow or fallback as its upstream (and
 * percent when not 100), a list of strings comma-joined, anything else as compact JSON cut
 * to 60 bytes. Appends to B. */
static void value_summary(ctl_buf *b, const json_t *v)
{
    const char *k;
    json_t *x;
    size_t i;
    if (!v || json_is_null(v)) {
        ctl_buf_add(b, "-", 1);
    } else if (json_is_string(v)) {
        ctl_buf_printf(b, "%s", json_string_value(v));
    } else if (json_is_integer(v)) {
        ctl_buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    } else if (json_is_boolean(v)) {
        ctl_buf_printf(b, "%s", json_is_true(v) ? "true" : "false");
    } else if (is_weights(v)) {
        int first = 1;
        json_object_foreach((json_t *)v, k, x) {
            ctl_buf_printf(b, "%s%s %" JSON_INTEGER_FORMAT, first ? "" : " / ", k,
                       json_integer_value(x));
            first = 0;
        }
    } else if (json_is_object(v) && json_is_string(json_object_get(v, "upstream"))) {
        ctl_buf_printf(b, "%s", json_string_value(json_object_get(v, "upstream")));
        json_t *pct = json_object_get(v, "percent");
        if (json_is_integer(pct) && json_integer_value(pct) != 100)
            ctl_buf_printf(b, " %" JSON_INTEGER_FORMAT "%%", json_integer_value(pct));
    } else if (json_is_array(v) && json_array_size(v) > 0 && json_is_string(json_array_get(v, 0))) {
        json_array_foreach(v, i, x) {
            ctl_buf_printf(b, "%s%s", i ? "," : "", json_is_string(x) ? json_string_value(x) : "?");
        }
    } else {
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (s && strlen(s) > 60)
            ctl_buf_printf(b, "%.57s...", s);
        else
            ctl_buf_printf(b, "%s", s ? s : "?");
        free(s);
    }
}

/* Where requests of route R go: its split when it has one, else its upstream. */
static void route_target(ctl_buf *b, const json_t *r)
{
    const json_t *split = json_object_get(r, "split");
    value_summary(b, is_weights(split) ? split : json_object_get(r, "upstream"));
}

/* "old → new" for each field that differs between two route objects, "; "-joined. */
static void change_summary(ctl_buf *b, const json_t *old, const json_t *new)
{
    if (json_is_object(old) && json_is_object(new)) {
        int n = 0;
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)old, k, v) {
            json_t *nv = json_object_get(new, k);
            if (nv && json_equal(v, nv))
                continue;
            ctl_buf_printf(b, "%s%s: ", n++ ? "; " : "", k);
            value_summary(b, v);
            ctl_buf_printf(b, " \xe2\x86\x92 ");
            value_summary(b, nv);
        }
        json_object_foreach((json_t *)new, k, v) {
            if (json_object_get(old, k))
                continue;
            ctl_buf_printf(b, "%s%s: - \xe2\x86\x92 ", n++ ? "; " : "", k);
            value_summary(b, v);
        }
        if (n == 0)
            ctl_buf_printf(b, "no field changed");
        return;
    }
    if (json_is_object(new) && (!old || json_is_null(old))) {
        ctl_buf_printf(b, "created: ");
        route_target(b, new);
        return;
    }
    if (json_is_object(old) && (!new || json_is_null(new))) {
        ctl_buf_printf(b, "deleted (was ");
        route_target(b, old);
        ctl_buf_printf(b, ")");
        return;
    }
    value_summary(b, old);
    ctl_buf_printf(b, " \xe2\x86\x92 ");
    value_summary(b, new);
}

/* ---- routes commands ----------------------------------------------------------------------- */

static int cmd_routes_list(const ctl_admin *a)
{
    json_t *doc;
    int rc = ctl_admin_json(a, "routes list", "GET", "/admin/routes", NULL, &doc);
    if (rc != CTL_OK)
        return rc;
    json_t *routes = json_object_get(doc, "routes");
    if (!json_is_array(routes)) {
        json_decref(doc);
        return ctl_fail("routes list", "unexpected response: no \"routes\" array");
    }
    ctl_buf line = { 0 };
    ctl_buf_printf(&line, "version ");
    value_summary(&line, json_object_get(doc, "version"));
    ctl_buf_printf(&line, " (source: ");
    value_summary(&line, json_object_get(doc, "source"));
    ctl_buf_printf(&line, ", legacy upstream: ");
    value_summary(&line, json_object_get(doc, "legacy_upstream"));
    ctl_buf_printf(&line, ", %zu route%s)", json_array_size(routes),
               json_array_size(routes) == 1 ? "" : "s");
    printf("%s\n", ctl_buf_str(&line));
    ctl_buf_free(&line);

    ctl_table t = { .cols = 5 };
    char *head[] = { "ID", "METHODS", "PATH", "UPSTREAM", "SHADOW" };
    int bad = ctl_table_row(&t, head);
    size_t i;
    json_t *r;
    json_array_foreach(routes, i, r) {
        ctl_buf c[5] = { { 0 } };
        value_summary(&c[0], json_object_get(r, "id"));
        json_t *m = json_object_get(r, "methods");
        if (json_is_array(m) && json_array_size(m) > 0)
            value_summary(&c[1], m);
        else
            ctl_buf_add(&c[1], "*", 1);
        value_summary(&c[2], json_object_get(r, "path"));
        route_target(&c[3], r);
        value_summary(&c[4], json_object_get(r, "shadow"));
        char *cells[5] = { c[0].p, c[1].p, c[2].p, c[3].p, c[4].p };
        bad |= ctl_table_row(&t, cells);
        for (int k = 0; k < 5; k++)
            ctl_buf_free(&c[k]);
    }
    if (!bad)
        ctl_table_print(&t);
    ctl_table_free(&t);
    json_decref(doc);
    return bad ? ctl_fail("routes list", "out of memory") : CTL_OK;
}

static int route_path(ctl_buf *b, const char *id)
{
    return ctl_buf_printf(b, "/admin/routes/") | ctl_path_segment(b, id);
}

static int cmd_routes_show(const ctl_admin *a, const char *id)
{
    ctl_buf path = { 0 };
    if (route_path(&path, id) != 0)
        return ctl_fail("routes show", "out of memory");
    json_t *doc;
    int rc = ctl_admin_json(a, "routes show", "GET", path.p, NULL, &doc);
    ctl_buf_free(&path);
    if (rc != CTL_OK)
        return rc;
    char *s = json_dumps(doc, JSON_INDENT(2) | JSON_ENCODE_ANY);
    json_decref(doc);
    if (!s)
        return ctl_fail("routes show", "out of memory");
    printf("%s\n", s);
    free(s);
    return CTL_OK;
}

/* What a route change left behind: "orders: upstream order-service, no shadow (version 5)".
 * The answer may be the route itself, or carry it in "route"; "version" when present. */
static void print_change(const char *id, const json_t *resp)
{
    const json_t *route = json_object_get(resp, "route");
    if (!json_is_object(route))
        route = json_object_get(resp, "id") ? resp : NULL;
    json_t *version = json_object_get(resp, "version");
    ctl_buf b = { 0 };
    ctl_buf_printf(&b, "%s: ", id);
    if (route) {
        ctl_buf_printf(&b, "upstream ");
        route_target(&b, route);
        json_t *sh = json_object_get(route, "shadow");
        if (sh && !json_is_null(sh)) {
            ctl_buf_printf(&b, ", shadow ");
            value_summary(&b, sh);
        } else {
            ctl_buf_printf(&b, ", no shadow");
        }
    } else {
        ctl_buf_printf(&b, "changed");
    }
    if (json_is_integer(version))
        ctl_buf_printf(&b, " (version %" JSON_INTEGER_FORMAT ")", json_integer_value(version));
    printf("%s\n", ctl_buf_str(&b));
    ctl_buf_free(&b);
}

/* PATCH /admin/routes/ID with PATCH (a JSON merge patch), then prints the outcome. */
static int patch_route(const ctl_admin *a, const char *what, const char *id, json_t *patch)
{
    ctl_buf path = { 0 };
    if (!patch || route_path(&path, id) != 0) {
        json_decref(patch);
        ctl_buf_free(&path);
        return ctl_fail(what, "out of memory");
    }
    json_t *doc;
    int rc = ctl_admin_json(a, what, "PATCH", path.p, patch, &doc);
    json_decref(patch);
    if (rc != CTL_OK) {
        ctl_buf_free(&path);
        return rc;
    }
    /* An answer without the route (just {"version": N}): read the route back so the operator
     * sees what is in force now. Failing that read does not undo the change: still exit 0. */
    if (!json_is_object(json_object_get(doc, "route")) && !json_object_get(doc, "id")) {
        json_t *route;
        if (ctl_admin_json(a, what, "GET", path.p, NULL, &route) == CTL_OK && json_is_object(route))
            json_object_set_new(doc, "route", route);
        else
            json_decref(route);
    }
    ctl_buf_free(&path);
    print_change(id, doc);
    json_decref(doc);
    return CTL_OK;
}

/* Parses "UP=W,UP=W" into {"UP": W, ...}. Returns NULL with err naming the bad part. */
static json_t *parse_split(const char *spec, char *err, size_t errlen)
{
    json_t *w = json_object();
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!spec[0]) {
        snprintf(err, errlen, "empty split: want UP=W,UP=W");
        goto fail;
    }
    const char *p = spec;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        if (n == 0) {
            snprintf(err, errlen, "empty part in \"%s\": want UP=W,UP=W", spec);
            goto fail;
        }
        if (!eq) {
            snprintf(err, errlen, "\"%.*s\": want UP=W (no '=')", (int)n, p);
            goto fail;
        }
        size_t nl = (size_t)(eq - p), wl = n - nl - 1;
        if (nl == 0) {
            snprintf(err, errlen, "\"%.*s\": empty upstream name", (int)n, p);
            goto fail;
        }
        char name[256];
        if (nl >= sizeof name) {
            snprintf(err, errlen, "\"%.40s...\": upstream name too long", p);
            goto fail;
        }
        memcpy(name, p, nl);
        name[nl] = '\0';
        long long weight = 0;
        int ok = wl > 0 && wl <= 6;
        for (size_t i = 0; ok && i < wl; i++) {
            char c = eq[1 + i];
            ok = c >= '0' && c <= '9';
            weight = weight * 10 + (c - '0');
        }
        if (!ok || weight > CTL_MAX_WEIGHT) {
            snprintf(err, errlen, "\"%.*s\": weight \"%.*s\" is not an integer 0..%d", (int)n, p,
                     (int)wl, eq + 1, CTL_MAX_WEIGHT);
            goto fail;
        }
        if (json_object_get(w, name)) {
            snprintf(err, errlen, "\"%.*s\": upstream \"%s\" given twice", (int)n, p, name);
            goto fail;
        }
        if (json_object_set_new(w, name, json_integer(weight)) != 0) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        if (!end)
            break;
        p = end + 1;
    }
    return w;
fail:
    json_decref(w);
    return NULL;
}

/* LIMIT NULL: the gateway's default (100). */
static int cmd_routes_history(const ctl_admin *a, const char *limit)
{
    json_t *doc;
    char path[64];
    snprintf(path, sizeof path, "/admin/routes/history%s%s", limit ? "?limit=" : "",
             limit ? limit : "");
    int rc = ctl_admin_json(a, "routes history", "GET", path, NULL, &doc);
    if (rc != CTL_OK)
        return rc;
    json_t *changes = json_object_get(doc, "changes");
    if (!json_is_array(changes)) {
        json_decref(doc);
        return ctl_fail("routes history", "unexpected response: no \"changes\" array");
    }
    if (json_array_size(changes) == 0) {
        printf("no route changes recorded\n");
        json_decref(doc);
        return CTL_OK;
    }
    ctl_table t = { .cols = 6 };
    char *head[] = { "AT", "WHO", "ACTION", "ROUTE", "VERSION", "CHANGE" };
    int bad = ctl_table_row(&t, head);
    size_t i;
    json_t *ch;
    json_array_foreach(changes, i, ch) {
        ctl_buf c[6] = { { 0 } };
        value_summary(&c[0], json_object_get(ch, "at"));
        value_summary(&c[1], json_object_get(ch, "who"));
        value_summary(&c[2], json_object_get(ch, "action"));
        json_t *rid = json_object_get(ch, "route_id"), *up = json_object_get(ch, "upstream");
        if (json_is_string(up)) /* an upstream definition's change */
            ctl_buf_printf(&c[3], "upstream %s", json_string_value(up));
        else if (rid && !json_is_null(rid))
            value_summary(&c[3], rid);
        else
            ctl_buf_add(&c[3], "*", 1);
        value_summary(&c[4], json_object_get(ch, "version"));
        change_summary(&c[5], json_object_get(ch, "old"), json_object_get(ch, "new"));
        if (json_is_string(json_object_get(ch, "reason"))) /* a cutover plan's why */
            ctl_buf_printf(&c[5], " (%s)", json_string_value(json_object_get(ch, "reason")));
        char *cells[6] = { c[0].p, c[1].p, c[2].p, c[3].p, c[4].p, c[5].p };
        bad |= ctl_table_row(&t, cells);
        for (int k = 0; k < 6; k++)
            ctl_buf_free(&c[k]);
    }
    if (!bad)
        ctl_table_print(&t);
    ctl_table_free(&t);
    json_decref(doc);
    return bad ? ctl_fail("routes history", "out of memory") : CTL_OK;
}

static int cmd_routes_reload(const ctl_admin *a)
{
    json_t *doc;
    int rc = ctl_admin_json(a, "routes reload", "POST", "/admin/reload", NULL, &doc);
    if (rc != CTL_OK)
        return rc;
    ctl_buf b = { 0 };
    ctl_buf_printf(&b, "reloaded: version ");
    value_summary(&b, json_object_get(doc, "version"));
    ctl_buf_printf(&b, ", ");
    value_summary(&b, json_object_get(doc, "routes"));
    ctl_buf_printf(&b, " routes");
    printf("%s\n", ctl_buf_str(&b));
    ctl_buf_free(&b);
    json_decref(doc);
    return CTL_OK;
}

int ctl_cmd_rollback(const ctl_admin *a, const char *id)
{
    json_t *body = id ? json_pack("{s:s}", "id", id) : json_object();
    if (!body)
        return ctl_fail("rollback", "out of memory");
    json_t *doc;
    int rc = ctl_admin_json(a, "rollback", "POST", "/admin/rollback", body, &doc);
    json_decref(body);
    if (rc != CTL_OK)
        return rc;
    json_t *changed = json_object_get(doc, "changed");
    ctl_buf b = { 0 };
    if (json_is_array(changed) && json_array_size(changed) > 0) {
        ctl_buf_printf(&b, "rolled back to legacy: ");
        value_summary(&b, changed);
    } else if (json_is_array(changed)) {
        ctl_buf_printf(&b, "nothing to roll back: %s already on legacy",
                   id ? id : "every route");
    } else {
        ctl_buf_printf(&b, "rolled back to legacy: %s", id ? id : "every route");
    }
    json_t *v = json_object_get(doc, "version");
    if (json_is_integer(v))
        ctl_buf_printf(&b, " (version %" JSON_INTEGER_FORMAT ")", json_integer_value(v));
    printf("%s\n", ctl_buf_str(&b));
    ctl_buf_free(&b);
    json_decref(doc);
    return CTL_OK;
}

typedef struct ctl_sub {
    const char *name;
    int nargs;            /* operands after the subcommand name */
    const char *synopsis;
} ctl_sub;

static const ctl_sub routes_subs[] = {
    { "list", 0, "routes list" },
    { "show", 1, "routes show ID" },
    { "flip", 2, "routes flip ID UPSTREAM" },
    { "split", 2, "routes split ID UP=W,UP=W" },
    { "shadow", 2, "routes shadow ID UPSTREAM" },
    { "unshadow", 1, "routes unshadow ID" },
    { "history", 0, "routes history [--limit N]" },
    { "reload", 0, "routes reload" },
};

int ctl_cmd_routes(const ctl_admin *a, int argc, char **argv)
{
    if (argc < 1)
        return ctl_usage("routes", "routes list|show|flip|split|shadow|unshadow|history|reload ...",
                         "missing subcommand");
    const ctl_sub *sub = NULL;
    for (size_t i = 0; i < sizeof routes_subs / sizeof routes_subs[0]; i++) {
        if (strcmp(argv[0], routes_subs[i].name) == 0)
            sub = &routes_subs[i];
    }
    if (!sub)
        return ctl_usage("routes", "routes list|show|flip|split|shadow|unshadow|history|reload ...",
                         "unknown subcommand \"%s\"", argv[0]);
    char what[64];
    snprintf(what, sizeof what, "routes %s", sub->name);
    const char *limit = NULL;
    if (strcmp(sub->name, "history") == 0 && argc >= 2 && strcmp(argv[1], "--limit") == 0) {
        if (argc < 3)
            return ctl_usage(what, sub->synopsis, "--limit: missing N");
        limit = argv[2];
        size_t n = strlen(limit);
        if (n == 0 || n > 5 || strspn(limit, "0123456789") != n || atoi(limit) < 1 ||
            atoi(limit) > 10000)
            return ctl_usage(what, sub->synopsis, "--limit: \"%s\" is not a number from 1 to 10000",
                             limit);
        argc -= 2;
        argv += 2;
    }
    if (argc - 1 != sub->nargs)
        return ctl_usage(what, sub->synopsis, argc - 1 < sub->nargs ? "missing argument"
                                                                      : "too many arguments");
    for (int i = 1; i < argc; i++) {
        if (!argv[i][0])
            return ctl_usage(what, sub->synopsis, "empty argument");
    }
    const char *id = argc > 1 ? argv[1] : NULL, *arg = argc > 2 ? argv[2] : NULL;
    if (strcmp(sub->name, "list") == 0)
        return cmd_routes_list(a);
    if (strcmp(sub->name, "show") == 0)
        return cmd_routes_show(a, id);
    if (strcmp(sub->name, "history") == 0)
        return cmd_routes_history(a, limit);
    if (strcmp(sub->name, "reload") == 0)
        return cmd_routes_reload(a);
    if (strcmp(sub->name, "flip") == 0)
        return patch_route(a, what, id, json_pack("{s:s,s:n,s:n}", "upstream", arg, "split",
                                                  "sticky"));
    if (strcmp(sub->name, "split") == 0) {
        char err[512];
        json_t *w = parse_split(arg, err, sizeof err);
        if (!w)
            return ctl_usage(what, sub->synopsis, "%s", err);
        return patch_route(a, what, id, json_pack("{s:o}", "split", w));
    }
    if (strcmp(sub->name, "shadow") == 0)
        return patch_route(a, what, id, json_pack("{s:{s:s}}", "shadow", "upstream", arg));
    /* unshadow */
    return patch_route(a, what, id, json_pack("{s:n}", "shadow"));
}
