/* client_parse.c — reading a request off a server connection's buffer: the raw head scan
 * (bare CR/LF, control bytes, obs-fold), the request line (edge.h), llhttp and its callbacks
 * (header slices into the read buffer, framing checks, chunked body), and the parse loop
 * that dispatches complete heads to the handler. The connection's lifecycle (buffers,
 * timers, writing, ending a request, closing) is client.c's; both share client_int.h. */
#include <arpa/inet.h>
#include <inttypes.h>
#include <llhttp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/client_int.h"
#include "http/edge.h"
#include "http/gw_errors.h"
#include "http/http1.h"
#include "http/request_id.h"

static llhttp_settings_t parser_settings;

enum { SC_LINE_START, SC_IN_LINE, SC_CR, SC_END_CR };

/* A byte that may sit inside a head line: visible ASCII, SP, HTAB and obs-text. */
static inline int head_plain(unsigned char ch)
{
    return (ch >= 0x20 && ch != 0x7f) || ch == '\t';
}

/* Rejects what llhttp accepts but a proxy must not forward (RFC 9112 §2.2, §5.2): a bare
 * CR or LF, a control byte or NUL anywhere in the head, and obs-fold continuation lines.
 * Scans only the head: it stops at the empty line. Returns 0 or -1 (fail_reason set). */
/* Eight bytes at once: 1 when none is a control byte (< 0x20, which includes CR, LF and
 * HTAB) or DEL. The borrow trick is exact about whether such a byte exists; a word with
 * one (or an HTAB) goes through the byte loop. */
static inline int word_plain(const unsigned char *p)
{
    uint64_t x;
    memcpy(&x, p, sizeof x);
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t lt = (x - 0x20 * ones) & ~x & highs;
    uint64_t y = x ^ (0x7f * ones);
    uint64_t del = (y - ones) & ~y & highs;
    return !(lt | del);
}

static int scan_head(gw_client *c)
{
    const unsigned char *p = (const unsigned char *)c->buf;
    /* locals, not c->...: the loop runs once per head byte */
    size_t i = c->req->scan_pos, len = c->len;
    /* stop one byte past the head limit, so the error says where that limit was crossed
     * (still on the request line: 414) however much the read buffer holds */
    size_t limit = c->req->head_start + c->server->opts.limits.max_header_bytes + 1;
    if (len > limit)
        len = limit;
    unsigned state = c->req->scan_state, lines = c->req->scan_lines;
    int done = (c->flags & F_SCAN_DONE) != 0;
    const char *bad = NULL;

    while (!done && i < len) {
        if (state == SC_IN_LINE) {
            while (i + 8 <= len && word_plain(p + i))
                i += 8;
            while (i < len && head_plain(p[i]))
                i++;
            if (i == len)
                break;
        }
        unsigned char ch = p[i];
        switch (state) {
        case SC_LINE_START:
            if (ch == '\r') {
                state = SC_END_CR;
                break;
            }
            if ((ch == ' ' || ch == '\t') && lines > 0) {
                bad = "obsolete line folding is not accepted";
                goto fail;
            }
            /* fallthrough */
        case SC_IN_LINE:
            if (ch == '\r') {
                state = SC_CR;
            } else if (ch == '\n') {
                bad = "bare LF in request head";
                goto fail;
            } else if (!head_plain(ch)) {
                bad = ch ? "control character in request head" : "NUL in request head";
                goto fail;
            } else {
                state = SC_IN_LINE;
            }
            break;
        case SC_CR:
            if (ch != '\n') {
                bad = "bare CR in request head";
                goto fail;
            }
            lines++;
            state = SC_LINE_START;
            break;
        case SC_END_CR:
            if (ch != '\n') {
                bad = "bare CR in request head";
                goto fail;
            }
            if (lines == 0) /* an empty line before the request line is ignored */
                state = SC_LINE_START;
            else
                done = 1;
            break;
        }
        i++;
    }
    c->req->scan_pos = i;
    c->req->scan_state = state;
    c->req->scan_lines = lines;
    if (done)
        c->flags |= F_SCAN_DONE;
    if (c->req->scan_pos - c->req->head_start > c->server->opts.limits.max_header_bytes) {
        c->req->fail_status = lines == 0 ? 414 : 431; /* still on the request line: URI */
        c->req->fail_reason = lines == 0 ? "request line too long" : "request head too large";
        return -1;
    }
    return 0;

fail:
    c->req->scan_state = state;
    c->req->scan_lines = lines;
    c->req->fail_reason = bad;
    return -1;
}

/* Answers a broken head with STATUS and closes (lingering: the rest of the head may still
 * be coming): nothing was given to a handler. */
void gw__client_fail_head(gw_client *c, int status, const char *reason)
{
    c->state = CS_ACTIVE;
    c->flags |= F_CLOSE_AFTER | F_UNREAD;
    c->flags &= ~(F_BODY_PULL | F_DISPATCH);
    gw_response_error(&c->req->pub, status, reason);
}

static void begin_request(gw_client *c)
{
    req_impl *r = gw__client_req_get(c->server);
    if (!r) {
        gw__client_close(c, GW_ENOMEM);
        return;
    }
    c->req = r;
    gw_request *q = &r->pub;
    q->client = c;
    q->server = c->server;
    q->handler = &c->server->handler;
    q->content_length = -1;
    q->upstream_ms = -1;
    q->max_body_bytes = c->server->opts.limits.max_body_bytes;
    q->start_ns = uv_hrtime();
    q->conn_id = c->id;
    q->bytes_in = c->len - c->off;
    q->tls = c->tls != NULL;
    /* the address is kept raw per connection (an idle one needs no text) */
    q->client_addr[0] = '\0';
    if (c->peer_family)
        gw_addr_text(c->peer_family, c->peer_addr, q->client_addr, sizeof q->client_addr);
    llhttp_init(&r->parser, HTTP_REQUEST, &parser_settings);
    r->parser.data = c;
    c->state = CS_HEAD;
    c->flags &= ~(F_PARSER_PAUSED | F_BODY_PULL | F_BODY_DONE | F_BODY_END_SENT | F_DISPATCH | F_FIRST_CHUNK | F_RESP_BEGUN |
                  F_HEAD_PENDING | F_RESP_CHUNKED | F_RESP_NOBODY | F_CONTINUE_SENT |
                  F_WANT_DRAIN | F_SCAN_DONE | F_HANDLER | F_UNREAD | F_NO_LINGER | F_LINE_DONE |
                  F_CHUNK_LINE);
    c->req->scan_pos = c->req->head_start = c->off;
    c->req->scan_state = SC_LINE_START;
    c->req->chunk_left = 0;
    c->req->crlf_pending = 0;
    c->req->chunk_skip = 0;
    c->req->authority = (gw_slice){ NULL, 0 };
    c->req->scan_lines = 0;
    c->req->url_len = 0;
    c->req->n_content_length = c->req->n_transfer_encoding = c->req->n_host = 0;
    c->req->last_was_value = 1;
    c->body_read = 0;
    c->req->resp_left = -1;
    c->req->fail_status = 400;
    c->req->fail_reason = NULL;
    /* the first request's head counts from accept: its deadline is already set */
    if (c->flags & F_KEPT)
        gw__client_set_deadline(c, TK_HEADER, c->server->opts.limits.header_timeout_ms);
}

static int can_parse(const gw_client *c)
{
    if (c->state == CS_IDLE || c->state == CS_HEAD)
        return 1;
    return c->state == CS_ACTIVE && (c->flags & F_BODY_PULL) && !(c->flags & F_BODY_DONE) &&
           !(c->flags & F_DISPATCH);
}

static void dispatch(gw_client *c)
{
    c->flags &= ~F_DISPATCH;
    c->flags |= F_HANDLER;
    c->state = CS_ACTIVE;
    gw__client_arm_timer(c);
    gw_request *q = &c->req->pub;
    size_t n = q->url.n < sizeof c->req->url_copy - 1 ? q->url.n : sizeof c->req->url_copy - 1;
    memcpy(c->req->url_copy, q->url.p, n);
    c->req->url_copy[n] = '\0';
    c->server->handler.on_request(q);
}

static void deliver_body_end(gw_client *c)
{
    if (c->state != CS_ACTIVE || !(c->flags & F_HANDLER) || !(c->flags & F_BODY_PULL) ||
        !(c->flags & F_BODY_DONE) || (c->flags & F_BODY_END_SENT))
        return;
    c->flags |= F_BODY_END_SENT;
    c->req->pub.handler->on_body_end(&c->req->pub);
}

/* The request line, once scan_head saw its CRLF: parsed here (edge.h) so that any token
 * method and HTTP/1.x with a higher minor pass, and exactly one SP separates the parts;
 * llhttp is given a canonical line instead ("GET / HTTP/1.1", or 1.0 for a 1.0 client) and
 * then the real header bytes. Returns 1 when done, 0 when the line is not complete yet, -1
 * when it was refused (answered). */
static int parse_request_line(gw_client *c)
{
    if (c->req->scan_lines == 0)
        return 0;
    char *p = c->buf + c->off;
    while (p[0] == '\r') /* empty lines before the request line (scan_head checked the LF) */
        p += 2;
    char *lf = memchr(p, '\n', (size_t)(c->buf + c->len - p)); /* after a CR: scan_head */
    gw_reqline rl;
    const char *why = NULL;
    int st = gw_edge_request_line(p, (size_t)(lf - 1 - p), c->server->opts.limits.max_uri_bytes,
                                  &rl, &why);
    if (st) {
        gw__client_fail_head(c, st, why);
        return -1;
    }
    gw_request *q = &c->req->pub;
    q->method = rl.method;
    q->url = rl.origin;
    q->http_major = 1;
    q->http_minor = rl.minor ? 1 : 0; /* a higher 1.x minor is answered as 1.1 */
    c->req->authority = rl.authority;
    static const char canon11[] = "GET / HTTP/1.1\r\n", canon10[] = "GET / HTTP/1.0\r\n";
    if (c->flags & F_PARSER_PAUSED) {
        llhttp_resume(&c->req->parser);
        c->flags &= ~F_PARSER_PAUSED;
    }
    if (llhttp_execute(&c->req->parser, q->http_minor ? canon11 : canon10, sizeof canon11 - 1) != HPE_OK) {
        gw__client_fail_head(c, 400, "malformed request");
        return -1;
    }
    c->flags |= F_LINE_DONE;
    c->off = (size_t)(lf + 1 - c->buf);
    return 1;
}

#define GW_CHUNK_LINE_MAX 4096 /* a chunk-size line with its extensions, at most */

/* llhttp is paused before a chunk-size line: fix what it would wrongly refuse (edge.h) once
 * the line is buffered. Returns 1 to go on parsing, 0 to wait for bytes, -1 refused
 * (fail_status/fail_reason set). */
static int prepare_chunk_line(gw_client *c)
{
    size_t at = c->off + (size_t)c->req->chunk_skip;
    if (at > c->len)
        return 0;
    size_t max = GW_CHUNK_LINE_MAX;
    int r = gw_edge_chunk_line(c->buf + at, c->len - at, max);
    if (r == 0 && c->len >= c->server->buf_size) {
        if ((c->flags & F_HANDLER) && c->off > 0) {
            /* the head was handed over: the unparsed tail moves to the buffer's start */
            memmove(c->buf, c->buf + c->off, c->len - c->off);
            c->len -= c->off;
            c->off = 0;
            return 0;
        }
        r = -1;
    }
    if (r < 0) {
        c->req->fail_status = 400;
        c->req->fail_reason = r == -1 ? "chunk extension too long" : "malformed chunk extension";
        return -1;
    }
    if (r > 0)
        c->flags &= ~F_CHUNK_LINE;
    return r;
}

/* The parse loop: feeds buffered bytes to llhttp as long as the state allows, dispatches
 * complete heads, and leaves the connection reading or not. Re-entry (a handler answering
 * synchronously) only asks the running loop for another pass. */
void gw__client_process(gw_client *c)
{
    if (c->flags & F_IN_PARSE) {
        c->flags |= F_REPARSE;
        return;
    }
    c->flags |= F_IN_PARSE;
    do {
        c->flags &= ~F_REPARSE;
        if (c->state == CS_CLOSING || c->state == CS_LINGER || c->state == CS_UPGRADED)
            break;
        if (c->state == CS_IDLE && c->buf && c->off < c->len)
            begin_request(c);
        if (c->state == CS_HEAD && scan_head(c) < 0) {
            gw__client_fail_head(c, c->req->fail_status, c->req->fail_reason);
            continue;
        }
        int line_ok = 1; /* 0: the request line is not complete yet */
        if (c->state == CS_HEAD && !(c->flags & F_LINE_DONE) && (line_ok = parse_request_line(c)) < 0)
            continue; /* refused: answered */
        int chunk_ok = 1;
        if ((c->flags & F_CHUNK_LINE) && can_parse(c) && c->buf) {
            chunk_ok = prepare_chunk_line(c);
            if (chunk_ok < 0) {
                if (c->state == CS_HEAD) {
                    gw__client_fail_head(c, c->req->fail_status, c->req->fail_reason);
                    continue;
                }
                gw__client_fail_in_body(c, 400, GW_EPARSE, c->req->fail_reason);
                if (c->state == CS_CLOSING || c->state == CS_LINGER)
                    break;
                continue;
            }
        }
        if (line_ok && chunk_ok && can_parse(c) && c->buf && c->off < c->len) {
            if (c->flags & F_PARSER_PAUSED) {
                llhttp_resume(&c->req->parser);
                c->flags &= ~F_PARSER_PAUSED;
            }
            const char *start = c->buf + c->off;
            llhttp_errno_t err = llhttp_execute(&c->req->parser, start, c->len - c->off);
            if (c->state == CS_CLOSING || c->state == CS_LINGER)
                break; /* the buffer is no longer the parser's */
            if (err == HPE_OK) {
                c->off = c->len;
            } else if (err == HPE_PAUSED) {
                c->off = (size_t)(llhttp_get_error_pos(&c->req->parser) - c->buf);
                c->flags |= F_PARSER_PAUSED;
            } else if (c->state == CS_HEAD) {
                const char *why = c->req->fail_reason ? c->req->fail_reason : llhttp_get_error_reason(&c->req->parser);
                gw__client_fail_head(c, c->req->fail_status, why ? why : "malformed request");
                continue;
            } else {
                /* bad chunked framing or a limit in the body, after the handler got the
                 * head: the handler lets go; the client gets an error if nothing went out */
                int status = c->req->fail_status ? c->req->fail_status : 400;
                const char *why = c->req->fail_reason ? c->req->fail_reason : llhttp_get_error_reason(&c->req->parser);
                gw__client_fail_in_body(c, status, status == 413 ? GW_ETOOBIG : GW_EPARSE,
                             why ? why : "malformed request body");
                if (c->state == CS_CLOSING || c->state == CS_LINGER)
                    break;
                continue;
            }
            if (c->state == CS_ACTIVE && !(c->flags & F_DISPATCH) && c->off == c->len) {
                c->off = c->len = 0; /* body bytes consumed: reuse the buffer from its start */
            }
        }
        if (c->flags & F_DISPATCH) {
            dispatch(c);
            continue;
        }
        if (c->state == CS_HEAD && !(c->flags & F_SCAN_DONE) && c->buf &&
            c->len >= c->server->buf_size) {
            int uri = c->req->scan_lines == 0; /* still on the request line */
            gw__client_fail_head(c, uri ? 414 : 431, uri ? "request line too long" : "request head too large");
            continue;
        }
        deliver_body_end(c);
    } while ((c->flags & F_REPARSE) && c->state != CS_CLOSING && c->state != CS_LINGER);
    c->flags &= ~F_IN_PARSE;
    if (c->state != CS_CLOSING)
        gw__client_update_reading(c);
}

/* ---- llhttp callbacks ---------------------------------------------------------------- */

static gw_client *parser_client(llhttp_t *p)
{
    return p->data;
}

static int reject(gw_client *c, int status, const char *reason)
{
    c->req->fail_status = status;
    c->req->fail_reason = reason;
    return HPE_USER;
}

static int on_message_begin(llhttp_t *p)
{
    gw_client *c = parser_client(p);
    if (!c->req)
        begin_request(c);
    return c->req ? 0 : -1;
}

static int extend(gw_slice *s, const char *at, size_t n)
{
    if (s->p == NULL) {
        s->p = at;
        s->n = n;
        return 0;
    }
    if (s->p + s->n != at)
        return -1; /* cannot happen while the head stays in one buffer */
    s->n += n;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    gw_client *c = parser_client(p);
    gw_request *q = &c->req->pub;
    if (c->req->last_was_value) {
        if ((uint32_t)q->n_headers >= c->server->opts.limits.max_headers)
            return reject(c, 431, "too many request headers");
        q->headers[q->n_headers].name = (gw_slice){ NULL, 0 };
        q->headers[q->n_headers].value = (gw_slice){ "", 0 };
        q->n_headers++;
        c->req->last_was_value = 0;
    }
    return extend(&q->headers[q->n_headers - 1].name, at, n) ? reject(c, 400, "malformed header") : 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    gw_client *c = parser_client(p);
    gw_request *q = &c->req->pub;
    gw_slice *v = &q->headers[q->n_headers - 1].value;
    if (!c->req->last_was_value) {
        v->p = NULL;
        v->n = 0;
        c->req->last_was_value = 1;
    }
    return extend(v, at, n) ? reject(c, 400, "malformed header") : 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    gw_client *c = parser_client(p);
    gw_request *q = &c->req->pub;
    c->req->last_was_value = 1;
    gw_header *h = &q->headers[q->n_headers - 1];
    if (h->value.p == NULL)
        h->value = (gw_slice){ "", 0 };
    /* a field value excludes trailing whitespace (RFC 9110 §5.5); llhttp keeps it */
    while (h->value.n && (h->value.p[h->value.n - 1] == ' ' || h->value.p[h->value.n - 1] == '\t'))
        h->value.n--;
    /* llhttp takes "Name : v" (the name then ends in a space) and an empty name */
    if (!gw_edge_is_token(h->name))
        return reject(c, 400, "invalid header field name");
    if (gw_slice_ieq(h->name, "content-length")) {
        uint64_t cl;
        c->req->n_content_length++;
        /* llhttp accepts up to 2^64-1, which wraps negative as the int64_t we keep */
        if (gw_edge_content_length(h->value, &cl) < 0)
            return reject(c, 400, "invalid Content-Length");
    }
    else if (gw_slice_ieq(h->name, "transfer-encoding")) {
        c->req->n_transfer_encoding++;
        /* only a lone "chunked": "gzip, chunked" and friends are how smuggling starts */
        if (!gw_slice_ieq(h->value, "chunked"))
            return reject(c, 400, "Transfer-Encoding other than chunked");
    }
    else if (gw_slice_ieq(h->name, "host")) {
        c->req->n_host++;
        q->host = h->value;
        if (!gw_edge_host_valid(h->value))
            return reject(c, 400, "invalid Host header");
    } else if (gw_slice_ieq(h->name, "expect")) {
        /* an HTTP/1.0 client knows no 100: its expectation is ignored (RFC 9110 §10.1.1) */
        if (q->http_minor == 0 && gw_slice_ieq(h->value, "100-continue"))
            return 0;
        if (!gw_slice_ieq(h->value, "100-continue"))
            return reject(c, 417, "unsupported Expect");
        q->expect_continue = 1;
    }
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    gw_client *c = parser_client(p);
    gw_request *q = &c->req->pub;
    /* http_major/minor are the request line's (parse_request_line); no upgrade is accepted,
     * so llhttp must go on parsing HTTP/1.1 after this request */
    p->upgrade = 0;
    /* request smuggling: one framing, stated once (RFC 9112 §6.1, §6.3) */
    if (c->req->n_content_length && c->req->n_transfer_encoding)
        return reject(c, 400, "both Content-Length and Transfer-Encoding");
    if (c->req->n_content_length > 1)
        return reject(c, 400, "several Content-Length headers");
    if (c->req->n_transfer_encoding > 1)
        return reject(c, 400, "several Transfer-Encoding headers");
    if (c->req->n_transfer_encoding && !(p->flags & F_CHUNKED))
        return reject(c, 400, "Transfer-Encoding other than chunked");
    if (c->req->n_transfer_encoding && q->http_minor == 0)
        return reject(c, 400, "Transfer-Encoding in an HTTP/1.0 request");
    if (c->req->n_host > 1)
        return reject(c, 400, "several Host headers");
    if (c->req->n_host == 0 && q->http_minor == 1)
        return reject(c, 400, "missing Host header");
    if (c->req->authority.p) {
        /* absolute-form: the authority is the Host (RFC 9112 §3.2.2), a different Host
         * header is a request that means two things */
        if (c->req->n_host && !gw_edge_host_same(q->host, c->req->authority))
            return reject(c, 400, "Host does not match the request target");
        q->host = c->req->authority;
    }
    q->chunked = (p->flags & F_CHUNKED) != 0;
    if (c->req->n_content_length)
        q->content_length = (int64_t)p->content_length;
    q->has_body = q->chunked || q->content_length > 0;
    q->keep_alive = llhttp_should_keep_alive(p) != 0;
    q->is_head = gw_slice_eq(q->method, "HEAD");
    /* path and query */
    const char *qm = memchr(q->url.p, '?', q->url.n);
    if (memchr(q->url.p, '#', q->url.n))
        return reject(c, 400, "fragment in request target");
    q->path = (gw_slice){ q->url.p, qm ? (size_t)(qm - q->url.p) : q->url.n };
    q->query = qm ? (gw_slice){ qm + 1, q->url.n - q->path.n - 1 } : (gw_slice){ NULL, 0 };
    size_t mn = q->method.n < sizeof q->method_buf - 1 ? q->method.n : sizeof q->method_buf - 1;
    memcpy(q->method_buf, q->method.p, mn);
    q->method_buf[mn] = '\0';
    gw_slice rid = gw_request_header(q, "x-request-id");
    if (gw_request_id_valid(rid)) {
        memcpy(q->request_id, rid.p, rid.n);
        q->request_id[rid.n] = '\0';
    } else {
        gw_request_id_generate(q->request_id);
    }
    gw_trace_begin(&q->trace, q->headers, q->n_headers);
    if (q->chunked) {
        c->flags |= F_CHUNK_LINE | F_REPARSE; /* paused: its first size line is checked first */
        c->req->chunk_skip = 0;
    }
    if (q->chunked && !q->expect_continue) {
        /* hold the request until its first chunk-size line parsed: a malformed one is then
         * refused before anything went upstream (a 100-continue client sends no body before
         * we answer, so that one goes at once) */
        c->flags |= F_FIRST_CHUNK;
        return HPE_PAUSED;
    }
    c->flags |= F_DISPATCH;
    /* With a body, stop here: the handler pulls it when it is ready for it. */
    return q->has_body ? HPE_PAUSED : 0;
}

/* llhttp 8.1 does not check the CRLF that must follow chunk data; we do, since a proxy
 * that reads chunk boundaries differently from its upstream can be smuggled through. */
int gw__client_check_chunk_crlf(gw_client *c, const char *p, const char *end)
{
    static const char crlf[2] = { '\r', '\n' };
    while (c->req->crlf_pending && p < end) {
        if (*p != crlf[2 - c->req->crlf_pending])
            return -1;
        c->req->crlf_pending--;
        p++;
    }
    return 0;
}

static int on_chunk_header(llhttp_t *p)
{
    gw_client *c = parser_client(p);
    c->req->chunk_left = p->content_length;
    if (c->flags & F_FIRST_CHUNK) {
        c->flags &= ~F_FIRST_CHUNK;
        c->flags |= F_DISPATCH;
        return HPE_PAUSED;
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    gw_client *c = parser_client(p);
    /* the handler may have ended the response from an earlier on_body of this execute (the
     * request is then being written or gone): stop; the connection closes without reading
     * the rest */
    if (c->state != CS_ACTIVE || !(c->flags & F_HANDLER))
        return HPE_PAUSED;
    gw_request *q = &c->req->pub;
    if (q->chunked) {
        c->req->chunk_left -= n < c->req->chunk_left ? n : c->req->chunk_left;
        if (c->req->chunk_left == 0) {
            c->req->crlf_pending = 2;
            if (gw__client_check_chunk_crlf(c, at + n, c->buf + c->len) < 0)
                return reject(c, 400, "chunk data not followed by CRLF");
        }
    }
    c->body_read += n;
    if (q->max_body_bytes && c->body_read > q->max_body_bytes)
        return reject(c, 413, "request body too large");
    q->handler->on_body(q, at, n);
    if (c->state == CS_CLOSING)
        return HPE_USER;
    if (c->state != CS_ACTIVE || !(c->flags & F_HANDLER))
        return HPE_PAUSED; /* the handler ended the response in on_body: c->req is gone */
    if (q->chunked && c->req->chunk_left == 0) {
        /* the next size line is checked (prepare_chunk_line) before llhttp reads it */
        c->flags |= F_CHUNK_LINE | F_REPARSE;
        c->req->chunk_skip = 2;
        return HPE_PAUSED;
    }
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    gw_client *c = parser_client(p);
    c->flags |= F_BODY_DONE;
    /* pause: the next pipelined request waits until this response is done */
    return HPE_PAUSED;
}

/* Once per process, whichever worker thread gets there first. */
static void init_parser_settings(void)
{
    llhttp_settings_init(&parser_settings);
    parser_settings.on_message_begin = on_message_begin;
    /* no on_url / on_method: llhttp sees a canonical request line (parse_request_line) */
    parser_settings.on_header_field = on_header_field;
    parser_settings.on_header_value = on_header_value;
    parser_settings.on_header_value_complete = on_header_value_complete;
    parser_settings.on_headers_complete = on_headers_complete;
    parser_settings.on_body = on_body;
    parser_settings.on_chunk_header = on_chunk_header;
    parser_settings.on_message_complete = on_message_complete;
}

static pthread_once_t parser_settings_once = PTHREAD_ONCE_INIT;

void gw__client_parse_init(void)
{
    pthread_once(&parser_settings_once, init_parser_settings);
}
