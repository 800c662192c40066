/* client_response.c — writing a response on a client connection: the head (built aside
 * and sent together with the first body bytes), framing (Content-Length, chunked, or
 * close-delimited for HTTP/1.0), backpressure, and the one-shot and error responses. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "http/client_int.h"
#include "http/gw_errors.h"
#include "http/h2.h"
#include "http/http1.h"
#include "http/request_id.h"

/* ---- responses ----------------------------------------------------------------------- */

static int will_close(const gw_client *c)
{
    const gw_request *q = &c->req->pub;
    /* a body not read to its end when the answer starts: the connection cannot carry
     * another request after it, and the client is told so */
    return !q->keep_alive || (c->flags & F_CLOSE_AFTER) || c->server->draining ||
           (q->has_body && !(c->flags & F_BODY_DONE));
}

/* Room for n head bytes in the request's head buffer (grown past the inline one only for
 * unusually large heads); NULL when out of memory. */
static char *head_reserve(req_impl *r, size_t n)
{
    if (n > r->hcap) {
        char *nb = malloc(n);
        if (!nb)
            return NULL;
        if (r->hbuf != r->head_inline)
            free(r->hbuf);
        r->hbuf = nb;
        r->hcap = n;
    }
    return r->hbuf;
}

static char *put(char *o, const char *p, size_t n)
{
    memcpy(o, p, n);
    return o + n;
}

/* Appends a string literal (its length known at compile time). */
#define PUT_LIT(o, lit) put((o), (lit), sizeof(lit) - 1)

/* HTTP/2 takes one block of lines: HEADERS then the request's resp_extra, joined (rare:
 * rate-limited routes only). */
static int h2_begin_with_extra(gw_request *req, int status, const char *headers, size_t hlen,
                               int64_t body_len)
{
    char stack[4096], *b = stack;
    size_t n = (headers ? hlen : 0) + req->resp_extra_n;
    if (n > sizeof stack && !(b = malloc(n)))
        return gw__h2_response_begin(req, status, headers, hlen, body_len);
    if (headers && hlen)
        memcpy(b, headers, hlen);
    memcpy(b + (headers ? hlen : 0), req->resp_extra, req->resp_extra_n);
    int r = gw__h2_response_begin(req, status, b, n, body_len);
    if (b != stack)
        free(b);
    return r;
}

int gw_response_begin(gw_request *req, int status, const char *headers, size_t hlen,
                      int64_t body_len)
{
    if (req->stream && req->resp_extra_n) /* HTTP/2 with the application's extra lines */
        return h2_begin_with_extra(req, status, headers, hlen, body_len);
    if (req->stream) /* HTTP/2: the stream's own framing */
        return gw__h2_response_begin(req, status, headers, hlen, body_len);
    gw_client *c = req->client;
    if (c->state != CS_ACTIVE || (c->flags & F_RESP_BEGUN))
        return GW_EINVAL;
    c->flags |= F_RESP_BEGUN;
    req->status = status;
    int nobody = req->is_head || status == 204 || status == 304 || status < 200;
    /* built with copies into one reservation, not printf: this runs once per response */
    const char *reason = gw_status_reason(status);
    const char *date = gw_http_date(c->server->loop);
    const char *up = req->upstream_name ? req->upstream_name : "gateway";
    size_t reason_n = strlen(reason), date_n = strlen(date);
    size_t id_n = 0, up_n = 0;
    if (c->server->opts.gateway_headers) {
        id_n = strlen(req->request_id);
        up_n = strlen(up);
    }
    /* 160 covers the status line's fixed parts, the gateway header names and the framing
     * and Connection lines; the variable parts are counted */
    char *o = head_reserve(c->req, 160 + reason_n + date_n + (headers ? hlen : 0) + id_n + up_n +
                                       req->resp_extra_n);
    if (!o) {
        /* no answer can be built: on_abort follows and the connection closes, so the
         * client is not left waiting */
        gw__client_abort_later(c, GW_ENOMEM);
        return GW_ENOMEM;
    }
    char *start = o;
    o = PUT_LIT(o, "HTTP/1.1 ");
    o = gw_put_u64(o, (uint64_t)status);
    *o++ = ' ';
    o = put(o, reason, reason_n);
    o = PUT_LIT(o, "\r\nDate: ");
    o = put(o, date, date_n);
    o = PUT_LIT(o, "\r\n");
    if (headers && hlen)
        o = put(o, headers, hlen);
    if (req->resp_extra_n)
        o = put(o, req->resp_extra, req->resp_extra_n);
    if (c->server->opts.gateway_headers) {
        o = PUT_LIT(o, "X-Request-Id: ");
        o = put(o, req->request_id, id_n);
        o = PUT_LIT(o, "\r\nX-Gateway-Upstream: ");
        o = put(o, up, up_n);
        o = PUT_LIT(o, "\r\n");
    }
    c->req->resp_left = -1;
    if (status == 204 || status < 200) {
        /* no framing headers at all */
    } else if (body_len >= 0) {
        o = PUT_LIT(o, "Content-Length: ");
        o = gw_put_u64(o, (uint64_t)body_len);
        o = PUT_LIT(o, "\r\n");
        if (!nobody)
            c->req->resp_left = body_len;
    } else if (!nobody) {
        if (req->http_minor >= 1) {
            c->flags |= F_RESP_CHUNKED;
            o = PUT_LIT(o, "Transfer-Encoding: chunked\r\n");
        } else {
            c->flags |= F_CLOSE_AFTER; /* HTTP/1.0: the end of the body is the close */
        }
    }
    if (nobody)
        c->flags |= F_RESP_NOBODY;
    if (will_close(c)) {
        c->flags |= F_CLOSE_AFTER;
        o = PUT_LIT(o, "Connection: close\r\n\r\n");
    } else if (req->http_minor == 0) {
        o = PUT_LIT(o, "Connection: keep-alive\r\n\r\n");
    } else {
        o = PUT_LIT(o, "\r\n");
    }
    c->req->hlen = (size_t)(o - start);
    c->flags |= F_HEAD_PENDING;
    return 0;
}

int gw_response_body(gw_request *req, const char *p, size_t n)
{
    if (req->stream)
        return gw__h2_response_body(req, p, n);
    gw_client *c = req->client;
    if (c->state != CS_ACTIVE || !(c->flags & F_RESP_BEGUN) || (c->flags & F_ABORT_POSTED))
        return GW_ECLOSED;
    uv_buf_t bufs[4];
    unsigned nb = 0;
    char size_line[24];
    if (c->flags & F_RESP_NOBODY)
        n = 0;
    if (c->req->resp_left >= 0 && (int64_t)n > c->req->resp_left)
        n = (size_t)c->req->resp_left; /* never more than the Content-Length we announced */
    if (c->flags & F_HEAD_PENDING) {
        bufs[nb++] = uv_buf_init(c->req->hbuf, (unsigned)c->req->hlen);
        req->bytes_out += c->req->hlen;
        c->flags &= ~F_HEAD_PENDING;
    }
    if (n > 0) {
        if (c->flags & F_RESP_CHUNKED) {
            size_t l = gw_chunk_size_line(size_line, n);
            bufs[nb++] = uv_buf_init(size_line, (unsigned)l);
            bufs[nb++] = uv_buf_init((char *)p, (unsigned)n);
            bufs[nb++] = uv_buf_init("\r\n", 2);
        } else {
            bufs[nb++] = uv_buf_init((char *)p, (unsigned)n);
        }
        if (c->req->resp_left >= 0)
            c->req->resp_left -= (int64_t)n;
        req->bytes_out += n;
    }
    int r = gw__client_write(c, bufs, nb);
    if (r < 0) {
        gw__client_abort_later(c, r);
        return r;
    }
    if (c->pending_write > WRITE_HIGH_WATER) {
        c->flags |= F_WANT_DRAIN;
        return 1;
    }
    return 0;
}

void gw_response_end(gw_request *req)
{
    if (req->stream) {
        gw__h2_response_end(req);
        return;
    }
    gw_client *c = req->client;
    if (c->state != CS_ACTIVE || !(c->flags & F_RESP_BEGUN))
        return;
    if (c->flags & F_ABORT_POSTED) {
        c->flags &= ~F_HANDLER; /* the handler let go; the posted abort ends the request */
        return;
    }
    uv_buf_t bufs[2];
    unsigned nb = 0;
    if (c->flags & F_HEAD_PENDING) {
        bufs[nb++] = uv_buf_init(c->req->hbuf, (unsigned)c->req->hlen);
        req->bytes_out += c->req->hlen;
        c->flags &= ~F_HEAD_PENDING;
    }
    if (c->flags & F_RESP_CHUNKED)
        bufs[nb++] = uv_buf_init("0\r\n\r\n", 5);
    if (c->req->resp_left > 0)
        c->flags |= F_CLOSE_AFTER; /* short body: only a close tells the client */
    int r = gw__client_write(c, bufs, nb);
    if (r < 0) {
        c->flags &= ~F_HANDLER;
        gw__client_abort_later(c, r);
        return;
    }
    gw__response_queued(c);
}

void gw_response_fail(gw_request *req)
{
    if (req->stream) {
        gw__h2_response_fail(req);
        return;
    }
    gw_client *c = req->client;
    if (c->state != CS_ACTIVE)
        return;
    if (c->flags & F_ABORT_POSTED) {
        c->flags &= ~F_HANDLER;
        return;
    }
    if (!(c->flags & F_RESP_BEGUN))
        req->status = 502;
    c->flags |= F_CLOSE_AFTER | F_NO_LINGER;
    c->flags &= ~F_HEAD_PENDING;
    c->req->resp_left = 0;
    gw__response_queued(c); /* what was queued goes out, then the connection closes */
}

void gw_response_reset(gw_request *req)
{
    if (req->stream) { /* a stream reset, not the connection's */
        gw__h2_response_fail(req);
        return;
    }
    gw_client *c = req->client;
    uv_os_fd_t fd;
    if (c->state == CS_ACTIVE && uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0) {
        struct linger l = { .l_onoff = 1, .l_linger = 0 };
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    gw_response_fail(req);
}

void gw_response_simple(gw_request *req, int status, const char *content_type,
                        const char *body, size_t n, const char *extra_headers)
{
    char hdr[1024];
    int hl = snprintf(hdr, sizeof hdr, "%s%s%s%s", content_type ? "Content-Type: " : "",
                      content_type ? content_type : "", content_type ? "\r\n" : "",
                      extra_headers ? extra_headers : "");
    if (hl < 0 || (size_t)hl >= sizeof hdr)
        hl = 0;
    if (gw_response_begin(req, status, hdr, (size_t)hl, (int64_t)n) < 0)
        return;
    if (n && gw_response_body(req, body, n) < 0)
        return;
    gw_response_end(req);
}

void gw_response_error(gw_request *req, int status, const char *msg)
{
    gw_response_error_headers(req, status, msg, NULL);
}

void gw_response_error_headers(gw_request *req, int status, const char *msg,
                               const char *extra_headers)
{
    if (!req->request_id[0]) /* the head never completed: no id was taken or made yet */
        gw_request_id_generate(req->request_id);
    if (!req->trace.origin) /* nor a trace: this answer starts one */
        gw_trace_start(&req->trace);
    char body[768];
    size_t len = (size_t)snprintf(body, sizeof body, "{\"error\":\"");
    gw_json_escape(body, &len, sizeof body - 192, msg, strlen(msg));
    len += (size_t)snprintf(body + len, sizeof body - len,
                            "\",\"status\":%d,\"request_id\":\"%s\",\"trace_id\":\"%s\","
                            "\"span_id\":\"%s\"}",
                            status, req->request_id, req->trace.trace_id, req->trace.span_id);
    gw_response_simple(req, status, "application/json", body, len, extra_headers);
}

