/* main.c — the gateway process: read and check the configuration and routes, start the
 * workers, reload routes on SIGHUP, drain and exit 0 on SIGTERM/SIGINT.
 *
 *   gateway -c conf/gateway.json           run
 *   gateway -c conf/gateway.json --check   validate config and routes; print the first
 *                                          error as "FILE: json.path: reason"; exit 1 (0 ok)
 */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "routes/route_table.h"
#include "composers/spec.h"
#include "gateway/admin.h"
#include "gateway/certs.h"
#include "gateway/cutover.h"
#include "gateway/config.h"
#include "gateway/metrics.h"
#include "gateway/route_store.h"
#include "gateway/span_export.h"
#include "routes/upstreams.h"
#include "gateway/resolver.h"
#include "gateway/worker.h"

static gw_config cfg;
static gw_worker *workers;
static int n_workers;
static uv_signal_t sig_term, sig_int, sig_hup;
static int stopping;
static int exit_code; /* 1 when a listener could not be opened */
static gw_admin admin;
static gw_route_store *store;
static gw_resolver *resolver; /* endpoint names re-resolved in the background */
static gw_cutover *cutover;
static cmp_spec *compositions;
static gw_certs certs;

static void usage(FILE *f)
{
    fprintf(f, "usage: gateway -c FILE [--check]\n"
               "  -c FILE    gateway configuration (JSON), e.g. conf/gateway.json\n"
               "  --check    validate the configuration and its routes, then exit\n"
               "environment: GATEWAY_LISTEN, GATEWAY_ADMIN_LISTEN, GATEWAY_ADMIN_TOKEN,\n"
               "             GATEWAY_PG, GATEWAY_REDIS override the file\n");
}

static int open_access_log(const gw_config *c)
{
    if (strcmp(c->access_log, "off") == 0)
        return -1;
    if (strcmp(c->access_log, "stderr") == 0)
        return STDERR_FILENO;
    if (strcmp(c->access_log, "stdout") == 0)
        return STDOUT_FILENO;
    int fd = open(c->access_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        fprintf(stderr, "gateway: %s: log.access: cannot open \"%s\": %s\n", c->path,
                c->access_log, strerror(errno));
    return fd;
}

/* SIGHUP: re-read the routes file; a table that fails validation is rejected whole and
 * the running one stays. Off the workers' loops: this is the main thread. */
/* SIGHUP: re-read the active route source; a table that fails validation is rejected
 * whole and the running one stays (the store logs and counts it). */
static void on_hup(uv_signal_t *h, int sig)
{
    (void)h;
    (void)sig;
    gw_route_store_reload(store, NULL, NULL);
    gw_certs_reload(&certs, NULL, NULL); /* logs the outcome; the old ones stay on failure */
}

/* Off loopback a short token can be guessed: refuse it; and say that the admin API is
 * reachable from elsewhere. Also for --check: it is a configuration error. */
static int check_admin_tokens(const gw_config *c)
{
    char err[1200];
    const char *env = getenv("GATEWAY_ADMIN_TOKEN");
    if (gw_admin_check_tokens(c, env && env[0], err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    if (!gw_admin_on_loopback(c))
        fprintf(stderr, "gateway: warning: %s: admin.listen %s is not loopback: the admin API "
                "(route changes) is reachable from other hosts; keep it behind a firewall\n",
                c->path, c->admin_listen);
    return 0;
}

/* The workers bind with SO_REUSEPORT, which would let a second gateway on the same port
 * start and silently take half the connections. A bind without SO_REUSEPORT fails with
 * EADDRINUSE while any socket listens there (SO_REUSEADDR: connections in TIME_WAIT from a
 * previous run do not count), so probe with one first. */
static int probe_port(const char *field, const char *shown, const struct sockaddr_storage *ss,
                      socklen_t len)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0; /* the real bind reports it */
    int one = 1;
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc = bind(fd, (const struct sockaddr *)ss, len);
    int saved = errno;
    close(fd);
    if (rc != 0 && saved == EADDRINUSE) {
        fprintf(stderr, "gateway: %s: %s: %s is already in use (another gateway running?); "
                "not starting\n", cfg.path, field, shown);
        return -1;
    }
    return 0;
}

/* How the configuration names listener I in messages. */
static void listener_field(int i, char *out, size_t outlen)
{
    if (cfg.n_listeners == 1)
        snprintf(out, outlen, "listen");
    else
        snprintf(out, outlen, "listeners[%d].listen", i);
}

static void on_stop(uv_signal_t *h, int sig)
{
    (void)h;
    if (stopping)
        return;
    stopping = 1;
    fprintf(stderr, "gateway: %s: draining (deadline %u ms)\n", sig == SIGINT ? "SIGINT" : "SIGTERM",
            cfg.drain_timeout_ms);
    for (int i = 0; i < n_workers; i++)
        gw_worker_drain(&workers[i]);
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&sig_hup, NULL);
    gw_cutover_close(cutover); /* no new plan step; those in flight end through the admin */
    cutover = NULL;
    admin.cutover = NULL;
    gw_admin_stop(&admin);
    gw_certs_stop(&certs);
    gw_route_store_close(store);
    store = NULL;
    gw_resolver_stop(resolver);
    resolver = NULL;
}

int main(int argc, char **argv)
{
    const char *file = NULL;
    int check = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-c") == 0 && i + 1 < argc)
            file = argv[++i];
        else if (strcmp(argv[i], "--check") == 0 || strcmp(argv[i], "-t") == 0)
            check = 1;
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "gateway: unknown argument \"%s\"\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!file) {
        usage(stderr);
        return 2;
    }
    char err[1024];
    if (gw_config_load(&cfg, file, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (gw_config_upstreams_install(&cfg) != 0) {
        fprintf(stderr, "gateway: out of memory\n");
        return 1;
    }
    if (cfg.composers_file[0] && !(compositions = cmp_spec_load(cfg.composers_file, err, sizeof err))) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (check_admin_tokens(&cfg) != 0) {
        cmp_spec_free(compositions);
        return 1;
    }
    /* the certificates: loaded (blocking) before anything listens, and by --check */
    if (gw_certs_open(&certs, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        cmp_spec_free(compositions);
        return 1;
    }
    if (check) {
        rt_table *routes = gw_route_store_check(&cfg, err, sizeof err);
        if (!routes) {
            fprintf(stderr, "%s\n", err);
            cmp_spec_free(compositions);
            gw_certs_free(&certs);
            return 1;
        }
        char cut_path[1100];
        gw_cutover_state_path(&cfg, cut_path, sizeof cut_path);
        if (gw_cutover_check(cut_path, err, sizeof err) != 0) {
            fprintf(stderr, "%s\n", err);
            rt_table_unref(routes);
            cmp_spec_free(compositions);
            gw_certs_free(&certs);
            return 1;
        }
        int n_tls = 0;
        for (int i = 0; i < cfg.n_listeners; i++)
            n_tls += cfg.listeners[i].tls;
        printf("%s: ok (%d upstreams, %d routes, %d compositions, %d listeners, %d TLS)\n", file,
               cfg.n_upstreams, rt_table_count(routes), compositions ? compositions->n : 0,
               cfg.n_listeners, n_tls);
        rt_table_unref(routes);
        cmp_spec_free(compositions);
        gw_certs_free(&certs);
        return 0;
    }
    for (int i = 0; i < cfg.n_listeners; i++) {
        char field[64];
        listener_field(i, field, sizeof field);
        if (probe_port(field, cfg.listeners[i].listen, &cfg.listeners[i].addr,
                       cfg.listeners[i].addrlen) != 0) {
            cmp_spec_free(compositions);
            return 1;
        }
    }
    if (probe_port("admin.listen", cfg.admin_listen, &cfg.admin_addr, cfg.admin_addrlen) != 0) {
        cmp_spec_free(compositions);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t *loop = uv_default_loop();
    if (gw_route_store_open(&store, loop, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int log_fd = open_access_log(&cfg);
    if (log_fd < 0 && strcmp(cfg.access_log, "off") != 0)
        return 1;

    uv_signal_init(loop, &sig_term);
    uv_signal_init(loop, &sig_int);
    uv_signal_init(loop, &sig_hup);
    uv_signal_start(&sig_term, on_stop, SIGTERM);
    uv_signal_start(&sig_int, on_stop, SIGINT);
    uv_signal_start(&sig_hup, on_hup, SIGHUP);

    n_workers = cfg.workers;
    if (gw_span_export_start(&cfg, n_workers) != 0) {
        fprintf(stderr, "gateway: %s: tracing: cannot start the span exporter\n", cfg.path);
        return 1;
    }
    workers = calloc((size_t)n_workers, sizeof *workers);
    for (int i = 0; i < n_workers; i++) {
        int r = gw_worker_start(&workers[i], i, &cfg, compositions, log_fd, &certs);
        if (r < 0) {
            char field[64];
            int l = workers[i].failed_listener;
            listener_field(l, field, sizeof field);
            fprintf(stderr, "gateway: %s: %s: cannot listen on %s: %s\n", cfg.path, field,
                    cfg.listeners[l].listen, uv_strerror(r));
            gw_worker_join(&workers[i]);
            for (int j = 0; j < i; j++)
                gw_worker_drain(&workers[j]);
            for (int j = 0; j < i; j++)
                gw_worker_join(&workers[j]);
            free(workers);
            gw_span_export_stop();
            gw_route_store_close(store);
            rt_current_clear();
            return 1;
        }
    }
    admin.cfg = &cfg;
    admin.n_workers = n_workers;
    admin.metrics = calloc((size_t)n_workers, sizeof *admin.metrics);
    for (int i = 0; i < n_workers; i++)
        admin.metrics[i] = workers[i].metrics;
    admin.store = store;
    admin.certs = &certs;
    gw_certs_watch(&certs, loop);
    int ar = gw_admin_start(&admin, loop);
    if (ar < 0) {
        fprintf(stderr, "gateway: %s: admin.listen: cannot listen on %s: %s\n", cfg.path,
                cfg.admin_listen, uv_strerror(ar));
        exit_code = 1;
        on_stop(&sig_term, SIGTERM);
    }
    char cut_path[1100];
    gw_cutover_state_path(&cfg, cut_path, sizeof cut_path);
    if (ar >= 0 && gw_cutover_open(&cutover, loop, &admin, cut_path,
                                      gw_route_store_pg(store), err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        exit_code = 1;
        on_stop(&sig_term, SIGTERM);
    }
    admin.cutover = cutover;
    if (!stopping)
        resolver = gw_resolver_start(loop);
    admin.ready = 1;
    char shown[GW_MAX_LISTENERS * 140] = "";
    for (int i = 0, at = 0; i < cfg.n_listeners && at < (int)sizeof shown; i++)
        at += snprintf(shown + at, sizeof shown - (size_t)at, "%s%s%s", i ? ", " : "",
                       cfg.listeners[i].tls ? "https://" : "", cfg.listeners[i].listen);
    fprintf(stderr, "gateway: listening on %s (admin %s), %d workers, routes from %s\n",
            shown, cfg.admin_listen, n_workers,
            cfg.routes_source == GW_ROUTES_FILE ? cfg.routes_file : "postgres");
    uv_run(loop, UV_RUN_DEFAULT);
    for (int i = 0; i < n_workers; i++)
        gw_worker_join(&workers[i]);
    gw_span_export_stop(); /* the last spans are in: one bounded flush */
    for (int i = 0; i < n_workers; i++)
        free(workers[i].metrics);
    free(admin.metrics);
    free(workers);
    cmp_spec_free(compositions);
    gw_certs_free(&certs);
    rt_current_clear();
    rt_upstreams_reset();
    uv_loop_close(loop);
    fprintf(stderr, "gateway: stopped\n");
    return exit_code;
}
