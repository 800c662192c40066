/* client_int.h — the client connection's private layout, shared by client.c (reading,
 * parsing, lifecycle) and client_response.c (writing responses). Not for handlers. */
#ifndef GW_CLIENT_INT_H
#define GW_CLIENT_INT_H

#include <llhttp.h>

#include "http/deadline.h"
#include "http/server_int.h"
#include "http/tls_transport.h"

#define WRITE_HIGH_WATER (64 * 1024) /* gw_response_body returns 1 above this */
#define HEAD_BUF_SIZE 4096

/* One timeout per connection whose meaning follows the state (noted per state below). */
typedef enum client_state {
    CS_IDLE,    /* waiting for a request. req == NULL; nothing unsent; buf holds only unparsed
                   pipelined bytes (or is NULL). Timer: header_timeout before the connection's
                   first request (from accept, as nginx's client_header_timeout), idle_timeout
                   between requests (F_KEPT) */
    CS_HEAD,    /* reading a request head. req != NULL, not seen by any handler. Timer: header,
                   from the request's first byte (the first request: from accept) */
    CS_ACTIVE,  /* req != NULL. F_HANDLER: the handler holds it until it ends the response or
                   is told on_abort; without it the server itself answers (broken head, failed
                   body). Timer: send while bytes are unsent (from the first unsent byte, moved
                   only by write progress), else body while the body is pulled, else none */
    CS_SENDING, /* the response is complete in the write queue, bytes still unsent. req !=
                   NULL, the handler is done with it; nothing is parsed (pipelined bytes wait
                   in buf, which bounds them). Timer: send */
    CS_LINGER,  /* answered, write side shut down, unread input read and thrown away (nginx's
                   lingering close) so the client sees the answer, not a reset. req == NULL;
                   buf is the discard area. Timer: lingering time, from entry */
    CS_CLOSING, /* uv_close called on both handles. req == NULL; nothing else happens */
    CS_H2,      /* HTTP/2 (h2.c owns the framing: c->h2). req == NULL; c->buf is read into and
                   handed to nghttp2 whole. Timer: h2.c's (send, body, idle) */
    CS_UPGRADED,/* after a 101 (gw_request_upgrade): a byte stream for the end's binder
                   (end.h, client_upgrade.c). req == NULL; buf[off..len) holds bytes not
                   yet given to it. Timer: send while bytes are unsent (from the last
                   write progress), else none (the binder keeps its own) */
} client_state;

#define GW_LINGER_MS 2000              /* lingering close lasts at most this long */
#define GW_LINGER_BYTES (8u << 20)     /* ... and reads at most this much */

enum {
    F_READING = 1 << 0,       /* uv_read_start is in effect */
    F_PARSER_PAUSED = 1 << 1, /* llhttp returned HPE_PAUSED: resume before the next execute */
    F_IN_PARSE = 1 << 2,      /* client_process is on the stack: re-entry only sets F_REPARSE */
    F_REPARSE = 1 << 3,
    F_BODY_PULL = 1 << 4,     /* the handler wants body bytes now */
    F_BODY_DONE = 1 << 5,     /* llhttp saw the end of the request message */
    F_BODY_END_SENT = 1 << 6, /* the handler was told on_body_end */
    F_DISPATCH = 1 << 7,      /* head complete: give it to the handler once execute returns */
    F_RESP_BEGUN = 1 << 8,
    F_HEAD_PENDING = 1 << 9,  /* response head built, not yet written (joins the first body write) */
    F_RESP_CHUNKED = 1 << 10,
    F_RESP_NOBODY = 1 << 11,  /* HEAD, 204, 304: body bytes are dropped */
    F_CLOSE_AFTER = 1 << 12,  /* close once this response is written */
    F_CONTINUE_SENT = 1 << 13,
    F_WANT_DRAIN = 1 << 14,   /* gw_response_body returned 1: call on_drain when flushed */
    F_SCAN_DONE = 1 << 15,    /* the raw head scan reached the empty line */
    F_HANDLER = 1 << 16,      /* the handler holds req (on_abort is owed if it is cut) */
    F_ABORT_POSTED = 1 << 17, /* an abort waits in the server's posted queue */
    F_FIRST_CHUNK = 1 << 18,  /* chunked head parsed; dispatch once the first chunk size is */
    F_KEPT = 1 << 19,         /* a request was served: the idle timer means idle_timeout */
    F_UNREAD = 1 << 20,       /* the server answered a head it did not read to its end */
    F_NO_LINGER = 1 << 21,    /* truncated or reset response: close as soon as it is written */
    F_PEER_EOF = 1 << 22,     /* the client shut its write side: no request follows */
    F_WROTE = 1 << 23,        /* something was written on this connection */
    F_NODELAY = 1 << 24,      /* TCP_NODELAY is set (from the second write on, see gw__client_write) */
    F_LINE_DONE = 1 << 25,    /* the request line is parsed (edge.h), llhttp had the canonical one */
    F_CHUNK_LINE = 1 << 26,   /* llhttp paused before a chunk-size line (chunk_skip bytes on) */
    F_UPG_CLOSE = 1 << 27,    /* CS_UPGRADED: the binder let go; close once what is queued left */
    F_UPG_READ = 1 << 28,     /* CS_UPGRADED: the binder wants bytes */
};

/* Which list of the server's timeouts (deadline.h) a deadline goes to: one per timeout
 * value, so that each list stays in expiry order. */
enum { TK_HEADER, TK_IDLE, TK_BODY, TK_SEND, TK_LINGER, TK_HANDSHAKE };

/* What only a request needs lives here, not in the connection: an idle keep-alive
 * connection holds no request (the structs are recycled per server). */
typedef struct req_impl {
    gw_request pub;
    llhttp_t parser;         /* initialised per request: llhttp keeps nothing between
                                messages that a new request needs */
    int fail_status;         /* status to answer when a callback rejects the head */
    const char *fail_reason;
    /* raw head scan (bare CR/LF, control bytes, obs-fold), see scan_head */
    size_t head_start;       /* where the current head begins in buf */
    size_t scan_pos;
    unsigned scan_state, scan_lines;
    size_t url_len;
    int n_content_length, n_transfer_encoding, n_host;
    int last_was_value;      /* llhttp callback order: field, value, field, ... */
    uint64_t chunk_left;     /* bytes of the current chunk still to come */
    int crlf_pending;        /* bytes of the CRLF after chunk data still to check (0..2) */
    int chunk_skip;          /* F_CHUNK_LINE: bytes from off to the size line (its CRLF) */
    gw_slice authority;      /* an absolute-form target's authority: the request's Host */
    int64_t resp_left;       /* Content-Length bytes still to send; -1 when not counted */
    char url_copy[512]; /* for the access log: the head slices die with the buffer */
    /* the response head, built aside and sent with the first body bytes: in head_inline
     * unless it is larger (then malloc'd); it lives and dies with the request */
    char *hbuf;
    size_t hlen, hcap;
    char head_inline[HEAD_BUF_SIZE];
} req_impl;

/* An idle keep-alive connection is this struct and nothing else (no read buffer, no
 * request, no timer handle): keep it small. */
struct gw_client {
    uv_tcp_t tcp;
    gw_server *server;
    gw_queue node;
    client_state state;
    unsigned flags;
    char *buf;               /* read buffer (server->buf_size), or NULL when idle and empty */
    uint32_t len, off;       /* buf[0..len) read, buf[0..off) consumed by the parser */
    req_impl *req;
    size_t pending_write;    /* bytes handed to uv_write and not yet written (stream_write.h) */
    uint64_t body_read;      /* request body bytes; in CS_LINGER: bytes thrown away */
    uint64_t id;             /* gw_request.conn_id */
    gw_timeout timeout;      /* the state's timeout, in one of the server's lists */
    gw_queue post_node;      /* in server->posted while deferred work waits */
    int abort_err;
    uint8_t peer_family;     /* AF_INET, AF_INET6, or 0: unknown */
    uint8_t peer_addr[16];   /* formatted into each request's client_addr */
    gw_tls_conn *tls;        /* the TLS transport under the framing, or NULL: cleartext */
    struct gw_h2 *h2;        /* CS_H2: the HTTP/2 session (h2.c) */
    const struct gw_end_cb *end_cb; /* CS_UPGRADED: who gets the bytes (end.h), or NULL */
    void *end_arg;
};

/* Writes bufs after whatever is queued (uv_try_write first, the rest copied). 0 or <0.
 * Plaintext: through the TLS transport when there is one. */
int gw__client_write(gw_client *c, uv_buf_t *bufs, unsigned n);
/* Puts wire bytes (cleartext, or the TLS transport's records) on the socket. 0 or <0. */
int gw__client_write_wire(gw_client *c, uv_buf_t *bufs, unsigned n);

/* The framing's side of the transport (tls.c calls these): a buffer for plaintext, the
 * plaintext read into it (NREAD < 0: EOF or error, as libuv reports them), the handshake
 * done (EV: GW_TLS_HANDSHAKE or GW_TLS_RESUMED), a TLS event to count, a failed handshake
 * (counted, the connection closed). */
void gw__client_alloc(gw_client *c, uv_buf_t *out);
void gw__client_deliver(gw_client *c, ssize_t nread);
void gw__client_tls_ready(gw_client *c, enum gw_tls_event ev);
void gw__client_tls_event(gw_client *c, enum gw_tls_event ev);
void gw__client_tls_failed(gw_client *c, enum gw_tls_event ev);
/* Abort from inside an API call: posted, so the handler is never called back re-entrantly. */
void gw__client_abort_later(gw_client *c, int err);
/* The response is complete in the write queue: the handler lets go of req; the request is
 * reported and the connection kept or closed once those bytes are written. */
void gw__response_queued(gw_client *c);

/* Shared by the connection's files (client.c: lifecycle, buffers, timers, writing;
 * client_parse.c: scanning and parsing requests; client_request.c: the handler's calls). */
req_impl *gw__client_req_get(gw_server *s);
void gw__client_close(gw_client *c, int err);
void gw__client_set_deadline(gw_client *c, unsigned kind, uint64_t ms);
/* (Re)arms the timeout the current state calls for (see client_state). */
void gw__client_arm_timer(gw_client *c);
/* Gives the read buffer back to the server when nothing in it is unparsed. */
void gw__client_release_idle_memory(gw_client *c);
/* Starts or stops reading as the state and buffer allow. */
void gw__client_update_reading(gw_client *c);
/* A request whose head the handler has fails in its body: STATUS if nothing went out yet. */
void gw__client_fail_in_body(gw_client *c, int status, int err, const char *why);
/* (client_parse.c) Once per process: llhttp's callbacks. */
void gw__client_parse_init(void);
/* The parse loop over buffered bytes; re-entry only asks for another pass. */
void gw__client_process(gw_client *c);
/* Answers a broken head with STATUS and closes (lingering). */
void gw__client_fail_head(gw_client *c, int status, const char *reason);
/* (client.c) The request ends (reported, freed); see client.c. Lingering close. */
void gw__client_end_request(gw_client *c, int err);
void gw__client_linger(gw_client *c);
/* (client_upgrade.c) CS_UPGRADED: bytes read (NREAD < 0: EOF or error), the write queue
 * moved, posted work, the connection closing (ERR), the server draining. */
void gw__upgraded_on_read(gw_client *c, ssize_t nread);
void gw__upgraded_on_write(gw_client *c);
void gw__upgraded_posted(gw_client *c);
void gw__upgraded_closing(gw_client *c, int err);
void gw__upgraded_shutdown(gw_client *c);
/* Checks the CRLF after chunk data in [p, end). 0 or -1. */
int gw__client_check_chunk_crlf(gw_client *c, const char *p, const char *end);

#endif
