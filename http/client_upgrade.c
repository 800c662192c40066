/* client_upgrade.c — a client connection after a 101 (CS_UPGRADED): the handler turned the
 * request into a byte stream (end.h) with gw_request_upgrade, and the connection now moves
 * bytes for whoever binds that end, through its socket or its TLS transport.
 *
 * The 101 head is built like any response head (Date, X-Request-Id, X-Gateway-Upstream) and
 * the request is reported then (status 101: the access log line is the upgrade's). Bytes the
 * client sent behind its head are the stream's first bytes. The connection is closed in the
 * usual one place (gw__client_close); the binder hears of it once, through on_end. */
#include <string.h>

#include "http/client_int.h"
#include "http/end.h"
#include "http/gw_errors.h"

static void end_bind(void *conn, const gw_end_cb *cb, void *arg)
{
    gw_client *c = conn;
    c->end_cb = cb;
    c->end_arg = arg;
}

static int end_write(void *conn, uv_buf_t *bufs, unsigned n)
{
    gw_client *c = conn;
    if (c->state != CS_UPGRADED || (c->flags & F_UPG_CLOSE))
        return GW_ECLOSED;
    int r = gw__client_write(c, bufs, n);
    if (r < 0)
        return r;
    if (c->pending_write > GW_END_HIGH_WATER) {
        c->flags |= F_WANT_DRAIN;
        return 1;
    }
    return 0;
}

static void end_read(void *conn, int on)
{
    gw_client *c = conn;
    if (c->state != CS_UPGRADED)
        return;
    if (!on) {
        c->flags &= ~F_UPG_READ;
    } else {
        c->flags |= F_UPG_READ;
        if (c->buf && c->off < c->len) /* bytes behind the head: from the loop, not here */
            gw__server_post(c->server, &c->post_node);
    }
    gw__client_update_reading(c);
}

/* Everything queued left (or the client closed): shut the write side and linger. */
static void close_when_flushed(gw_client *c)
{
    if (c->pending_write > 0)
        return; /* on_write comes back here; the send timeout bounds the wait */
    gw_timeout_clear(&c->timeout);
    c->off = c->len = 0;
    gw__client_linger(c);
}

static void end_close(void *conn)
{
    gw_client *c = conn;
    c->end_cb = NULL;
    if (c->state != CS_UPGRADED || (c->flags & F_UPG_CLOSE))
        return;
    c->flags |= F_UPG_CLOSE;
    c->flags &= ~(F_UPG_READ | F_WANT_DRAIN);
    gw__client_update_reading(c);
    if (c->pending_write > 0)
        gw__client_set_deadline(c, TK_SEND, c->server->opts.limits.send_timeout_ms);
    close_when_flushed(c);
}

static size_t end_queued(const void *conn)
{
    return ((const gw_client *)conn)->pending_write;
}

static const gw_end_ops client_end_ops = {
    .bind = end_bind, .write = end_write, .read = end_read, .close = end_close,
    .queued = end_queued,
};

int gw_request_upgrade(gw_request *req, const char *headers, size_t hlen, gw_end *out)
{
    if (req->stream)
        return GW_EINVAL; /* HTTP/2 has no Upgrade (RFC 8441 extended CONNECT: not done) */
    gw_client *c = req->client;
    if (c->state != CS_ACTIVE || !(c->flags & F_HANDLER) || !(c->flags & F_BODY_DONE) ||
        (c->flags & (F_RESP_BEGUN | F_ABORT_POSTED | F_CLOSE_AFTER | F_PEER_EOF)) ||
        req->has_body || req->http_minor == 0 || c->server->draining)
        return GW_EINVAL;
    int r = gw_response_begin(req, 101, headers, hlen, 0);
    if (r < 0)
        return r;
    c->flags &= ~F_HEAD_PENDING;
    uv_buf_t b = uv_buf_init(c->req->hbuf, (unsigned)c->req->hlen);
    req->bytes_out += c->req->hlen;
    if (gw__client_write(c, &b, 1) < 0) {
        gw__client_abort_later(c, GW_ECLOSED);
        return GW_ECLOSED;
    }
    /* the handler is done with the request: it is reported (101) and freed now */
    c->flags &= ~(F_HANDLER | F_WANT_DRAIN | F_BODY_PULL | F_DISPATCH);
    gw__client_end_request(c, 0);
    c->state = CS_UPGRADED;
    c->end_cb = NULL;
    gw_timeout_clear(&c->timeout);
    if (c->off == c->len)
        c->off = c->len = 0;
    gw__client_update_reading(c); /* nothing until the binder asks */
    out->ops = &client_end_ops;
    out->conn = c;
    return 0;
}

/* The binder hears of the end once: on_end, then it closes. */
static void tell_end(gw_client *c, int err)
{
    const gw_end_cb *cb = c->end_cb;
    c->end_cb = NULL;
    if (cb)
        cb->on_end(c->end_arg, err);
}

static void deliver(gw_client *c)
{
    while (c->state == CS_UPGRADED && (c->flags & F_UPG_READ) && c->end_cb && c->off < c->len) {
        size_t at = c->off, n = c->len - c->off;
        c->off = c->len; /* taken: the callback may ask for more or stop */
        c->end_cb->on_data(c->end_arg, c->buf + at, n);
    }
    if (c->state == CS_UPGRADED && c->off == c->len)
        c->off = c->len = 0;
}

void gw__upgraded_on_read(gw_client *c, ssize_t nread)
{
    if (nread < 0) {
        if (c->flags & F_UPG_CLOSE) {
            gw__client_close(c, 0);
            return;
        }
        if (nread == UV_EOF)
            c->flags |= F_PEER_EOF;
        c->flags &= ~F_UPG_READ;
        gw__client_update_reading(c);
        tell_end(c, nread == UV_EOF ? 0 : (int)nread);
        return;
    }
    c->len += (uint32_t)nread;
    deliver(c);
    if (c->state == CS_UPGRADED)
        gw__client_update_reading(c);
}

void gw__upgraded_posted(gw_client *c)
{
    deliver(c);
    if (c->state == CS_UPGRADED)
        gw__client_update_reading(c);
}

void gw__upgraded_on_write(gw_client *c)
{
    if (c->flags & F_UPG_CLOSE) {
        close_when_flushed(c);
        return;
    }
    /* The send timeout runs from the last progress, not from the first unsent byte: a busy
     * tunnel whose queue rarely empties stays open; a client taking nothing is closed. */
    if (c->pending_write == 0)
        gw_timeout_clear(&c->timeout);
    else
        gw__client_set_deadline(c, TK_SEND, c->server->opts.limits.send_timeout_ms);
    if ((c->flags & F_WANT_DRAIN) && c->pending_write <= GW_END_HIGH_WATER / 2) {
        c->flags &= ~F_WANT_DRAIN;
        if (c->end_cb)
            c->end_cb->on_drain(c->end_arg);
    }
}

void gw__upgraded_closing(gw_client *c, int err)
{
    c->flags |= F_UPG_CLOSE;
    tell_end(c, err ? err : GW_ECLOSED);
}

void gw__upgraded_shutdown(gw_client *c)
{
    if (c->flags & F_UPG_CLOSE)
        return;
    const gw_end_cb *cb = c->end_cb;
    if (cb && cb->on_shutdown) {
        cb->on_shutdown(c->end_arg);
        return;
    }
    tell_end(c, GW_ECLOSED);
    end_close(c);
}
