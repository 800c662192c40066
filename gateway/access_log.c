/* access_log.c — buffered JSON access log. Two buffers: one fills while the other is being
 * written by the thread pool. When both are busy the line is dropped and counted rather
 * than letting memory grow without bound. */
#include "gateway/access_log.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define LOG_BUF_CAP (64 * 1024)
#define LOG_FLUSH_MS 200

struct gw_access_log {
    uv_loop_t *loop;
    int fd;
    uv_timer_t timer;
    uv_fs_t write_req;
    char *fill;          /* buffer being filled */
    size_t fill_len;
    char *busy;          /* buffer being written, or NULL when no write is in flight */
    uint64_t dropped;
    int closing;
    void (*done)(void *);
    void *done_arg;
    int handles_open;
    int finished;        /* closed and flushed; the memory stays until gw_access_log_free */
};

static void log_flush(gw_access_log *log);

static void log_maybe_finish(gw_access_log *log)
{
    if (!log->closing || log->busy || log->fill_len || log->handles_open || log->finished)
        return;
    log->finished = 1;
    if (log->done)
        log->done(log->done_arg);
}

void gw_access_log_free(gw_access_log *log)
{
    if (!log)
        return;
    free(log->fill);
    free(log->busy);
    free(log);
}

static void on_write(uv_fs_t *req)
{
    gw_access_log *log = req->data;
    uv_fs_req_cleanup(req);
    /* swap back: the written buffer becomes the spare */
    char *spare = log->busy;
    log->busy = NULL;
    if (log->fill_len) {
        log_flush(log);
        free(spare);
    } else {
        free(log->fill);
        log->fill = spare;
    }
    log_maybe_finish(log);
}

static void log_flush(gw_access_log *log)
{
    if (log->busy || log->fill_len == 0)
        return;
    log->busy = log->fill;
    uv_buf_t b = uv_buf_init(log->busy, (unsigned)log->fill_len);
    log->fill = malloc(LOG_BUF_CAP);
    log->fill_len = 0;
    log->write_req.data = log;
    if (uv_fs_write(log->loop, &log->write_req, log->fd, &b, 1, -1, on_write) != 0) {
        free(log->busy);
        log->busy = NULL;
    }
}

static void on_timer(uv_timer_t *t)
{
    log_flush(t->data);
}

static void on_timer_closed(uv_handle_t *h)
{
    gw_access_log *log = h->data;
    log->handles_open = 0;
    log_maybe_finish(log);
}

gw_access_log *gw_access_log_new(uv_loop_t *loop, int fd)
{
    gw_access_log *log = calloc(1, sizeof *log);
    if (!log)
        return NULL;
    log->fill = malloc(LOG_BUF_CAP);
    if (!log->fill) {
        free(log);
        return NULL;
    }
    log->loop = loop;
    log->fd = fd;
    uv_timer_init(loop, &log->timer);
    log->timer.data = log;
    uv_timer_start(&log->timer, on_timer, LOG_FLUSH_MS, LOG_FLUSH_MS);
    uv_unref((uv_handle_t *)&log->timer); /* the log alone must not keep a loop alive */
    log->handles_open = 1;
    return log;
}

static void put_str(char *line, size_t *len, size_t cap, const char *key, const char *v)
{
    size_t l = *len;
    l += (size_t)snprintf(line + l, cap - l, ",\"%s\":\"", key);
    if (l >= cap) { *len = cap; return; }
    gw_json_escape(line, &l, cap - 2, v ? v : "-", v ? strlen(v) : 1);
    line[l++] = '"';
    *len = l;
}

void gw_access_log_write(gw_access_log *log, const gw_access_entry *e)
{
    if (!log || log->closing)
        return;
    char line[2048];
    size_t cap = sizeof line - 2, len;
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    len = strftime(line, cap, "{\"time\":\"%Y-%m-%dT%H:%M:%S", &tm);
    len += (size_t)snprintf(line + len, cap - len, ".%03ldZ\"", (long)(tv.tv_usec / 1000));
    put_str(line, &len, cap, "request_id", e->request_id);
    put_str(line, &len, cap, "trace_id", e->trace_id);
    put_str(line, &len, cap, "span_id", e->span_id);
    put_str(line, &len, cap, "client", e->client);
    put_str(line, &len, cap, "method", e->method);
    put_str(line, &len, cap, "proto", e->proto);
    put_str(line, &len, cap, "path", e->path);
    put_str(line, &len, cap, "route", e->route);
    put_str(line, &len, cap, "upstream", e->upstream);
    if (len < cap) {
        int w;
        if (e->upstream_ms >= 0)
            w = snprintf(line + len, cap - len,
                         ",\"route_version\":%" PRIu64 ",\"status\":%d,\"bytes_in\":%" PRIu64
                         ",\"bytes_out\":%" PRIu64 ",\"upstream_ms\":%.3f,\"total_ms\":%.3f}",
                         e->route_version, e->status, e->bytes_in, e->bytes_out, e->upstream_ms,
                         e->total_ms);
        else
            w = snprintf(line + len, cap - len,
                         ",\"route_version\":%" PRIu64 ",\"status\":%d,\"bytes_in\":%" PRIu64
                         ",\"bytes_out\":%" PRIu64 ",\"upstream_ms\":null,\"total_ms\":%.3f}",
                         e->route_version, e->status, e->bytes_in, e->bytes_out, e->total_ms);
        len = w > 0 && (size_t)w < cap - len ? len + (size_t)w : cap;
    }
    line[len++] = '\n';
    if (log->fill_len + len > LOG_BUF_CAP) {
        log_flush(log);
        if (log->fill_len + len > LOG_BUF_CAP) {
            log->dropped++;
            return;
        }
    }
    memcpy(log->fill + log->fill_len, line, len);
    log->fill_len += len;
}

void gw_log_event(gw_access_log *log, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof line - 1 ? (size_t)n : sizeof line - 2;
    line[len++] = '\n';
    if (!log || log->closing) {
        fwrite(line, 1, len, stderr);
        return;
    }
    if (log->fill_len + len > LOG_BUF_CAP) {
        log_flush(log);
        if (log->fill_len + len > LOG_BUF_CAP) {
            log->dropped++;
            return;
        }
    }
    memcpy(log->fill + log->fill_len, line, len);
    log->fill_len += len;
}

uint64_t gw_access_log_dropped(const gw_access_log *log)
{
    return log ? log->dropped : 0;
}

void gw_access_log_close(gw_access_log *log, void (*done)(void *), void *arg)
{
    log->closing = 1;
    log->done = done;
    log->done_arg = arg;
    log_flush(log);
    uv_close((uv_handle_t *)&log->timer, on_timer_closed);
}
