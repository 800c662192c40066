/* admin_cutover.c — the admin API for cutover plans (gateway/cutover.h):
 *
 *   GET  /admin/cutovers                         every plan with its status
 *   POST /admin/cutovers                         start: {"route","target","steps",...}
 *   GET  /admin/cutovers/{route}                 one plan's status
 *   GET  /admin/cutovers/{route}/verdict         the verdict, for external controllers
 *   POST /admin/cutovers/{route}/pause|resume|promote|abort
 *
 * 400 for a bad body, 404 for no such plan (or route), 405 for a wrong method, 409 for an
 * invalid transition; changes are answered once their route change is in force. */
#include <stdio.h>
#include <string.h>

#include "gateway/admin.h"
#include "gateway/cutover.h"

#define PREFIX "/admin/cutovers"

static int is(const gw_request *req, const char *m)
{
    return gw_slice_eq(req->method, m);
}

static void answer_read(json_t *doc, const char *missing, gw_store_done done, void *arg)
{
    if (!doc) {
        done(404, missing, NULL, arg);
        return;
    }
    done(0, NULL, doc, arg);
    json_decref(doc);
}

void gw_admin_cutover_request(gw_admin *a, gw_request *req, const char *who, const char *path,
                              const char *body, size_t len, gw_store_done done, void *arg)
{
    gw_cutover *c = a->cutover;
    int get = is(req, "GET") || is(req, "HEAD"), post = is(req, "POST");
    if (!c) {
        done(503, "cutover plans are not available", NULL, arg);
        return;
    }
    const char *rest = path + strlen(PREFIX); /* "" or "/route[/cmd]" */
    if (!rest[0]) {
        if (get) {
            answer_read(gw_cutover_list(c), "", done, arg);
        } else if (post) {
            json_error_t je;
            json_t *spec = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, &je);
            if (!spec || !json_is_object(spec)) {
                char msg[300];
                snprintf(msg, sizeof msg, "request body: %s",
                         spec ? "must be a JSON object" : je.text);
                json_decref(spec);
                done(400, msg, NULL, arg);
                return;
            }
            gw_cutover_start(c, spec, who, done, arg);
            json_decref(spec);
        } else {
            done(405, "method not allowed", NULL, arg);
        }
        return;
    }
    char route[RT_CUT_NAME_MAX], cmd[16] = "";
    const char *slash = strchr(rest + 1, '/');
    size_t rn = slash ? (size_t)(slash - rest - 1) : strlen(rest + 1);
    if (rn == 0 || rn >= sizeof route || (slash && (strchr(slash + 1, '/') ||
                                                    strlen(slash + 1) >= sizeof cmd))) {
        done(404, "no such cutover plan", NULL, arg);
        return;
    }
    memcpy(route, rest + 1, rn);
    route[rn] = '\0';
    if (slash)
        snprintf(cmd, sizeof cmd, "%s", slash + 1);
    char missing[200];
    snprintf(missing, sizeof missing, "no cutover plan for route \"%s\"", route);
    if (!cmd[0]) {
        if (!get)
            done(405, "method not allowed", NULL, arg);
        else
            answer_read(gw_cutover_status(c, route), missing, done, arg);
        return;
    }
    if (strcmp(cmd, "verdict") == 0) {
        if (!get)
            done(405, "method not allowed", NULL, arg);
        else
            answer_read(gw_cutover_verdict(c, route), missing, done, arg);
        return;
    }
    if (strcmp(cmd, "pause") && strcmp(cmd, "resume") && strcmp(cmd, "promote") &&
        strcmp(cmd, "abort")) {
        done(404, "not found (commands: pause, resume, promote, abort; GET verdict)", NULL, arg);
        return;
    }
    if (!post) {
        done(405, "method not allowed", NULL, arg);
        return;
    }
    gw_cutover_command(c, route, cmd, who, done, arg);
}
