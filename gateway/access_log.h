/* access_log.h — one JSON line per request, buffered per worker and written off the loop
 * (uv_fs_write runs in libuv's thread pool), so a slow disk never stalls a request. */
#ifndef GW_ACCESS_LOG_H
#define GW_ACCESS_LOG_H

#include "http/http1.h" /* gw_json_escape */

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct gw_access_log gw_access_log;

typedef struct gw_access_entry {
    const char *request_id, *client, *method, *path, *route, *upstream;
    const char *trace_id, *span_id; /* W3C trace context: the gateway's span (NULL: "-") */
    const char *proto;              /* "HTTP/1.1", "HTTP/1.0", "HTTP/2" (NULL: "-") */
    uint64_t route_version;
    int status;
    uint64_t bytes_in, bytes_out;
    double upstream_ms, total_ms; /* upstream_ms < 0: none */
} gw_access_entry;

/* fd is shared by every worker's log and owned by the caller (opened O_APPEND). */
gw_access_log *gw_access_log_new(uv_loop_t *loop, int fd);
void gw_access_log_write(gw_access_log *log, const gw_access_entry *e);
/* A plain text line (an operational event: fallback, shadow mismatch) through a buffered
 * stream like the access log, so that a worker never writes to a file descriptor itself.
 * Workers keep a separate stream on stderr for these: the access log stays one JSON line
 * per request. LOG NULL or closed: the line goes to stderr directly. */
void gw_log_event(gw_access_log *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Flushes what is buffered and closes the flush timer; done(arg) runs when the last write
 * ended. Lines written after this go to stderr directly. The memory stays valid (for late
 * writers such as a shadow request finishing after a drain) until gw_access_log_free, once
 * the loop has ended. */
void gw_access_log_close(gw_access_log *log, void (*done)(void *), void *arg);
void gw_access_log_free(gw_access_log *log);
/* Lines dropped because the disk could not keep up (the buffer is bounded). */
uint64_t gw_access_log_dropped(const gw_access_log *log);


#endif
