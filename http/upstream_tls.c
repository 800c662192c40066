/* upstream_tls.c — see upstream_tls.h. */
#include "http/upstream_tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/gw_errors.h"
#include "http/stream_write.h"
#include "http/tls_bio.h"

#define UTLS_IN_SIZE (17 * 1024)

enum {
    UT_HS_DONE = 1 << 0,
    UT_WANT_READ = 1 << 1,   /* the connection wants plaintext */
    UT_READING = 1 << 2,     /* uv_read_start in effect */
    UT_IN_PUMP = 1 << 3,
    UT_REPUMP = 1 << 4,
    UT_FAILED = 1 << 5,
};

struct gw_utls {
    SSL *ssl;
    gw_utls_owner o;
    uv_timer_t kick;          /* delivers buffered plaintext after want_read(1) returned */
    void (*close_done)(void *owner);
    gw_tls_io io;             /* ciphertext in; records out into this thread's wire */
    unsigned flags;
};

/* Records OpenSSL wrote, flushed right after the call that produced them. */
static _Thread_local gw_tls_buf wire;

void gw__utls_thread_cleanup(void)
{
    gw_tls_buf_free(&wire);
}

/* The endpoint's slot, set as the SSL's app data while it may hand out sessions. */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    SSL_SESSION **slot = SSL_get_app_data(ssl);
    if (!slot)
        return 0;
    if (*slot)
        SSL_SESSION_free(*slot);
    *slot = sess; /* we keep OpenSSL's reference */
    return 1;
}

void gw__utls_session_free(SSL_SESSION **session)
{
    if (*session)
        SSL_SESSION_free(*session);
    *session = NULL;
}

SSL_CTX *gw__utls_ctx_new(const gw_upstream_conf *conf, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errlen, "upstreams.%s.tls: cannot create an SSL_CTX", conf->name);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    int ok = conf->tls_ca_file[0] ? SSL_CTX_load_verify_locations(ctx, conf->tls_ca_file, NULL)
                                  : SSL_CTX_set_default_verify_paths(ctx);
    if (!ok) {
        snprintf(err, errlen, "upstreams.%s.tls.ca_file: %s: no CA certificate could be loaded",
                 conf->name, conf->tls_ca_file[0] ? conf->tls_ca_file : "(system default)");
        ERR_clear_error();
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_verify(ctx, conf->tls_verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    /* resumption: the newest session per endpoint (new_session_cb), offered on connect */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn - 1);
    ERR_clear_error();
    return ctx;
}

void gw__utls_ctx_free(SSL_CTX *ctx)
{
    SSL_CTX_free(ctx);
}

static int flush_wire(gw_utls *t)
{
    if (!wire.len)
        return 0;
    uv_buf_t b = uv_buf_init(wire.p, (unsigned)wire.len);
    wire.len = 0;
    int r = gw_stream_write(t->o.stream, t->o.pending_write, &b, 1, t->o.on_write);
    if (r == 0 && *t->o.pending_write && t->o.queued)
        t->o.queued(t->o.owner); /* records of its own (a KeyUpdate answer) too */
    return r;
}

static void update_socket(gw_utls *t);

static void pump(gw_utls *t)
{
    if (t->flags & UT_IN_PUMP) {
        t->flags |= UT_REPUMP;
        return;
    }
    t->flags |= UT_IN_PUMP;
    do {
        t->flags &= ~UT_REPUMP;
        if (!(t->flags & UT_HS_DONE)) {
            ERR_clear_error();
            int r = SSL_do_handshake(t->ssl);
            int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
            ERR_clear_error();
            int w = flush_wire(t);
            if (e == SSL_ERROR_WANT_READ && w == 0)
                break;
            if (e != SSL_ERROR_NONE || w < 0) {
                t->flags |= UT_FAILED;
                t->o.failed(t->o.owner, GW_ECONNECT); /* certificate, name, protocol, ... */
                goto out;
            }
            t->flags |= UT_HS_DONE;
            t->o.ready(t->o.owner);
            if (t->o.gone(t->o.owner))
                goto out;
        }
        while ((t->flags & UT_WANT_READ) && !(t->flags & UT_FAILED)) {
            uv_buf_t b;
            t->o.alloc(t->o.owner, &b);
            if (!b.base || b.len == 0)
                break;
            gw_tls_err_clear();
            int n = SSL_read(t->ssl, b.base, (int)b.len);
            int e = n > 0 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, n);
            gw_tls_err_clear();
            flush_wire(t);
            if (n > 0) {
                t->o.deliver(t->o.owner, n);
                if (t->o.gone(t->o.owner))
                    goto out;
                continue;
            }
            if (e == SSL_ERROR_WANT_READ)
                break;
            t->flags |= UT_FAILED;
            t->o.deliver(t->o.owner, e == SSL_ERROR_ZERO_RETURN ? UV_EOF : UV_EPROTO);
            goto out;
        }
    } while (t->flags & UT_REPUMP);
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
    t->flags &= ~UT_IN_PUMP;
}

void gw__utls_sock_alloc(gw_utls *t, uv_buf_t *out)
{
    if (!t->io.in && !(t->io.in = malloc(UTLS_IN_SIZE))) {
        *out = uv_buf_init(NULL, 0);
        return;
    }
    *out = uv_buf_init(t->io.in + t->io.in_len, UTLS_IN_SIZE - t->io.in_len);
}

void gw__utls_sock_read(gw_utls *t, ssize_t nread)
{
    if (nread == 0) {
        if (t->io.in_len == 0) {
            free(t->io.in);
            t->io.in = NULL;
        }
        return;
    }
    if (nread < 0) {
        t->flags |= UT_FAILED;
        if (!(t->flags & UT_HS_DONE))
            t->o.failed(t->o.owner, GW_ECONNECT);
        else
            t->o.deliver(t->o.owner, nread);
        return;
    }
    t->io.in_len += (uint32_t)nread;
    pump(t);
}

static void update_socket(gw_utls *t)
{
    if (t->o.gone(t->o.owner))
        return;
    int want = !(t->flags & UT_FAILED) &&
               (!(t->flags & UT_HS_DONE) || ((t->flags & UT_WANT_READ) && t->io.in_off == t->io.in_len));
    if (want && !(t->flags & UT_READING)) {
        if (uv_read_start(t->o.stream, t->o.sock_alloc, t->o.sock_read) == 0)
            t->flags |= UT_READING;
    } else if (!want && (t->flags & UT_READING)) {
        uv_read_stop(t->o.stream);
        t->flags &= ~UT_READING;
    }
}

/* The endpoint's host part when it is a name ("svc.internal:443" -> "svc.internal"). */
static void endpoint_host(const char *address, char *out, size_t outlen)
{
    const char *colon = strrchr(address, ':');
    size_t n = colon ? (size_t)(colon - address) : strlen(address);
    if (n && address[0] == '[') { /* [v6]:port */
        address++;
        n -= 2;
    }
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, address, n);
    out[n] = '\0';
}

gw_utls *gw__utls_start(SSL_CTX *ctx, const gw_upstream_conf *conf, const gw_endpoint_conf *ep,
                        const gw_utls_owner *owner, SSL_SESSION **session)
{
    gw_utls *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->o = *owner;
    t->ssl = SSL_new(ctx);
    t->io.out = &wire; /* this thread's: a connection lives on one loop */
    BIO *b = t->ssl ? gw_tls_bio_new(&t->io) : NULL;
    if (!b) {
        SSL_free(t->ssl);
        free(t);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_bio(t->ssl, b, b);
    SSL_set_connect_state(t->ssl);
    SSL_set_app_data(t->ssl, session);
    if (session && *session)
        SSL_set_session(t->ssl, *session); /* a stale one just means a full handshake */
    uv_timer_init(owner->loop, &t->kick);
    t->kick.data = t;
    char name[256];
    if (conf->tls_server_name[0])
        snprintf(name, sizeof name, "%s", conf->tls_server_name);
    else if (conf->host[0])
        endpoint_host(conf->host, name, sizeof name); /* Host may carry a port */
    else
        endpoint_host(ep->address, name, sizeof name);
    unsigned char ip[16];
    int is_ip = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
    if (!is_ip)
        SSL_set_tlsext_host_name(t->ssl, name); /* SNI carries names only (RFC 6066) */
    if (conf->tls_verify) {
        if (is_ip)
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), name);
        else
            SSL_set1_host(t->ssl, name);
    }
    ERR_clear_error();
    return t;
}

void gw__utls_begin(gw_utls *t)
{
    pump(t); /* the ClientHello; ready or failed may be called from here */
}

int gw__utls_resumed(const gw_utls *t)
{
    return SSL_session_reused(t->ssl);
}

static void on_kick_closed(uv_handle_t *h)
{
    gw_utls *t = h->data;
    void (*done)(void *) = t->close_done;
    void *owner = t->o.owner;
    SSL_free(t->ssl);
    ERR_clear_error();
    free(t->io.in);
    free(t);
    if (done)
        done(owner);
}

void gw__utls_close(gw_utls *t, void (*done)(void *owner))
{
    /* close_notify when the connection is fine and nothing is queued (best effort, never
     * queued): without it OpenSSL marks the session not resumable when the SSL is freed */
    if ((t->flags & (UT_HS_DONE | UT_FAILED)) == UT_HS_DONE && *t->o.pending_write == 0) {
        ERR_clear_error();
        SSL_shutdown(t->ssl);
        ERR_clear_error();
        if (wire.len) {
            uv_buf_t b = uv_buf_init(wire.p, (unsigned)wire.len);
            (void)uv_try_write(t->o.stream, &b, 1);
        }
        wire.len = 0;
    }
    t->flags |= UT_FAILED;
    t->close_done = done;
    uv_close((uv_handle_t *)&t->kick, on_kick_closed);
}

static void on_kick(uv_timer_t *h)
{
    gw_utls *t = h->data;
    if (!t->o.gone(t->o.owner))
        pump(t);
}

void gw__utls_want_read(gw_utls *t, int want)
{
    if (want)
        t->flags |= UT_WANT_READ;
    else
        t->flags &= ~UT_WANT_READ;
    if (t->flags & UT_IN_PUMP) {
        t->flags |= UT_REPUMP;
        return;
    }
    if (want && (t->flags & UT_HS_DONE) && (t->io.in_off < t->io.in_len || SSL_has_pending(t->ssl))) {
        uv_timer_start(&t->kick, on_kick, 0, 0); /* bytes wait already: after this returns */
        return;
    }
    update_socket(t);
}

int gw__utls_write(gw_utls *t, uv_buf_t *bufs, unsigned n)
{
    if (!(t->flags & UT_HS_DONE) || (t->flags & UT_FAILED))
        return GW_ECLOSED;
    for (unsigned i = 0; i < n; i++) {
        if (!bufs[i].len)
            continue;
        gw_tls_err_clear();
        int r = SSL_write(t->ssl, bufs[i].base, (int)bufs[i].len);
        gw_tls_err_clear();
        if (r <= 0) {
            t->flags |= UT_FAILED;
            wire.len = 0;
            return GW_ERESET;
        }
    }
    return flush_wire(t);
}
