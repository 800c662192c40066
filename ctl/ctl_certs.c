/* ctl_certs.c — gatewayctl certs list | reload: the TLS listeners' certificates through the
 * admin API (GET /admin/certificates, POST /admin/certificates/reload). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl/ctl.h"

static const char *str(json_t *o, const char *k)
{
    const char *s = json_string_value(json_object_get(o, k));
    return s ? s : "";
}

/* One row per certificate: listener, file, subject, SANs, key type, expiry (days left). */
static int print_certs(json_t *doc)
{
    ctl_table t = { .cols = 6 };
    char *head[] = { "LISTENER", "SUBJECT", "SANS", "KEY", "EXPIRES", "FILE" };
    int bad = ctl_table_row(&t, head);
    size_t i, k;
    json_t *l, *c;
    json_array_foreach(json_object_get(doc, "listeners"), i, l) {
        json_array_foreach(json_object_get(l, "certificates"), k, c) {
            ctl_buf sans = { 0 }, exp = { 0 };
            size_t j;
            json_t *n;
            json_array_foreach(json_object_get(c, "sans"), j, n)
                ctl_buf_printf(&sans, "%s%s", j ? "," : "", json_string_value(n));
            long long left = (long long)json_integer_value(json_object_get(c, "expires_in_s"));
            ctl_buf_printf(&exp, "%s (%lld days)", str(c, "not_after"), left / 86400);
            char *row[] = { (char *)str(l, "listen"), (char *)str(c, "subject"),
                            (char *)ctl_buf_str(&sans), (char *)str(c, "key_type"),
                            (char *)ctl_buf_str(&exp), (char *)str(c, "file") };
            bad |= ctl_table_row(&t, row);
            ctl_buf_free(&sans);
            ctl_buf_free(&exp);
        }
    }
    ctl_table_print(&t);
    ctl_table_free(&t);
    return bad ? ctl_fail("certs", "out of memory") : CTL_OK;
}

int ctl_cmd_certs(const ctl_admin *a, int argc, char **argv)
{
    static const char synopsis[] = "certs list | certs reload";
    if (argc != 1)
        return ctl_usage("certs", synopsis, argc ? "too many arguments" : "missing subcommand");
    json_t *doc = NULL;
    int rc;
    if (strcmp(argv[0], "list") == 0) {
        rc = ctl_admin_json(a, "certs list", "GET", "/admin/certificates", NULL, &doc);
    } else if (strcmp(argv[0], "reload") == 0) {
        rc = ctl_admin_json(a, "certs reload", "POST", "/admin/certificates/reload", NULL, &doc);
        if (rc == CTL_OK)
            printf("certificates reloaded\n");
    } else {
        return ctl_usage("certs", synopsis, "unknown subcommand \"%s\"", argv[0]);
    }
    if (rc != CTL_OK)
        return rc;
    rc = print_certs(doc);
    json_decref(doc);
    return rc;
}
