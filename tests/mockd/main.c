/* main.c — mockd's command line, signals and loop.
 *
 *   mockd --listen 127.0.0.1:PORT [--name NAME] [--latency-ms N] [--error-rate F]
 *         [--hang-rate F] [--reset-rate F] [--seed N]
 *
 * Prints "mockd NAME listening on ADDR" to stderr once listening (ADDR with the bound
 * port, so --listen 127.0.0.1:0 works). SIGTERM/SIGINT: every request is aborted, every
 * handle closed, exit 0; a second signal exits at once. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway/config.h"
#include "http/gw_errors.h"
#include "tests/mockd/mockd.h"

static mk_ctx ctx;
static uv_signal_t sig_term, sig_int;

static void usage(FILE *f)
{
    fprintf(f, "usage: mockd --listen HOST:PORT [--name NAME] [--latency-ms N] [--error-rate F]\n"
               "             [--hang-rate F] [--reset-rate F] [--seed N]\n");
}

static int parse_rate(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= 0.0 && v <= 1.0)) return -1;
    *out = v;
    return 0;
}

static int parse_uint(const char *s, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    if (*s < '0' || *s > '9') return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max) return -1;
    *out = v;
    return 0;
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

static void on_server_closed(gw_server *s)
{
    gw_server_free(s);
    ctx.server = NULL;
    uv_walk(ctx.loop, close_walk, NULL); /* the signal handles, anything left */
}

static void on_signal(uv_signal_t *h, int signum)
{
    (void)h;
    (void)signum;
    if (ctx.stopping) _exit(0);
    ctx.stopping = 1;
    gw_server_close(ctx.server, on_server_closed);
}

int main(int argc, char **argv)
{
    const char *listen = NULL;
    uint64_t v;
    int rc;

    memset(&ctx, 0, sizeof ctx);
    snprintf(ctx.conf.name, sizeof ctx.conf.name, "mockd");
    ctx.conf.seed = 1;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *opt = arg, *val = NULL;
        char name[32];
        const char *eq = strchr(opt, '=');
        if (strcmp(opt, "-h") == 0 || strcmp(opt, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (eq && (size_t)(eq - opt) < sizeof name) { /* --opt=value */
            memcpy(name, opt, (size_t)(eq - opt));
            name[eq - opt] = 0;
            opt = name;
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        }
        if (!val) goto bad;
        if (strcmp(opt, "--listen") == 0)
            listen = val;
        else if (strcmp(opt, "--name") == 0) {
            if (!*val || strlen(val) >= sizeof ctx.conf.name || strpbrk(val, "\r\n\"\\")) goto bad;
            snprintf(ctx.conf.name, sizeof ctx.conf.name, "%s", val);
        } else if (strcmp(opt, "--latency-ms") == 0) {
            if (parse_uint(val, UINT32_MAX, &v)) goto bad;
            ctx.conf.latency_ms = (uint32_t)v;
        } else if (strcmp(opt, "--error-rate") == 0) {
            if (parse_rate(val, &ctx.conf.error_rate)) goto bad;
        } else if (strcmp(opt, "--hang-rate") == 0) {
            if (parse_rate(val, &ctx.conf.hang_rate)) goto bad;
        } else if (strcmp(opt, "--reset-rate") == 0) {
            if (parse_rate(val, &ctx.conf.reset_rate)) goto bad;
        } else if (strcmp(opt, "--seed") == 0) {
            if (parse_uint(val, UINT64_MAX, &ctx.conf.seed)) goto bad;
        } else
            goto bad;
        continue;
    bad:
        fprintf(stderr, "mockd: bad option or value: %s%s%s\n", arg, val && val != arg ? " " : "",
                val && !strchr(arg, '=') ? val : "");
        usage(stderr);
        return 2;
    }
    if (!listen) {
        fprintf(stderr, "mockd: --listen is required\n");
        usage(stderr);
        return 2;
    }

    struct sockaddr_storage addr;
    socklen_t addrlen;
    if ((rc = gw_parse_hostport(listen, &addr, &addrlen)) != 0) {
        fprintf(stderr, "mockd: bad --listen address %s\n", listen);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    mk_handlers_init();
    ctx.rng = ctx.conf.seed;
    static uv_loop_t loop;
    if ((rc = uv_loop_init(&loop)) != 0) goto fail_loop;
    ctx.loop = &loop;
    if (mk_stats_init(&ctx.stats) != 0) {
        rc = UV_ENOMEM;
        goto fail_stats;
    }

    gw_server_opts opts;
    memset(&opts, 0, sizeof opts);
    opts.limits = (gw_server_limits){
        .max_uri_bytes = 64 * 1024,
        .max_header_bytes = 256 * 1024,
        .max_headers = GW_MAX_HEADERS,
        .max_body_bytes = 0, /* unlimited */
        .header_timeout_ms = 60000,
        .body_timeout_ms = 60000,
        .idle_timeout_ms = 60000,
        .send_timeout_ms = 60000,
    };
    opts.gateway_headers = 0;
    opts.data = &ctx;
    if ((rc = gw_server_init(&ctx.server, &loop, (struct sockaddr *)&addr, &opts, &mk_handler)) != 0)
        goto fail_server;

    uv_signal_init(&loop, &sig_term);
    uv_signal_init(&loop, &sig_int);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);

    char host[INET6_ADDRSTRLEN] = "?";
    if (addr.ss_family == AF_INET6)
        uv_ip6_name((struct sockaddr_in6 *)&addr, host, sizeof host);
    else
        uv_ip4_name((struct sockaddr_in *)&addr, host, sizeof host);
    fprintf(stderr, addr.ss_family == AF_INET6 ? "mockd %s listening on [%s]:%d\n"
                                               : "mockd %s listening on %s:%d\n",
            ctx.conf.name, host, gw_server_port(ctx.server));

    uv_run(&loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(&loop);
    mk_stats_free(&ctx.stats);
    mk_doc_cache_free();
    json_decref(ctx.scripts);
    if (rc != 0) {
        fprintf(stderr, "mockd: handles left open at exit: %s\n", gw_strerror(rc));
        return 1;
    }
    return 0;

fail_server:
    mk_stats_free(&ctx.stats);
fail_stats:
    uv_loop_close(&loop);
fail_loop:
    fprintf(stderr, "mockd: cannot listen on %s: %s\n", listen, gw_strerror(rc));
    return 1;
}
