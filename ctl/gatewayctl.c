/* gatewayctl.c — the operator CLI (GATEWAY.md, "Operator contract").
 *
 *   routes ... / rollback ... / certs ...  the admin API, over plain blocking HTTP/1.1 (one connection per
 *                              call, Connection: close, 5 s send/receive/connect timeouts),
 *                              responses parsed with llhttp, bodies with jansson.
 *   db migrate / db status     PostgreSQL directly, through libpq (blocking is fine here).
 *
 * A CLI, not the gateway: it blocks, it exits, and it frees what a long-running process would
 * have to (so valgrind stays quiet) but does not try harder than that.
 *
 * Output: results on stdout; every error on stderr as "gatewayctl: <what>: <reason>".
 * Exit codes: 0 ok, 1 the server or the database refused or failed, 2 usage error. */
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

static const char usage_text[] =
    "usage: gatewayctl [--admin URL] [--token T] COMMAND\n"
    "\n"
    "Admin API commands (Authorization: Bearer T):\n"
    "  routes list                      the route table: id, methods, path, upstream or split,\n"
    "                                   shadow, and the table version\n"
    "  routes show ID                   one route as JSON\n"
    "  routes flip ID UPSTREAM          UPSTREAM answers route ID (drops split and sticky)\n"
    "  routes split ID UP=W,UP=W        weighted split, W an integer 0..100000\n"
    "  routes shadow ID UPSTREAM        copy route ID's requests to UPSTREAM, compare answers\n"
    "  routes unshadow ID               stop shadowing route ID\n"
    "  routes history [--limit N]       the audit trail, newest first (N: 1..10000, default 100)\n"
    "  routes reload                    re-read the route source now\n"
    "  upstreams list                   upstreams in force: name, source (routes or\n"
    "                                   gateway.json), endpoints, what uses them\n"
    "  upstreams show NAME              one upstream's definition as JSON\n"
    "  upstreams set NAME HOST:PORT[,HOST:PORT...]\n"
    "                                   NAME's endpoints (a new upstream when there is none)\n"
    "  upstreams set NAME --json DEF    NAME's whole definition (gateway.json's shape)\n"
    "  upstreams delete NAME            remove NAME (refused while a route or plan uses it)\n"
    "  rollback ID                      route ID back to the legacy monolith\n"
    "  rollback --all                   every route back to the legacy monolith, one change\n"
    "  certs list                       TLS certificates in use: listener, subject, SANs, key\n"
    "                                   type, expiry, file\n"
    "  certs reload                     reload every certificate now (all or nothing; the\n"
    "                                   old ones keep serving when one pair is bad)\n"
    "  cutover start ROUTE UPSTREAM [--steps 0,1,5,25,50,100] [--step-time 30s]\n"
    "        [--min-requests N] [--max-error-rate P] [--max-error-delta P] [--max-p99 MS]\n"
    "        [--max-p99-ratio R] [--max-mismatch P] [--max-fallback-rate P]\n"
    "        [--rollback step|all] [--window 60s] [--inconclusive 5m]\n"
    "                                   a cutover plan: ROUTE moves to UPSTREAM step by step,\n"
    "                                   each step judged on the gates, rolled back on failure\n"
    "  cutover status [ROUTE]           every plan, or one with its gates and evidence\n"
    "  cutover pause|resume ROUTE       hold a plan at its step / judge the step again\n"
    "  cutover promote ROUTE            skip to 100 %: UPSTREAM answers ROUTE\n"
    "  cutover abort ROUTE              stop the plan, ROUTE back to its legacy upstream\n"
    "  cutover verdict ROUTE            the verdict as JSON (for CI and external controllers)\n"
    "\n"
    "Database commands (PostgreSQL, libpq):\n"
    "  db migrate [--to VERSION]        apply pending migrations (up to VERSION), each in its\n"
    "                                   own transaction\n"
    "  db migrate --down [--to VERSION] roll back the latest applied migration (or every\n"
    "                                   one above VERSION) with its .down.sql\n"
    "  db status                        every known migration, applied or pending\n"
    "  db options: --pg CONNINFO (default $GATEWAY_PG)\n"
    "              --dir DIR     (default $GATEWAY_SQL_DIR, else conf/sql)\n"
    "  Migration files: DIR/NNNNNN_name.up.sql and DIR/NNNNNN_name.down.sql; applied ones are\n"
    "  recorded in gateway_schema_migrations. Files must not contain BEGIN/COMMIT.\n"
    "\n"
    "Options:\n"
    "  --admin URL   admin API base URL (default $GATEWAY_ADMIN_URL, else\n"
    "                http://$GATEWAY_ADMIN_LISTEN, else http://127.0.0.1:9090)\n"
    "  --token T     admin token (default $GATEWAY_ADMIN_TOKEN)\n"
    "  -h, --help    this text\n"
    "\n"
    "Exit codes: 0 ok, 1 the server or database refused or failed, 2 usage error.\n";

/* ---- main ---------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    const char *admin_url = NULL, *token = getenv("GATEWAY_ADMIN_TOKEN");
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            fputs(usage_text, stdout);
            return CTL_OK;
        }
        if (strcmp(arg, "--") == 0) {
            i++;
            break;
        }
        const char **dst = NULL;
        size_t ol = 0;
        if (strncmp(arg, "--admin", 7) == 0 && (arg[7] == '\0' || arg[7] == '=')) {
            dst = &admin_url;
            ol = 7;
        } else if (strncmp(arg, "--token", 7) == 0 && (arg[7] == '\0' || arg[7] == '=')) {
            dst = &token;
            ol = 7;
        } else {
            return ctl_usage("usage", NULL, "unknown option \"%s\"", arg);
        }
        if (arg[ol] == '=')
            *dst = arg + ol + 1;
        else if (i + 1 < argc)
            *dst = argv[++i];
        else
            return ctl_usage("usage", NULL, "%.*s needs a value", (int)ol, arg);
    }
    if (i >= argc)
        return ctl_usage("usage", NULL, "missing command");
    const char *cmd = argv[i];
    int sub_argc = argc - i - 1;
    char **sub_argv = argv + i + 1;
    for (int k = 0; k < sub_argc; k++) {
        if (strcmp(sub_argv[k], "--help") == 0 || strcmp(sub_argv[k], "-h") == 0) {
            fputs(usage_text, stdout);
            return CTL_OK;
        }
    }
    if (strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return CTL_OK;
    }
    if (strcmp(cmd, "db") == 0)
        return ctl_cmd_db(sub_argc, sub_argv);
    if (strcmp(cmd, "routes") != 0 && strcmp(cmd, "rollback") != 0 && strcmp(cmd, "certs") != 0 &&
        strcmp(cmd, "cutover") != 0 && strcmp(cmd, "upstreams") != 0)
        return ctl_usage("usage", NULL, "unknown command \"%s\"", cmd);

    /* Validate the command line before anything touches the network. */
    const char *rollback_id = NULL;
    if (strcmp(cmd, "rollback") == 0) {
        if (sub_argc != 1 || !sub_argv[0][0])
            return ctl_usage("rollback", "rollback ID | rollback --all",
                             sub_argc ? "want exactly one of ID or --all" : "missing ID or --all");
        if (strcmp(sub_argv[0], "--all") != 0) {
            if (sub_argv[0][0] == '-')
                return ctl_usage("rollback", "rollback ID | rollback --all",
                                 "unknown option \"%s\"", sub_argv[0]);
            rollback_id = sub_argv[0];
        }
    }

    char url[600];
    if (!admin_url || !admin_url[0]) {
        const char *env = getenv("GATEWAY_ADMIN_URL");
        const char *listen = getenv("GATEWAY_ADMIN_LISTEN");
        if (env && env[0])
            admin_url = env;
        else if (listen && listen[0]) {
            snprintf(url, sizeof url, "http://%s", listen);
            admin_url = url;
        } else {
            admin_url = "http://127.0.0.1:9090";
        }
    }
    ctl_admin a = { .token = token };
    char err[256];
    if (ctl_admin_parse_url(&a, admin_url, err, sizeof err) != 0)
        return ctl_usage("--admin", NULL, "\"%s\": %s", admin_url, err);

    if (strcmp(cmd, "rollback") == 0)
        return ctl_cmd_rollback(&a, rollback_id);
    if (strcmp(cmd, "certs") == 0)
        return ctl_cmd_certs(&a, sub_argc, sub_argv);
    if (strcmp(cmd, "cutover") == 0)
        return ctl_cmd_cutover(&a, sub_argc, sub_argv);
    if (strcmp(cmd, "upstreams") == 0)
        return ctl_cmd_upstreams(&a, sub_argc, sub_argv);
    return ctl_cmd_routes(&a, sub_argc, sub_argv);
}
