/* ctl_upstreams.c — gatewayctl upstreams list | show NAME | set NAME ... | delete NAME: the
 * live upstream definitions through the admin API (/admin/upstreams). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/ctl.h"

static const char synopsis[] =
    "upstreams list | show NAME | set NAME HOST:PORT[,HOST:PORT...] | set NAME --json DEF | "
    "delete NAME";

static int upstream_path(ctl_buf *b, const char *name)
{
    return ctl_buf_printf(b, "/admin/upstreams/") | ctl_path_segment(b, name);
}

static int cmd_list(const ctl_admin *a)
{
    json_t *doc;
    int rc = ctl_admin_json(a, "upstreams list", "GET", "/admin/upstreams", NULL, &doc);
    if (rc != CTL_OK)
        return rc;
    ctl_table t = { .cols = 4 };
    char *head[] = { "NAME", "SOURCE", "ENDPOINTS", "USED BY" };
    int bad = ctl_table_row(&t, head);
    size_t i, k;
    json_t *u, *x;
    json_array_foreach(json_object_get(doc, "upstreams"), i, u) {
        ctl_buf eps = { 0 }, used = { 0 };
        json_array_foreach(json_object_get(json_object_get(u, "definition"), "endpoints"), k, x)
            ctl_buf_printf(&eps, "%s%s", k ? "," : "", json_string_value(x));
        json_array_foreach(json_object_get(u, "used_by"), k, x)
            ctl_buf_printf(&used, "%s%s", k ? "," : "", json_string_value(x));
        if (!used.p)
            ctl_buf_add(&used, "-", 1);
        char *row[] = { (char *)json_string_value(json_object_get(u, "name")),
                        (char *)json_string_value(json_object_get(u, "source")),
                        (char *)ctl_buf_str(&eps), (char *)ctl_buf_str(&used) };
        bad |= ctl_table_row(&t, row);
        ctl_buf_free(&eps);
        ctl_buf_free(&used);
    }
    if (!bad)
        ctl_table_print(&t);
    ctl_table_free(&t);
    json_decref(doc);
    return bad ? ctl_fail("upstreams list", "out of memory") : CTL_OK;
}

static int print_json(const char *what, json_t *doc)
{
    char *s = json_dumps(doc, JSON_INDENT(2) | JSON_ENCODE_ANY);
    json_decref(doc);
    if (!s)
        return ctl_fail(what, "out of memory");
    printf("%s\n", s);
    free(s);
    return CTL_OK;
}

/* "HOST:PORT,HOST:PORT" as a JSON array of strings. */
static json_t *endpoints_of(const char *spec)
{
    json_t *a = json_array();
    const char *p = spec;
    while (a && *p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 0 || json_array_append_new(a, json_stringn(p, n)) != 0) {
            json_decref(a);
            return NULL;
        }
        p += n + (e ? 1 : 0);
    }
    return a;
}

/* set: --json DEF replaces the definition (PUT); endpoints alone change only the endpoints
 * of an existing upstream (PATCH) or define a new one with them (PUT). */
static int cmd_set(const ctl_admin *a, const char *name, const char *arg, const char *json)
{
    const char *what = "upstreams set";
    json_t *body;
    const char *method = "PUT";
    ctl_buf path = { 0 };
    if (upstream_path(&path, name) != 0)
        return ctl_fail(what, "out of memory");
    if (json) {
        json_error_t jerr;
        if (!(body = json_loads(json, JSON_REJECT_DUPLICATES, &jerr)) || !json_is_object(body)) {
            json_decref(body);
            ctl_buf_free(&path);
            return ctl_usage(what, synopsis, "--json: %s", body ? "must be an object" : jerr.text);
        }
    } else {
        json_t *eps = endpoints_of(arg);
        if (!eps) {
            ctl_buf_free(&path);
            return ctl_usage(what, synopsis, "\"%s\": want HOST:PORT[,HOST:PORT...]", arg);
        }
        body = json_pack("{s:o}", "endpoints", eps);
        ctl_resp r = { 0 };
        char err[256];
        int got = ctl_http_call(a, "GET", path.p, NULL, &r, err, sizeof err) == 0;
        if (got && r.status == 200)
            method = "PATCH";
        else if (!got || r.status != 404) {
            /* only a missing upstream is defined by its endpoints alone: a PUT after any other
             * answer would replace a definition we could not read (tls, host, timeouts lost) */
            if (got) {
                snprintf(err, sizeof err, "HTTP %d: %s", r.status, ctl_buf_str(&r.body));
                err[strcspn(err, "\r\n")] = '\0';
            }
            ctl_buf_free(&r.body);
            json_decref(body);
            int rc = ctl_fail(what, "GET %s%s: %s (nothing changed)", a->base, path.p, err);
            ctl_buf_free(&path);
            return rc;
        }
        ctl_buf_free(&r.body);
    }
    json_t *doc;
    int rc = ctl_admin_json(a, what, method, path.p, body, &doc);
    json_decref(body);
    if (rc == CTL_OK) {
        json_t *v = json_object_get(doc, "version");
        printf("%s: %s (version %" JSON_INTEGER_FORMAT ")\n", name,
               json_array_size(json_object_get(doc, "changed")) ? "changed" : "unchanged",
               json_integer_value(v));
        json_decref(doc);
    }
    ctl_buf_free(&path);
    return rc;
}

int ctl_cmd_upstreams(const ctl_admin *a, int argc, char **argv)
{
    if (argc < 1)
        return ctl_usage("upstreams", synopsis, "missing subcommand");
    const char *sub = argv[0];
    int want = strcmp(sub, "list") == 0 ? 1 : strcmp(sub, "set") == 0 ? 3 : 2;
    if (strcmp(sub, "set") == 0 && argc >= 3 && strcmp(argv[2], "--json") == 0)
        want = 4;
    if (strcmp(sub, "list") && strcmp(sub, "show") && strcmp(sub, "set") && strcmp(sub, "delete"))
        return ctl_usage("upstreams", synopsis, "unknown subcommand \"%s\"", sub);
    if (argc != want)
        return ctl_usage("upstreams", synopsis, argc < want ? "missing argument" : "too many arguments");
    for (int i = 1; i < argc; i++)
        if (!argv[i][0])
            return ctl_usage("upstreams", synopsis, "empty argument");
    if (strcmp(sub, "list") == 0)
        return cmd_list(a);
    if (strcmp(sub, "set") == 0)
        return cmd_set(a, argv[1], argv[2], want == 4 ? argv[3] : NULL);
    ctl_buf path = { 0 };
    if (upstream_path(&path, argv[1]) != 0)
        return ctl_fail("upstreams", "out of memory");
    json_t *doc;
    int del = strcmp(sub, "delete") == 0;
    int rc = ctl_admin_json(a, del ? "upstreams delete" : "upstreams show", del ? "DELETE" : "GET",
                            path.p, NULL, &doc);
    ctl_buf_free(&path);
    if (rc != CTL_OK)
        return rc;
    if (!del)
        return print_json("upstreams show", doc);
    printf("%s: removed (version %" JSON_INTEGER_FORMAT ")\n", argv[1],
           json_integer_value(json_object_get(doc, "version")));
    json_decref(doc);
    return CTL_OK;
}
