/* stream_write.c — see stream_write.h. */
#include "http/stream_write.h"

#include <stdlib.h>
#include <string.h>

#include "http/gw_errors.h"

typedef struct stream_wreq {
    uv_write_t req;
    size_t len;
    char data[];
} stream_wreq;

int gw_stream_write(uv_stream_t *st, size_t *pending, const uv_buf_t *bufs, unsigned n,
                    uv_write_cb cb)
{
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (total == 0)
        return 0;
    size_t done = 0;
    if (*pending == 0) {
        int r = uv_try_write(st, bufs, n);
        if (r >= 0)
            done = (size_t)r;
        else if (r != UV_EAGAIN && r != UV_ENOSYS)
            return r;
    }
    if (done == total)
        return 0;
    stream_wreq *w = malloc(sizeof *w + total - done);
    if (!w)
        return GW_ENOMEM;
    size_t skip = done, at = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t l = bufs[i].len;
        if (skip >= l) {
            skip -= l;
            continue;
        }
        memcpy(w->data + at, bufs[i].base + skip, l - skip);
        at += l - skip;
        skip = 0;
    }
    w->len = at;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)at);
    int r = uv_write(&w->req, st, &b, 1, cb);
    if (r < 0) {
        free(w);
        return r;
    }
    *pending += at;
    return 0;
}

void gw_stream_write_done(uv_write_t *wr, size_t *pending)
{
    stream_wreq *w = (stream_wreq *)wr;
    *pending -= w->len;
    free(w);
}
