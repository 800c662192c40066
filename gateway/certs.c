/* certs.c — see certs.h. */
#include "gateway/certs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/gw_errors.h"

/* Builds a snapshot for every TLS listener into OUT; on the first failure frees what was
 * built and returns -1 with err set ("listeners[i].tls: FILE: reason"). */
static int build_all(const gw_config *cfg, gw_tls_ctx **out, char *err, size_t errlen)
{
    for (int i = 0; i < cfg->n_listeners; i++) {
        out[i] = NULL;
        if (!cfg->listeners[i].tls)
            continue;
        char e[1024];
        out[i] = gw_tls_ctx_new(&cfg->listeners[i].tls_conf, e, sizeof e);
        if (!out[i]) {
            snprintf(err, errlen, "%s: listeners[%d].tls: %s", cfg->path, i, e);
            for (int j = 0; j < i; j++) {
                gw_tls_ctx_unref(out[j]);
                out[j] = NULL;
            }
            return -1;
        }
    }
    return 0;
}

int gw_certs_open(gw_certs *s, const gw_config *cfg, char *err, size_t errlen)
{
    memset(s, 0, sizeof *s);
    s->cfg = cfg;
    gw_tls_ctx *built[GW_MAX_LISTENERS];
    if (build_all(cfg, built, err, errlen) != 0)
        return GW_EINVAL;
    for (int i = 0; i < cfg->n_listeners; i++)
        if (cfg->listeners[i].tls)
            gw_tls_slot_init(&s->slots[i], built[i]);
    s->last_reload = time(NULL);
    return 0;
}

int gw_certs_any(const gw_certs *s)
{
    for (int i = 0; s->cfg && i < s->cfg->n_listeners; i++)
        if (s->cfg->listeners[i].tls)
            return 1;
    return 0;
}

gw_tls_slot *gw_certs_slot(gw_certs *s, int listener)
{
    return s->cfg->listeners[listener].tls ? &s->slots[listener] : NULL;
}

/* ---- reload -------------------------------------------------------------------------- */

static void start_load(gw_certs *s);

static void load_work(uv_work_t *w)
{
    gw_certs *s = w->data;
    s->build_err[0] = '\0';
    if (build_all(s->cfg, s->built, s->build_err, sizeof s->build_err) != 0 && !s->build_err[0])
        snprintf(s->build_err, sizeof s->build_err, "certificate reload failed");
    gw_tls_thread_stop(); /* a threadpool thread: OpenSSL's per-thread state goes now */
}

static void load_after(uv_work_t *w, int status)
{
    gw_certs *s = w->data;
    int ok = status == 0 && !s->build_err[0];
    if (ok) {
        for (int i = 0; i < s->cfg->n_listeners; i++)
            if (s->cfg->listeners[i].tls)
                gw_tls_slot_swap(&s->slots[i], s->built[i]); /* the old one drains away */
        s->reloads_ok++;
        s->last_error[0] = '\0';
        s->last_reload = time(NULL);
        fprintf(stderr, "gateway: certificates reloaded\n");
    } else {
        s->reloads_failed++;
        snprintf(s->last_error, sizeof s->last_error, "%s",
                 s->build_err[0] ? s->build_err : "certificate reload cancelled");
        fprintf(stderr, "gateway: certificate reload rejected, the old certificates keep "
                "serving: %s\n", s->last_error);
    }
    s->loading = 0;
    gw_certs_waiter *r = s->running;
    s->running = NULL;
    while (r) {
        gw_certs_waiter *n = r->next;
        if (r->cb)
            r->cb(ok ? 0 : GW_EINVAL, ok ? NULL : s->last_error, r->arg);
        free(r);
        r = n;
    }
    if (s->again && !s->stopping)
        start_load(s);
}

static void start_load(gw_certs *s)
{
    s->again = 0;
    s->loading = 1;
    s->running = s->waiting;
    s->waiting = NULL;
    s->work.data = s;
    if (uv_queue_work(s->loop, &s->work, load_work, load_after) != 0) {
        snprintf(s->build_err, sizeof s->build_err, "cannot queue the reload");
        load_after(&s->work, -1);
    }
}

void gw_certs_reload(gw_certs *s, gw_certs_cb cb, void *arg)
{
    if (s->stopping || !gw_certs_any(s)) {
        if (cb)
            cb(s->stopping ? GW_ECLOSED : 0, s->stopping ? "stopping" : NULL, arg);
        return;
    }
    if (cb) {
        gw_certs_waiter *w = calloc(1, sizeof *w);
        if (!w) {
            cb(GW_ENOMEM, "out of memory", arg);
            return;
        }
        w->cb = cb;
        w->arg = arg;
        w->next = s->waiting;
        s->waiting = w;
    }
    /* a load under way may have read the files before this change: one more follows */
    if (s->loading)
        s->again = 1;
    else
        start_load(s);
}

/* ---- watching ------------------------------------------------------------------------ */

static void on_debounce(uv_timer_t *t)
{
    gw_certs *s = t->data;
    gw_certs_reload(s, NULL, NULL);
}

static int base_is(const char *path, const char *name)
{
    const char *slash = strrchr(path, '/');
    return strcmp(slash ? slash + 1 : path, name) == 0;
}

/* Whether NAME (a folder entry) is one of the files: other entries in the same folder (the
 * routes file, logs) do not cause a reload. */
static int is_watched_file(const gw_certs *s, const char *name)
{
    for (int i = 0; i < s->cfg->n_listeners; i++) {
        const gw_tls_conf *t = &s->cfg->listeners[i].tls_conf;
        if (!s->cfg->listeners[i].tls)
            continue;
        for (int k = 0; k < t->n_certs; k++)
            if (base_is(t->certs[k].cert, name) || base_is(t->certs[k].key, name))
                return 1;
        if (t->ticket_key_file[0] && base_is(t->ticket_key_file, name))
            return 1;
    }
    return 0;
}

static void on_change(uv_fs_event_t *h, const char *filename, int events, int status)
{
    gw_certs *s = h->data;
    (void)events;
    if (s->stopping || status < 0 || (filename && !is_watched_file(s, filename)))
        return;
    /* a renewal writes cert and key one after the other: wait until both are there */
    uv_timer_start(&s->debounce, on_debounce, GW_CERTS_DEBOUNCE_MS, 0);
}

/* Watches the folder of PATH, once per folder: events name the entry that changed, and
 * an editor or a renewal tool replaces files by rename, which a watch on the file itself
 * would lose. Any change there starts a debounced reload, which checks everything. */
static void watch_dir_of(gw_certs *s, const char *path)
{
    char dir[GW_TLS_PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    for (int i = 0; i < s->n_watches; i++)
        if (strcmp(s->watch_dirs[i], dir) == 0)
            return;
    if (s->n_watches == GW_CERTS_MAX_WATCHES)
        return;
    uv_fs_event_t *h = &s->watches[s->n_watches];
    uv_fs_event_init(s->loop, h);
    h->data = s;
    s->open_handles++;
    snprintf(s->watch_dirs[s->n_watches], sizeof s->watch_dirs[0], "%s", dir);
    s->n_watches++;
    if (uv_fs_event_start(h, on_change, dir, 0) != 0)
        fprintf(stderr, "gateway: cannot watch %s for certificate changes\n", dir);
}

int gw_certs_watch(gw_certs *s, uv_loop_t *loop)
{
    s->loop = loop;
    uv_timer_init(loop, &s->debounce);
    s->debounce.data = s;
    s->open_handles = 1;
    for (int i = 0; i < s->cfg->n_listeners; i++) {
        const gw_listener_conf *l = &s->cfg->listeners[i];
        if (!l->tls)
            continue;
        for (int k = 0; k < l->tls_conf.n_certs; k++) {
            watch_dir_of(s, l->tls_conf.certs[k].cert);
            watch_dir_of(s, l->tls_conf.certs[k].key);
        }
        if (l->tls_conf.ticket_key_file[0])
            watch_dir_of(s, l->tls_conf.ticket_key_file);
    }
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    gw_certs *s = h->data;
    s->open_handles--;
}

void gw_certs_stop(gw_certs *s)
{
    if (s->stopping)
        return;
    s->stopping = 1;
    gw_certs_waiter *w = s->waiting;
    s->waiting = NULL;
    while (w) {
        gw_certs_waiter *n = w->next;
        if (w->cb)
            w->cb(GW_ECLOSED, "stopping", w->arg);
        free(w);
        w = n;
    }
    if (!s->loop)
        return;
    for (int i = 0; i < s->n_watches; i++)
        uv_close((uv_handle_t *)&s->watches[i], on_closed);
    uv_close((uv_handle_t *)&s->debounce, on_closed);
}

void gw_certs_free(gw_certs *s)
{
    for (int i = 0; s->cfg && i < s->cfg->n_listeners; i++)
        if (s->cfg->listeners[i].tls)
            gw_tls_slot_destroy(&s->slots[i]);
}
