/* certs.h — the TLS listeners' certificates, process-wide: one snapshot slot per TLS
 * listener (http/tls.h), loaded at start, reloaded live on SIGHUP, on a change of any of the
 * files (watched like the routes file) and from the admin API. A reload builds every
 * listener's snapshot on the threadpool and publishes them only if all loaded: a bad pair
 * is rejected whole, named in the error, and the old certificates keep serving. Workers pin
 * the snapshot per connection, so no connection is dropped. Main thread only, except the
 * slots, which the workers read. */
#ifndef GW_CERTS_H
#define GW_CERTS_H

#include <stdint.h>
#include <uv.h>

#include "gateway/config.h"
#include "http/tls.h"

#define GW_CERTS_DEBOUNCE_MS 200
#define GW_CERTS_MAX_WATCHES 16

typedef void (*gw_certs_cb)(int status, const char *err, void *arg);

typedef struct gw_certs_waiter {
    gw_certs_cb cb;
    void *arg;
    struct gw_certs_waiter *next;
} gw_certs_waiter;

typedef struct gw_certs {
    const gw_config *cfg;
    gw_tls_slot slots[GW_MAX_LISTENERS]; /* used for the TLS listeners only */
    uv_loop_t *loop;
    uv_fs_event_t watches[GW_CERTS_MAX_WATCHES]; /* one per folder holding a file */
    char watch_dirs[GW_CERTS_MAX_WATCHES][GW_TLS_PATH_MAX];
    int n_watches, open_handles;
    uv_timer_t debounce;
    uv_work_t work;
    int loading, again, stopping;
    gw_tls_ctx *built[GW_MAX_LISTENERS]; /* the load in progress (threadpool) */
    char build_err[1200];
    gw_certs_waiter *waiting, *running;  /* callers of this load / of the next one */
    /* what /metrics and GET /admin/certificates show (main thread) */
    uint64_t reloads_ok, reloads_failed;
    char last_error[1200];
    time_t last_reload;
} gw_certs;

/* Loads every TLS listener's certificates (blocking: start-up and --check). 0, or <0 with
 * "FILE: reason" in err. */
int gw_certs_open(gw_certs *s, const gw_config *cfg, char *err, size_t errlen);
/* Starts watching the files (and the ticket key files) on LOOP. */
int gw_certs_watch(gw_certs *s, uv_loop_t *loop);
/* Reloads on the threadpool; CB (may be NULL) gets 0, or <0 with the error, on LOOP. */
void gw_certs_reload(gw_certs *s, gw_certs_cb cb, void *arg);
/* Stops watching; pending callers get GW_ECLOSED. The slots stay (workers may still read). */
void gw_certs_stop(gw_certs *s);
void gw_certs_free(gw_certs *s); /* after the workers joined */
int gw_certs_any(const gw_certs *s);
gw_tls_slot *gw_certs_slot(gw_certs *s, int listener);

#endif
