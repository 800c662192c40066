/* source_file.c — the routes file as a route source (source_file.h).
 *
 * States of a source (flags below), from the loop thread's point of view:
 *   idle       no timer armed, no read in flight.
 *   debouncing the timer is armed; each matching event re-arms it.
 *   loading    F_LOADING: a read+parse runs on the threadpool; events meanwhile set F_DIRTY
 *              (re-arm the timer when it ends), reloads set F_FORCE (read again at once).
 *   writing    s->writing > 0: rt_file_source_write_async jobs on the threadpool; timer
 *              expiries and reloads meanwhile only set F_DIRTY / F_FORCE, acted on when the
 *              last write ends (so the written text is known as our own before it is read).
 *   stopping   F_STOPPING: handles closing, no callback any more; freed when both handles
 *              are closed, no read or write is in flight and we are not inside the callback. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "routes/parse.h"
#include "routes/matcher.h"
#include "routes/source_file.h"

enum {
    F_LOADING = 1 << 0,  /* s->work is queued or running */
    F_DIRTY = 1 << 1,    /* the file changed while loading: debounce again afterwards */
    F_FORCE = 1 << 2,    /* a reload was asked for while loading: read again afterwards */
    F_STOPPING = 1 << 3, /* rt_file_source_stop was called */
    F_IN_CB = 1 << 4,    /* inside the user's callback: do not free */
};

/* An rt_file_source_write_async in flight (s->writing counts them). */
typedef struct write_job {
    uv_work_t work;
    rt_file_source *s;
    json_t *doc;            /* in */
    rt_file_write_cb cb;
    void *arg;
    int rc;                 /* out */
    uint64_t hash;          /* out: of the text written */
    char err[1024];         /* out */
} write_job;

struct rt_file_source {
    uv_loop_t *loop;
    uv_fs_event_t watch;
    uv_timer_t timer;
    uv_work_t work;
    char *path;
    char *dir;
    const char *base;  /* points into path */
    char **upstreams;
    int n_upstreams;
    uint64_t debounce_ms;
    rt_file_cb cb;
    void *arg;
    unsigned flags;
    int open_handles;
    /* The load in flight. In: set on the loop before queueing. Out: set by the threadpool,
     * read on the loop in load_done (uv_queue_work orders the two). */
    int skip_same;          /* in: skip the parse when the text hashes to skip_hash */
    uint64_t skip_hash;
    rt_table *table;        /* out */
    uint64_t hash;          /* out */
    int same;               /* out: skipped, the text is the one last delivered or written */
    char err[1024];         /* out */
    /* The text last delivered as a table, or written by rt_file_source_write. */
    int have_last;
    uint64_t last_hash;
    int writing;            /* rt_file_source_write_async jobs in flight: loads wait */
};

static void free_source(rt_file_source *s)
{
    rt__names_free(s->upstreams, s->n_upstreams);
    free(s->path);
    free(s->dir);
    free(s);
}

static void maybe_free(rt_file_source *s)
{
    if (s->open_handles == 0 && !(s->flags & (F_LOADING | F_IN_CB)) && s->writing == 0)
        free_source(s);
}

static void on_close(uv_handle_t *h)
{
    rt_file_source *s = h->data;
    s->open_handles--;
    maybe_free(s);
}

/* Threadpool: read and parse. Touches only the in/out fields and immutable ones. */
static void load_work(uv_work_t *w)
{
    rt_file_source *s = w->data;
    size_t len = 0;
    char *text = rt__read_file(s->path, &len);
    if (!text) {
        char buf[128];
        snprintf(s->err, sizeof(s->err), "%s: cannot read: %s", s->path,
                 strerror_r(errno, buf, sizeof(buf)));
        return;
    }
    s->hash = rt__hash64(text, len);
    if (s->skip_same && s->hash == s->skip_hash)
        s->same = 1;
    else
        s->table = rt_table_parse(text, len, s->path, (const char *const *)s->upstreams,
                                  s->n_upstreams, s->err, sizeof(s->err));
    free(text);
}

static void load_done(uv_work_t *w, int status);

static void start_load(rt_file_source *s, int forced)
{
    s->flags = (s->flags | F_LOADING) & ~(unsigned)(F_DIRTY | F_FORCE);
    s->skip_same = !forced && s->have_last;
    s->skip_hash = s->last_hash;
    s->table = NULL;
    s->same = 0;
    s->err[0] = '\0';
    /* Fails only for a NULL work callback. */
    (void)uv_queue_work(s->loop, &s->work, load_work, load_done);
}

static void on_timer(uv_timer_t *t)
{
    rt_file_source *s = t->data;
    if ((s->flags & F_LOADING) || s->writing)
        s->flags |= F_DIRTY;
    else
        start_load(s, 0);
}

/* Calls the user's callback under the re-entrancy guard; returns 1 when stopped meanwhile
 * (S may then be freed: do not touch it). */
static int deliver(rt_file_source *s, rt_table *t, const char *err)
{
    s->flags |= F_IN_CB;
    s->cb(t, err, s->arg);
    s->flags &= ~(unsigned)F_IN_CB;
    if (s->flags & F_STOPPING) {
        maybe_free(s);
        return 1;
    }
    return 0;
}

static void load_done(uv_work_t *w, int status)
{
    rt_file_source *s = w->data;
    rt_table *t = s->table;
    s->table = NULL;
    s->flags &= ~(unsigned)F_LOADING;
    if ((s->flags & F_STOPPING) || status != 0) { /* UV_ECANCELED: only when stopping */
        rt_table_unref(t);
        maybe_free(s);
        return;
    }
    if (!s->same) {
        s->have_last = t != NULL; /* after an error, the same good text is news again */
        s->last_hash = s->hash;
        if (deliver(s, t, t ? NULL : s->err))
            return;
    }
    if (s->writing)
        return; /* write_done starts what is pending */
    if (s->flags & F_FORCE)
        start_load(s, 1);
    else if (s->flags & F_DIRTY)
        uv_timer_start(&s->timer, on_timer, s->debounce_ms, 0);
}

static void on_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    rt_file_source *s = h->data;
    (void)events;
    if (s->flags & F_STOPPING)
        return;
    if (status < 0) {
        char err[1200];
        snprintf(err, sizeof(err), "%s: watch failed: %s", s->path, uv_strerror(status));
        deliver(s, NULL, err);
        return;
    }
    /* Events name the directory entry that changed; NULL where the platform cannot say. */
    if (filename && strcmp(filename, s->base) != 0)
        return;
    if (s->flags & F_LOADING)
        s->flags |= F_DIRTY;
    else
        uv_timer_start(&s->timer, on_timer, s->debounce_ms, 0); /* re-arming: debounce */
}

/* dir and base of PATH: "conf/routes.json" -> "conf", "routes.json"; "r.json" -> ".". */
static int split_path(rt_file_source *s, const char *file)
{
    if (!(s->path = strdup(file)))
        return UV_ENOMEM;
    const char *slash = strrchr(s->path, '/');
    s->base = slash ? slash + 1 : s->path;
    if (!slash)
        s->dir = strdup(".");
    else if (slash == s->path)
        s->dir = strdup("/");
    else
        s->dir = strndup(s->path, (size_t)(slash - s->path));
    return s->dir ? 0 : UV_ENOMEM;
}

int rt_file_source_start(uv_loop_t *loop, const char *file, const char *const *upstreams,
                         int n_upstreams, unsigned debounce_ms, rt_file_cb cb, void *arg,
                         rt_file_source **out)
{
    *out = NULL;
    if (!loop || !file || !cb || n_upstreams < 0)
        return UV_EINVAL;
    rt_file_source *s = calloc(1, sizeof(*s));
    if (!s)
        return UV_ENOMEM;
    s->loop = loop;
    s->cb = cb;
    s->arg = arg;
    s->debounce_ms = debounce_ms ? debounce_ms : RT_FILE_DEBOUNCE_MS;
    s->work.data = s;
    int rc = split_path(s, file);
    if (rc == 0 && !*s->base)
        rc = UV_EINVAL; /* "dir/": not a file */
    if (rc == 0 && rt__names_dup(upstreams, n_upstreams, &s->upstreams, &s->n_upstreams) != 0)
        rc = UV_ENOMEM;
    if (rc != 0) {
        free_source(s);
        return rc;
    }

    uv_fs_event_init(loop, &s->watch);
    uv_timer_init(loop, &s->timer);
    s->watch.data = s->timer.data = s;
    s->open_handles = 2;
    rc = uv_fs_event_start(&s->watch, on_event, s->dir, 0);
    if (rc != 0) {
        rt_file_source_stop(s); /* frees S once the handles are closed */
        return rc;
    }
    *out = s;
    return 0;
}

void rt_file_source_reload(rt_file_source *s)
{
    if (!s || (s->flags & F_STOPPING))
        return;
    uv_timer_stop(&s->timer);
    if ((s->flags & F_LOADING) || s->writing)
        s->flags |= F_FORCE;
    else
        start_load(s, 1);
}

void rt_file_source_stop(rt_file_source *s)
{
    if (!s || (s->flags & F_STOPPING))
        return;
    s->flags |= F_STOPPING;
    /* A read not started yet is cancelled (load_done then runs with UV_ECANCELED); one that
     * is running finishes, and its table is dropped. */
    if (s->flags & F_LOADING)
        (void)uv_cancel((uv_req_t *)&s->work);
    uv_close((uv_handle_t *)&s->watch, on_close);
    uv_close((uv_handle_t *)&s->timer, on_close);
}

/* ---- writing --------------------------------------------------------------------------- */

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int cannot_write(const char *path, char *err, size_t errlen)
{
    char buf[128];
    if (err && errlen)
        snprintf(err, errlen, "%s: cannot write: %s", path, strerror_r(errno, buf, sizeof(buf)));
    return -1;
}

/* DOC as the file's text: indented, document order, final newline. Free with free(). */
static char *dump(const json_t *doc, size_t *len)
{
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!text)
        return NULL;
    *len = strlen(text);
    char *t = realloc(text, *len + 2);
    if (!t) {
        free(text);
        return NULL;
    }
    t[(*len)++] = '\n';
    t[*len] = '\0';
    return t;
}

static int write_text_atomic(const char *path, const char *text, size_t len, char *err,
                             size_t errlen)
{
    static unsigned counter; /* several writers in one process get distinct names */
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    char dir[PATH_MAX];
    if (!slash)
        strcpy(dir, ".");
    else
        snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
    char tmp[PATH_MAX];
    int n = snprintf(tmp, sizeof(tmp), "%s/.%s.tmp-%ld-%u", dir, base, (long)getpid(),
                     __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        errno = ENAMETOOLONG;
        return cannot_write(path, err, errlen);
    }

    struct stat st;
    int keep_mode = stat(path, &st) == 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return cannot_write(path, err, errlen);
    if ((keep_mode && fchmod(fd, st.st_mode & 07777) != 0) || write_all(fd, text, len) != 0 ||
        fsync(fd) != 0)
        goto fail;
    if (close(fd) != 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0)
        goto fail;

    /* The rename itself is durable only once the directory is synced. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd); /* best effort: some file systems refuse to sync a directory */
        close(dfd);
    }
    return 0;

fail:;
    int saved = errno;
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    errno = saved;
    return cannot_write(path, err, errlen);
}

int rt_file_write_atomic(const char *path, const json_t *doc, char *err, size_t errlen)
{
    size_t len = 0;
    char *text = dump(doc, &len);
    if (!text) {
        errno = ENOMEM;
        return cannot_write(path, err, errlen);
    }
    int rc = write_text_atomic(path, text, len, err, errlen);
    free(text);
    return rc;
}

static void write_work(uv_work_t *w)
{
    write_job *j = w->data;
    size_t len = 0;
    char *text = dump(j->doc, &len);
    json_decref(j->doc); /* here: freeing a large document would hold up the loop */
    j->doc = NULL;
    if (!text) {
        errno = ENOMEM;
        j->rc = cannot_write(j->s->path, j->err, sizeof j->err);
        return;
    }
    j->rc = write_text_atomic(j->s->path, text, len, j->err, sizeof j->err);
    j->hash = rt__hash64(text, len);
    free(text);
}

static void write_done(uv_work_t *w, int status)
{
    write_job *j = w->data;
    rt_file_source *s = j->s;
    s->writing--;
    if (status != 0 && j->rc == 0) { /* cancelled: never happens for a queued write */
        j->rc = -1;
        snprintf(j->err, sizeof j->err, "%s: cannot write: %s", s->path, uv_strerror(status));
    }
    if (j->rc == 0) {
        s->have_last = 1;
        s->last_hash = j->hash;
    }
    json_decref(j->doc);
    j->cb(j->rc, j->rc == 0 ? NULL : j->err, j->arg);
    free(j);
    if (s->flags & F_STOPPING) {
        maybe_free(s);
        return;
    }
    if (s->writing || (s->flags & F_LOADING))
        return;
    if (s->flags & F_FORCE)
        start_load(s, 1);
    else if (s->flags & F_DIRTY) {
        s->flags &= ~(unsigned)F_DIRTY;
        uv_timer_start(&s->timer, on_timer, s->debounce_ms, 0);
    }
}

int rt_file_source_write_async(rt_file_source *s, json_t *doc, rt_file_write_cb cb, void *arg)
{
    if (!s || (s->flags & F_STOPPING))
        return UV_ECANCELED;
    write_job *j = calloc(1, sizeof *j);
    if (!j)
        return UV_ENOMEM;
    *j = (write_job){ .s = s, .doc = doc, .cb = cb, .arg = arg };
    j->work.data = j;
    s->writing++;
    /* Fails only for a NULL work callback. */
    (void)uv_queue_work(s->loop, &j->work, write_work, write_done);
    return 0;
}

int rt_file_source_write(rt_file_source *s, const json_t *doc, char *err, size_t errlen)
{
    size_t len = 0;
    char *text = dump(doc, &len);
    if (!text) {
        errno = ENOMEM;
        return cannot_write(s->path, err, errlen);
    }
    int rc = write_text_atomic(s->path, text, len, err, errlen);
    if (rc == 0) {
        s->have_last = 1;
        s->last_hash = rt__hash64(text, len);
    }
    free(text);
    return rc;
}

/* ---- history --------------------------------------------------------------------------- */

#define TAIL_CHUNK 65536

json_t *rt_file_history_tail(const char *path, int limit, char *err, size_t errlen)
{
    char ebuf[128];
    json_t *out = json_array();
    if (!out) {
        snprintf(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return out; /* no change yet */
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror_r(errno, ebuf, sizeof ebuf));
        json_decref(out);
        return NULL;
    }
    struct stat st;
    char *buf = NULL, *chunk = NULL;
    size_t *starts = NULL;
    if (fstat(fd, &st) != 0 || !(chunk = malloc(TAIL_CHUNK)))
        goto fail;
    /* Backwards from the end, a chunk at a time, until LIMIT line ends are seen before the
     * end (the newline that ends the file's last line does not count) or the start: from
     * there to the end is the tail. Bytes appended meanwhile are not read. */
    off_t end = st.st_size, start = end, lines = 0;
    while (start > 0) {
        off_t from = start > TAIL_CHUNK ? start - TAIL_CHUNK : 0;
        size_t n = (size_t)(start - from);
        ssize_t got = pread(fd, chunk, n, from);
        if (got < 0 && errno == EINTR)
            continue;
        if (got != (ssize_t)n) {
            if (got >= 0)
                errno = EIO; /* shrank under us */
            goto fail;
        }
        size_t i = n;
        while (i > 0) {
            i--;
            if (chunk[i] != '\n' || from + (off_t)i == end - 1)
                continue;
            if (++lines == limit) {
                start = from + (off_t)i + 1;
                goto found;
            }
        }
        start = from;
    }
found:;
    size_t len = (size_t)(end - start);
    buf = malloc(len + 1);
    if (!buf) {
        errno = ENOMEM;
        goto fail;
    }
    for (size_t done = 0; done < len;) {
        ssize_t got = pread(fd, buf + done, len - done, start + (off_t)done);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            if (got == 0)
                errno = EIO;
            goto fail;
        }
        done += (size_t)got;
    }
    close(fd);
    fd = -1;
    /* The line starts, forwards; then parsed from the last one: newest first. */
    size_t n_lines = 0;
    if (!(starts = malloc(((size_t)lines + 2) * sizeof *starts))) {
        errno = ENOMEM;
        goto fail;
    }
    for (size_t at = 0; at < len && n_lines < (size_t)lines + 1;) {
        starts[n_lines++] = at;
        char *nl = memchr(buf + at, '\n', len - at);
        at = nl ? (size_t)(nl - buf) + 1 : len;
    }
    for (size_t k = n_lines; k-- > 0;) {
        size_t at = starts[k], to = k + 1 < n_lines ? starts[k + 1] : len;
        while (to > at && (buf[to - 1] == '\n' || buf[to - 1] == '\r'))
            to--;
        json_t *e = to > at ? json_loadb(buf + at, to - at, 0, NULL) : NULL;
        if (json_is_object(e))
            json_array_append_new(out, e);
        else
            json_decref(e);
    }
    free(starts);
    free(chunk);
    free(buf);
    return out;

fail:
    snprintf(err, errlen, "%s: cannot read: %s", path, strerror_r(errno, ebuf, sizeof ebuf));
    if (fd >= 0)
        close(fd);
    free(starts);
    free(chunk);
    free(buf);
    json_decref(out);
    return NULL;
}
