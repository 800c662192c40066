/* fuzz_config.c — gateway.json through gw_config_load (the whole validation, every section,
 * address parsing). There is no from-string entry point, so each input is written to a
 * memfd and loaded as /proc/self/fd/N. Name resolution is made numeric-only here
 * (getaddrinfo below): an input naming a host must not send a DNS query per run. */
#include <dlfcn.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "gateway/config.h"

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

/* The libc one, numeric hosts only ("localhost" becomes 127.0.0.1). */
int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                struct addrinfo **res)
{
    static gai_fn real;
    if (!real)
        real = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo");
    struct addrinfo h = { 0 };
    if (hints)
        h = *hints;
    h.ai_flags |= AI_NUMERICHOST;
    if (node && strcmp(node, "localhost") == 0)
        node = "127.0.0.1";
    return real(node, service, &h, res);
}

static gw_config cfg; /* large: not on the stack */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        /* the environment overrides are part of what is tested only through the file */
        unsetenv("GATEWAY_LISTEN"), unsetenv("GATEWAY_ADMIN_LISTEN"), unsetenv("GATEWAY_ADMIN_TOKEN");
        unsetenv("GATEWAY_PG"), unsetenv("GATEWAY_REDIS");
        fd = memfd_create("gateway.json", 0);
        if (fd < 0)
            abort();
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
        abort();
    char err[1024];
    memset(&cfg, 0, sizeof cfg);
    int rc = gw_config_load(&cfg, path, err, sizeof err);
    if (rc < 0 && memchr(err, '\0', sizeof err) == NULL)
        __builtin_trap();
    /* the operator contract: an error names the file first ("FILE: json.path: reason") */
    if (rc < 0 && (strncmp(err, path, strlen(path)) != 0 || strncmp(err + strlen(path), ": ", 2) != 0 ||
                   err[strlen(path) + 2] == '\0'))
        __builtin_trap();
    if (rc == 0) {
        if (cfg.n_upstreams < 0 || cfg.n_upstreams > GW_MAX_UPSTREAMS)
            __builtin_trap();
        for (int i = 0; i < cfg.n_upstreams; i++) {
            const gw_upstream_conf *u = &cfg.upstreams[i];
            if (u->n_endpoints < 1 || u->n_endpoints > GW_MAX_ENDPOINTS)
                __builtin_trap();
            if (gw_config_upstream(&cfg, u->name, strlen(u->name)) == NULL)
                __builtin_trap();
        }
    }
    return 0;
}
