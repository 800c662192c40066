/* stream_write.h — the write path both connection sides use (client.c, upstream_conn.c):
 * uv_try_write first (most messages leave in that one system call), then a copy of the rest
 * is queued behind what is already pending. The owner keeps the count of unsent bytes (one
 * size_t, no extra state per connection) and gets its own uv_write_cb per queued write. */
#ifndef GW_STREAM_WRITE_H
#define GW_STREAM_WRITE_H

#include <stddef.h>
#include <uv.h>

/* Writes BUFS in order after whatever is queued. *PENDING counts the bytes handed to libuv
 * and not yet written: it grows here by what had to be queued, and gw_stream_write_done
 * takes it back off. CB runs once per queued write (not when everything left at once).
 * Returns 0, or <0 (a libuv error, GW_ENOMEM) with nothing queued. */
int gw_stream_write(uv_stream_t *st, size_t *pending, const uv_buf_t *bufs, unsigned n,
                    uv_write_cb cb);

/* First thing in CB: frees the write request and takes its bytes off *PENDING. The owner
 * is wr->handle->data. */
void gw_stream_write_done(uv_write_t *wr, size_t *pending);

#endif
