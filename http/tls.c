/* tls.c — the TLS transport of a server connection (tls_transport.h): OpenSSL over a
 * memory BIO on the connection's loop. OpenSSL never touches the socket: libuv reads
 * ciphertext into t->io.in, the BIO hands it to OpenSSL, and what OpenSSL writes lands in the
 * server's scratch buffer, which goes out like any other write (stream_write.h) right after
 * the OpenSSL call that produced it. Nothing blocks: a handshake or a read that needs more
 * bytes returns WANT_READ and resumes when they arrive. */
#include "http/tls_transport.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>

#include "http/client_int.h"
#include "http/gw_errors.h"
#include "http/tls_bio.h"

#define TLS_IN_SIZE (17 * 1024)     /* one whole record: 16 KiB + header + expansion */
#define TLS_COALESCE 16384          /* writes of several pieces up to this become one record */
#define TLS_WIRE_KEEP (256 * 1024)  /* a scratch buffer grown past this is given back */

enum {
    T_HS_DONE = 1 << 0,      /* the handshake completed */
    T_WANT_READ = 1 << 1,    /* the framing wants plaintext (its F_READING) */
    T_SOCK_READING = 1 << 2, /* uv_read_start is in effect on the socket */
    T_POSTED = 1 << 3,       /* a pump waits in the server's posted queue */
    T_IN_PUMP = 1 << 4,      /* pump is on the stack: re-entry only sets T_REPUMP */
    T_REPUMP = 1 << 5,
    T_NOTIFY_SENT = 1 << 6,  /* close_notify went out (or was given up) */
    T_FAILED = 1 << 7,       /* a fatal TLS error: nothing more is read or written */
};

struct gw_tls_conn {
    SSL *ssl;
    gw_tls_ctx *ctx;          /* the snapshot pinned at accept */
    gw_client *c;
    gw_tls_io io;             /* ciphertext in; records out into the server's tls_wire */
    unsigned flags;
};

static void pump(gw_tls_conn *t);
static void update_socket(gw_tls_conn *t);

/* ---- the wire (the memory BIO: tls_bio.h) ------------------------------------------- */

/* What OpenSSL wrote goes on the socket now (queued when the socket is full). */
static int flush_wire(gw_tls_conn *t)
{
    gw_server *s = t->c->server;
    if (!s->tls_wire.len)
        return 0;
    uv_buf_t b = uv_buf_init(s->tls_wire.p, (unsigned)s->tls_wire.len);
    s->tls_wire.len = 0;
    int r = gw__client_write_wire(t->c, &b, 1);
    if (s->tls_wire.cap > TLS_WIRE_KEEP)
        gw_tls_buf_free(&s->tls_wire);
    return r;
}

/* ---- errors -------------------------------------------------------------------------- */

static enum gw_tls_event classify(int ssl_err)
{
    unsigned long e = ERR_peek_last_error();
    int reason = ERR_GET_REASON(e);
    if (ssl_err == SSL_ERROR_SYSCALL && !e)
        return GW_TLS_ERR_EOF;
    if (reason >= SSL_AD_REASON_OFFSET)
        return GW_TLS_ERR_ALERT; /* SSL_R_*_ALERT_*: the peer's fatal alert */
    switch (reason) {
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_VERSION_TOO_HIGH:
    case SSL_R_UNSUPPORTED_SSL_VERSION:
        return GW_TLS_ERR_VERSION;
    case SSL_R_NO_SHARED_CIPHER:
    case SSL_R_NO_SHARED_GROUPS:
    case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
    case SSL_R_NO_SHARED_SIGNATURE_ALGORITHMS:
    case SSL_R_NO_CIPHERS_AVAILABLE:
        return GW_TLS_ERR_CIPHER;
    case SSL_R_NO_APPLICATION_PROTOCOL:
        return GW_TLS_ERR_ALPN;
    case SSL_R_HTTP_REQUEST:
    case SSL_R_HTTPS_PROXY_REQUEST:
    case SSL_R_WRONG_VERSION_NUMBER:
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_RECORD_LENGTH_MISMATCH:
        return GW_TLS_ERR_NOT_TLS;
    case SSL_R_UNEXPECTED_EOF_WHILE_READING:
        return GW_TLS_ERR_EOF;
    }
    return GW_TLS_ERR_HANDSHAKE;
}

/* ---- connection ---------------------------------------------------------------------- */

gw_tls_conn *gw__tls_conn_new(gw_tls_ctx *x, gw_client *c)
{
    gw_tls_conn *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->c = c;
    t->ssl = SSL_new(gw__tls_ctx_default(x));
    t->io.out = &c->server->tls_wire;
    BIO *b = t->ssl ? gw_tls_bio_new(&t->io) : NULL;
    if (!b) {
        SSL_free(t->ssl);
        free(t);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_bio(t->ssl, b, b); /* one BIO both ways; the SSL owns it */
    SSL_set_accept_state(t->ssl);
    gw_tls_ctx_ref(x);
    t->ctx = x;
    return t;
}

void gw__tls_conn_free(gw_tls_conn *t)
{
    if (!t)
        return;
    SSL_free(t->ssl);
    ERR_clear_error();
    free(t->io.in);
    gw_tls_ctx_unref(t->ctx);
    free(t);
}

int gw__tls_alpn_h2(const gw_tls_conn *t)
{
    const unsigned char *p;
    unsigned n;
    SSL_get0_alpn_selected(t->ssl, &p, &n);
    return n == 2 && p[0] == 'h' && p[1] == '2';
}

int gw__tls_handshake_done(const gw_tls_conn *t)
{
    return (t->flags & T_HS_DONE) != 0;
}

static void tls_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    gw_client *c = h->data;
    gw_tls_conn *t = c->tls;
    (void)suggested;
    if (!t->io.in && !(t->io.in = malloc(TLS_IN_SIZE))) {
        *out = uv_buf_init(NULL, 0);
        return;
    }
    *out = uv_buf_init(t->io.in + t->io.in_len, TLS_IN_SIZE - t->io.in_len);
}

static void tls_on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    gw_client *c = st->data;
    gw_tls_conn *t = c->tls;
    (void)b;
    if (nread == 0) {
        if (t->io.in_len == 0) { /* EAGAIN: the buffer libuv asked for goes back */
            free(t->io.in);
            t->io.in = NULL;
        }
        return;
    }
    if (nread < 0) {
        if (!(t->flags & T_HS_DONE)) {
            t->flags |= T_FAILED;
            gw__client_tls_failed(c, GW_TLS_ERR_EOF);
            return;
        }
        gw__client_deliver(c, nread);
        return;
    }
    t->io.in_len += (uint32_t)nread;
    pump(t);
}

/* Reads the socket during the handshake, and after it while the framing wants bytes and
 * every ciphertext byte already read was taken: a framing that stops stops the socket. */
static void update_socket(gw_tls_conn *t)
{
    gw_client *c = t->c;
    if (c->state == CS_CLOSING)
        return;
    int want = !(t->flags & T_FAILED) &&
               (!(t->flags & T_HS_DONE) ||
                ((t->flags & T_WANT_READ) && t->io.in_off == t->io.in_len));
    if (want && !(t->flags & T_SOCK_READING)) {
        if (uv_read_start((uv_stream_t *)&c->tcp, tls_alloc, tls_on_read) == 0)
            t->flags |= T_SOCK_READING;
    } else if (!want && (t->flags & T_SOCK_READING)) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        t->flags &= ~T_SOCK_READING;
    }
}

/* Handshake, then decrypt into the framing while it wants bytes. Re-entry (the framing
 * asking to read again from inside a delivery) only asks the running pump for a pass. */
static void pump(gw_tls_conn *t)
{
    gw_client *c = t->c;
    if (t->flags & T_IN_PUMP) {
        t->flags |= T_REPUMP;
        return;
    }
    t->flags |= T_IN_PUMP;
    do {
        t->flags &= ~T_REPUMP;
        if (!(t->flags & T_HS_DONE)) {
            ERR_clear_error();
            int r = SSL_do_handshake(t->ssl);
            int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
            enum gw_tls_event ev = e == SSL_ERROR_NONE || e == SSL_ERROR_WANT_READ
                                       ? GW_TLS_HANDSHAKE : classify(e);
            ERR_clear_error();
            if (flush_wire(t) < 0 && e == SSL_ERROR_NONE) {
                e = SSL_ERROR_SYSCALL;
                ev = GW_TLS_ERR_EOF;
            }
            if (e == SSL_ERROR_WANT_READ)
                break;
            if (e != SSL_ERROR_NONE) {
                t->flags |= T_FAILED;
                gw__client_tls_failed(c, ev); /* the alert (if any) was flushed above */
                goto out;
            }
            t->flags |= T_HS_DONE;
            gw__client_tls_ready(c, SSL_session_reused(t->ssl) ? GW_TLS_RESUMED : GW_TLS_HANDSHAKE);
            if (c->state == CS_CLOSING)
                goto out;
        }
        while ((t->flags & T_WANT_READ) && !(t->flags & T_FAILED)) {
            uv_buf_t b;
            gw__client_alloc(c, &b);
            if (!b.base || b.len == 0)
                break;
            ERR_clear_error();
            int n = SSL_read(t->ssl, b.base, (int)b.len);
            int e = n > 0 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, n);
            ERR_clear_error();
            flush_wire(t); /* post-handshake messages (key updates) */
            if (n > 0) {
                gw__client_deliver(c, n);
                if (c->state == CS_CLOSING)
                    goto out;
                continue;
            }
            if (e == SSL_ERROR_WANT_READ)
                break;
            t->flags |= T_FAILED;
            if (e == SSL_ERROR_ZERO_RETURN) {
                t->flags |= T_NOTIFY_SENT; /* the peer closed: no close_notify back */
                gw__client_deliver(c, UV_EOF);
            } else {
                gw__client_tls_event(c, GW_TLS_ERR_RECORD);
                gw__client_deliver(c, UV_EPROTO);
            }
            goto out;
        }
    } while (t->flags & T_REPUMP);
    /* what OpenSSL took is gone from t->io.in; an empty buffer goes back (idle memory) */
    if (t->io.in_off == t->io.in_len) {
        free(t->io.in);
        t->io.in = NULL;
        t->io.in_off = t->io.in_len = 0;
    } else if (t->io.in_off > 0) {
        memmove(t->io.in, t->io.in + t->io.in_off, t->io.in_len - t->io.in_off);
        t->io.in_len -= t->io.in_off;
        t->io.in_off = 0;
    }
    update_socket(t);
out:
    t->flags &= ~T_IN_PUMP;
}

int gw__tls_start(gw_client *c)
{
    update_socket(c->tls);
    return (c->tls->flags & T_SOCK_READING) ? 0 : GW_ECLOSED;
}

void gw__tls_read_start(gw_client *c)
{
    gw_tls_conn *t = c->tls;
    t->flags |= T_WANT_READ;
    if (t->flags & T_IN_PUMP) {
        t->flags |= T_REPUMP;
        return;
    }
    if ((t->flags & T_HS_DONE) && (t->io.in_off < t->io.in_len || SSL_has_pending(t->ssl))) {
        /* bytes wait already: decrypt them after this call returns, as libuv would */
        t->flags |= T_POSTED;
        gw__server_post(c->server, &c->post_node);
        return;
    }
    update_socket(t);
}

void gw__tls_read_stop(gw_client *c)
{
    gw_tls_conn *t = c->tls;
    t->flags &= ~T_WANT_READ;
    if (!(t->flags & T_IN_PUMP))
        update_socket(t);
}

int gw__tls_run_posted(gw_client *c)
{
    gw_tls_conn *t = c->tls;
    if (!t || !(t->flags & T_POSTED))
        return 0;
    t->flags &= ~T_POSTED;
    pump(t);
    return 1;
}

static int ssl_write_all(gw_tls_conn *t, const char *p, size_t n)
{
    if (n == 0)
        return 0;
    ERR_clear_error();
    int r = SSL_write(t->ssl, p, (int)n); /* the BIO takes everything: all or an error */
    ERR_clear_error();
    if (r <= 0) {
        t->flags |= T_FAILED;
        return GW_ECLOSED;
    }
    return 0;
}

int gw__tls_write(gw_client *c, uv_buf_t *bufs, unsigned n)
{
    gw_tls_conn *t = c->tls;
    gw_server *s = c->server;
    if (!(t->flags & T_HS_DONE) || (t->flags & T_FAILED))
        return GW_ECLOSED;
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    int r = 0;
    if (n > 1 && total <= TLS_COALESCE &&
        (s->tls_plain || (s->tls_plain = malloc(TLS_COALESCE)) != NULL)) {
        /* a head and a small body: one record, not two */
        size_t at = 0;
        for (unsigned i = 0; i < n; i++) {
            memcpy(s->tls_plain + at, bufs[i].base, bufs[i].len);
            at += bufs[i].len;
        }
        r = ssl_write_all(t, s->tls_plain, at);
    } else {
        for (unsigned i = 0; i < n && r == 0; i++)
            r = ssl_write_all(t, bufs[i].base, bufs[i].len);
    }
    int w = flush_wire(t);
    return r < 0 ? r : w;
}

void gw__tls_close_notify(gw_client *c)
{
    gw_tls_conn *t = c->tls;
    if (!t || !(t->flags & T_HS_DONE) || (t->flags & (T_NOTIFY_SENT | T_FAILED)))
        return;
    t->flags |= T_NOTIFY_SENT;
    ERR_clear_error();
    SSL_shutdown(t->ssl);
    ERR_clear_error();
    gw_server *s = c->server;
    if (s->tls_wire.len && c->pending_write == 0) {
        uv_buf_t b = uv_buf_init(s->tls_wire.p, (unsigned)s->tls_wire.len);
        (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1); /* best effort: never queued */
    }
    s->tls_wire.len = 0;
}
