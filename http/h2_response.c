/* h2_response.c — the response calls for a request carried by an HTTP/2 stream (h2.h):
 * the handler's header block becomes a HEADERS frame (nghttp2 encodes it), its body bytes
 * wait in the stream's buffer for DATA frames that h2.c's run loop produces as the client's
 * windows allow. Nothing here drives nghttp2: each call queues and posts a run. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/gw_errors.h"
#include "http/h2_int.h"
#include "http/http1.h"

/* A stream's response bytes wait in s->out; the frame is written from there (NO_COPY). */
static ssize_t data_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                            size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                            void *user_data)
{
    h2_stream *s = source->ptr;
    (void)session, (void)stream_id, (void)buf, (void)user_data;
    if (s->flags & S_CUT)
        return NGHTTP2_ERR_DEFERRED; /* its RST_STREAM is queued: no more DATA */
    size_t avail = s->out_len - s->out_off;
    if (avail == 0 && !(s->flags & S_RESP_ENDED)) {
        s->flags |= S_DEFERRED;
        return NGHTTP2_ERR_DEFERRED;
    }
    size_t n = avail < length ? avail : length;
    if (n == avail && (s->flags & S_RESP_ENDED)) {
        if (s->resp_left > 0) {
            s->flags |= S_CUT; /* shorter than its Content-Length: the client must see it */
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        }
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    if (n)
        *data_flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    return (ssize_t)n;
}

/* RFC 9113 §8.2.2: these never go out in HTTP/2 (a handler's block may carry them). */
static int connection_specific(const char *name, size_t n)
{
    static const char *const drop[] = { "connection", "keep-alive", "proxy-connection",
                                        "transfer-encoding", "upgrade", "content-length",
                                        "date", NULL };
    for (int i = 0; drop[i]; i++)
        if (strlen(drop[i]) == n && strncasecmp(drop[i], name, n) == 0)
            return 1;
    return 0;
}

/* The stream is reset (CODE) and takes no more response bytes; a handler that holds req
 * keeps it until on_abort (from on_stream_close) and is not called otherwise meanwhile. */
void gw__h2_stream_cut(h2_stream *s, uint32_t code)
{
    s->flags &= ~(S_BODY_PULL | S_WANT_DRAIN);
    s->flags |= S_CUT | S_RESP_ENDED;
    nghttp2_submit_rst_stream(s->h->session, NGHTTP2_FLAG_NONE, s->id, code);
    gw__h2_post(s->h);
}

#define NV(nm, v, vl) ((nghttp2_nv){ (uint8_t *)(nm), (uint8_t *)(v), sizeof(nm) - 1, (vl), 0 })

int gw__h2_response_begin(gw_request *req, int status, const char *headers, size_t hlen,
                          int64_t body_len)
{
    h2_stream *s = req->stream;
    gw_h2 *h = s->h;
    if (stream_gone(s) || (s->flags & S_RESP_BEGUN) || status < 200)
        return GW_EINVAL;
    s->flags |= S_RESP_BEGUN;
    req->status = status;
    int nobody = req->is_head || status == 204 || status == 304;
    /* lines of the block: count for the array, lowercase names into a copy */
    size_t lines = 0;
    for (size_t i = 0; i < hlen; i++)
        lines += headers[i] == '\n';
    nghttp2_nv stack_nv[48], *nva = stack_nv;
    char stack_names[2048], *names = stack_names;
    if (lines + 8 > sizeof stack_nv / sizeof stack_nv[0])
        nva = malloc((lines + 8) * sizeof *nva);
    if (hlen > sizeof stack_names)
        names = malloc(hlen);
    if (!nva || !names) {
        if (nva != stack_nv)
            free(nva);
        if (names != stack_names)
            free(names);
        gw__h2_stream_cut(s, NGHTTP2_INTERNAL_ERROR);
        return GW_ENOMEM;
    }
    char st[4], cl[24];
    st[0] = (char)('0' + status / 100 % 10);
    st[1] = (char)('0' + status / 10 % 10);
    st[2] = (char)('0' + status % 10);
    size_t nn = 0;
    nva[nn++] = NV(":status", st, 3);
    const char *date = gw_http_date(h->c->server->loop);
    nva[nn++] = NV("date", date, strlen(date));
    const char *p = headers, *end = headers ? headers + hlen : NULL;
    char *lo = names;
    while (p && p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        const char *le = eol ? eol : end;
        const char *colon = memchr(p, ':', (size_t)(le - p));
        if (colon && colon > p && !connection_specific(p, (size_t)(colon - p))) {
            size_t n = (size_t)(colon - p);
            for (size_t i = 0; i < n; i++)
                lo[i] = (char)((p[i] >= 'A' && p[i] <= 'Z') ? p[i] + 32 : p[i]);
            const char *v = colon + 1, *ve = le;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            nva[nn++] = (nghttp2_nv){ (uint8_t *)lo, (uint8_t *)v, n, (size_t)(ve - v), 0 };
            lo += n;
        }
        p = le + 1;
    }
    if (h->c->server->opts.gateway_headers) {
        const char *up = req->upstream_name ? req->upstream_name : "gateway";
        nva[nn++] = NV("x-request-id", req->request_id, strlen(req->request_id));
        nva[nn++] = NV("x-gateway-upstream", up, strlen(up));
    }
    if (status != 204 && body_len >= 0) {
        nva[nn++] = NV("content-length", cl, (size_t)(gw_put_u64(cl, (uint64_t)body_len) - cl));
        if (!nobody)
            s->resp_left = body_len;
    }
    if (nobody)
        s->flags |= S_RESP_NOBODY;
    /* always with a data source, even without a body: the stream ends (END_STREAM on an
     * empty DATA) only at gw_response_end, so the handler keeps req until it ends it */
    nghttp2_data_provider dp = { .source.ptr = s, .read_callback = data_read_cb };
    int rv = nghttp2_submit_response(h->session, s->id, nva, nn, &dp);
    for (size_t i = 0; i < nn; i++)
        req->bytes_out += nva[i].namelen + nva[i].valuelen;
    if (nva != stack_nv)
        free(nva);
    if (names != stack_names)
        free(names);
    if (rv != 0) {
        gw__h2_stream_cut(s, NGHTTP2_INTERNAL_ERROR);
        return GW_ENOMEM;
    }
    gw__h2_post(h);
    return 0;
}

int gw__h2_response_body(gw_request *req, const char *p, size_t n)
{
    h2_stream *s = req->stream;
    if (stream_gone(s) || !(s->flags & S_RESP_BEGUN) || (s->flags & S_CUT))
        return GW_ECLOSED;
    if (s->flags & S_RESP_NOBODY)
        return 0;
    if (s->resp_left >= 0 && (int64_t)n > s->resp_left)
        n = (size_t)s->resp_left;
    if (n == 0)
        return 0;
    if (s->out_off > 0 && s->out_len + n > s->out_cap) {
        memmove(s->out, s->out + s->out_off, s->out_len - s->out_off);
        s->out_len -= s->out_off;
        s->out_off = 0;
    }
    if (s->out_len == s->out_off)
        s->out_since = uv_now(s->h->c->server->loop); /* bytes wait from now */
    if (gw__h2_buf_room(&s->out, s->out_len, &s->out_cap, n, 16384) < 0) {
        gw__h2_stream_cut(s, NGHTTP2_INTERNAL_ERROR); /* the handler keeps req: on_abort follows */
        return GW_ENOMEM;
    }
    memcpy(s->out + s->out_len, p, n);
    s->out_len += n;
    if (s->resp_left >= 0)
        s->resp_left -= (int64_t)n;
    req->bytes_out += n;
    if (s->flags & S_DEFERRED) {
        s->flags &= ~S_DEFERRED;
        nghttp2_session_resume_data(s->h->session, s->id);
    }
    gw__h2_post(s->h);
    if (s->out_len - s->out_off > WRITE_HIGH_WATER) {
        s->flags |= S_WANT_DRAIN; /* the client's window or the socket holds it back */
        return 1;
    }
    return 0;
}

void gw__h2_response_end(gw_request *req)
{
    h2_stream *s = req->stream;
    if (stream_gone(s) || !(s->flags & S_RESP_BEGUN) || (s->flags & S_RESP_ENDED))
        return;
    s->flags |= S_RESP_ENDED;
    s->flags &= ~(S_HANDLER | S_BODY_PULL | S_WANT_DRAIN);
    if (s->flags & S_DEFERRED) {
        s->flags &= ~S_DEFERRED;
        nghttp2_session_resume_data(s->h->session, s->id);
    }
    gw__h2_post(s->h);
}

void gw__h2_response_fail(gw_request *req)
{
    h2_stream *s = req->stream;
    s->flags &= ~(S_HANDLER | S_BODY_PULL | S_WANT_DRAIN);
    if (stream_gone(s) || (s->flags & S_CUT))
        return;
    if (!(s->flags & S_RESP_BEGUN))
        req->status = 502;
    gw__h2_stream_cut(s, NGHTTP2_INTERNAL_ERROR);
}

