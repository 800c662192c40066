/* tls.c — the TLS transport of a server connection (tls_transport.h): OpenSSL over a
 * memory BIO on the connection's loop. OpenSSL never touches the socket: libuv reads
 * ciphertext into t->io.in, the BIO hands it to OpenSSL, and what OpenSSL writes lands in the
 * server's scratch buffer, which goes out like any other write (stream_write.h) right after
 * the OpenSSL call that produced it. Nothing blocks: a handshake or a read that needs more
 * bytes returns WANT_READ and resumes when they arrive.
 *
 * Once the handshake is done, a connection whose cipher is an AEAD tls_record.c runs (TLS 1.3
 * or 1.2) runs its records itself and frees the SSL: an idle connection then holds ~0.3 KiB
 * of TLS state instead of ~14 KiB (docs/performance.md). TLS 1.3: the traffic secrets come
 * from OpenSSL's key log callback, and the write sequence number starts after the session
 * tickets the finishing handshake call wrote (counted, the last one opened under the new
 * key). TLS 1.2: the keys are derived from the session's master secret; both sequence
 * numbers start at 1 (the Finished messages). Other ciphers (CBC, CCM) keep OpenSSL's. */
#include "http/tls_transport.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdlib.h>
#include <string.h>

#include "http/client_int.h"
#include "http/gw_errors.h"
#include "http/tls_bio.h"
#include "http/tls_record.h"

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
    T_OWN = 1 << 8,          /* the records run here (t->rec), t->ssl is freed */
    T_ALPN_H2 = 1 << 9,      /* ALPN selected "h2" */
    T_GOT_CTS = 1 << 10,     /* the key log gave the client's application traffic secret */
    T_GOT_STS = 1 << 11,     /* ... and the server's */
    T_PEER_CLOSED = 1 << 12, /* the client's close_notify came: nothing more is read; what we
                                still write goes out, then our close_notify (RFC 8446 §6.1) */
    T_PEER_HALF = 1 << 13,   /* ... in TLS 1.3, where it closes the client's direction only */
    T_EOF_DUE = 1 << 14,     /* the framing is to be told UV_EOF (T_PEER_CLOSED) */
    T_KU_OWED = 1 << 15,     /* T_OWN, TLS 1.3: the client asked for our KeyUpdate */
};

#define TLS_MAX_KEY_UPDATES 32 /* KeyUpdates in a row with no data between (BoringSSL's cap) */

#define TLS_MAX_WARNINGS 5      /* TLS 1.2 warning alerts in a row (OpenSSL's cap) */
#define TLS_MAX_EMPTY 32        /* empty data records in a row (OpenSSL's cap) */

/* The alerts this side sends or reads (RFC 8446 §6, RFC 5246 §7.2) */
enum { AL_CLOSE_NOTIFY = 0, AL_UNEXPECTED_MESSAGE = 10, AL_BAD_RECORD_MAC = 20,
       AL_RECORD_OVERFLOW = 22, AL_HANDSHAKE_FAILURE = 40, AL_ILLEGAL_PARAMETER = 47,
       AL_DECODE_ERROR = 50, AL_PROTOCOL_VERSION = 70, AL_INTERNAL_ERROR = 80,
       AL_USER_CANCELED = 90 };

struct gw_tls_conn {
    SSL *ssl;
    gw_tls_ctx *ctx;          /* the snapshot pinned at accept */
    gw_client *c;
    gw_tls_io io;             /* ciphertext in; records out into the server's tls_wire */
    unsigned flags;
    uint32_t pt_off, pt_end;  /* T_OWN: a record's plaintext opened in io.in, undelivered */
    uint8_t secret_len;       /* of the secrets the key log gave (in rec, until T_OWN) */
    uint8_t sid_len;          /* T_OWN, TLS 1.2: the session's id, forgotten on a failure */
    uint8_t hs_len;           /* T_OWN, TLS 1.3: bytes of a KeyUpdate split across records */
    uint8_t hs_buf[4];
    uint8_t ku_in_a_row;      /* the client's KeyUpdates since its last data */
    uint8_t warn_in_a_row;    /* ... TLS 1.2 warning alerts */
    uint8_t empty_in_a_row;   /* ... empty data records */
    unsigned char sid[SSL_MAX_SSL_SESSION_ID_LENGTH];
    const void *sess;         /* the cached session sid names (a token, never read) */
    gw_tls_rec rec;             /* T_OWN: keys and sequence numbers */
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

/* ---- records after the handshake (tls_record.h) ---------------------------------------- */

static int hexval(char ch)
{
    return ch >= '0' && ch <= '9' ? ch - '0'
           : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
           : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 : -1;
}

/* SSL_CTX_set_keylog_callback (tls_ctx.c): "LABEL <client random> <secret>" in hex. Only
 * the two application traffic secrets are kept, in t->rec until the handshake is done. */
void gw__tls_keylog(const SSL *ssl, const char *line)
{
    gw_tls_conn *t = SSL_get_app_data(ssl);
    unsigned char *out;
    unsigned bit;
    if (!t)
        return;
    if (strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0) {
        out = t->rec.rd.secret;
        bit = T_GOT_CTS;
    } else if (strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) == 0) {
        out = t->rec.wr.secret;
        bit = T_GOT_STS;
    } else {
        return;
    }
    const char *p = strchr(line + 24, ' ');
    if (!p)
        return;
    size_t n = 0;
    for (p++; p[0] && p[1] && n < sizeof t->rec.rd.secret; p += 2) {
        int hi = hexval(p[0]), lo = hexval(p[1]);
        if (hi < 0 || lo < 0)
            return;
        out[n++] = (unsigned char)(hi << 4 | lo);
    }
    if (*p || (t->secret_len && t->secret_len != n))
        return;
    t->secret_len = (uint8_t)n;
    t->flags |= bit;
}

/* The handshake is done: a connection whose cipher tls_record.c runs takes its records
 * over and frees the SSL. W[0..N) is what the finishing SSL_do_handshake wrote. TLS 1.3: the
 * session tickets, already under the server's application key, so the write sequence
 * number starts at their count (the last one is opened under it to be sure). TLS 1.2: after
 * a full handshake, the ticket, ChangeCipherSpec and Finished, the last one opened under the
 * new key at sequence 0. Otherwise, or when anything does not add up, OpenSSL keeps them. */
static void take_over(gw_tls_conn *t, const char *w, size_t n)
{
    const SSL_CIPHER *ci = SSL_get_current_cipher(t->ssl);
    const EVP_MD *md = ci ? SSL_CIPHER_get_handshake_digest(ci) : NULL;
    int cnid = ci ? SSL_CIPHER_get_cipher_nid(ci) : NID_undef;
    int mnid = md ? EVP_MD_get_type(md) : NID_undef;
    int version = SSL_version(t->ssl);
    size_t off = 0, last = 0;
    uint64_t records = 0;
    int r = -1;
    /* a negotiated max_fragment_length (RFC 6066 §4; rare, embedded clients) keeps OpenSSL,
     * which sizes its records to it */
    if ((version != TLS1_3_VERSION && version != TLS1_2_VERSION) || SSL_has_pending(t->ssl) ||
        !gw_tls_rec_supported(cnid, mnid) || !SSL_get_session(t->ssl) ||
        SSL_SESSION_get_max_fragment_length(SSL_get_session(t->ssl)) !=
            TLSEXT_max_fragment_length_DISABLED)
        goto keep;
    while (off + 5 <= n) {
        const unsigned char *h = (const unsigned char *)w + off;
        last = off;
        off += 5 + ((size_t)h[3] << 8 | h[4]);
        records++;
    }
    if (off != n)
        goto keep;
    if (version == TLS1_3_VERSION) {
        unsigned char cs[48], ss[48];
        if ((t->flags & (T_GOT_CTS | T_GOT_STS)) != (T_GOT_CTS | T_GOT_STS))
            goto keep;
        memcpy(cs, t->rec.rd.secret, t->secret_len);
        memcpy(ss, t->rec.wr.secret, t->secret_len);
        r = gw_tls_rec_init13(&t->rec, cnid, mnid, cs, ss, t->secret_len, 0, records);
        OPENSSL_cleanse(cs, sizeof cs);
        OPENSSL_cleanse(ss, sizeof ss);
        if (r == 0 && records &&
            !gw_tls_rec_check(&t->rec, &t->rec.wr, records - 1, w + last, n - last))
            r = -1;
    } else {
        unsigned char master[48], cr[32], sr[32];
        SSL_SESSION *sess = SSL_get_session(t->ssl);
        size_t ml = sess ? SSL_SESSION_get_master_key(sess, master, sizeof master) : 0;
        if (SSL_get_client_random(t->ssl, cr, 32) != 32 ||
            SSL_get_server_random(t->ssl, sr, 32) != 32)
            ml = 0;
        r = ml ? gw_tls_rec_init12(&t->rec, cnid, mnid, master, ml, cr, sr, 1, 1) : -1;
        OPENSSL_cleanse(master, sizeof master);
        /* a full handshake ends with our Finished, in this call; a resumed one began with it */
        if (r == 0 && records &&
            (w[last] != GW_TLS_CT_HANDSHAKE ||
             !gw_tls_rec_check(&t->rec, &t->rec.wr, 0, w + last, n - last)))
            r = -1;
    }
    if (r < 0)
        goto keep;
    /* the session-id cache's entry, when this connection's session is it (a ticket-resumed
     * session carries the id the client chose: another client's, maybe) */
    if (version == TLS1_2_VERSION && gw__tls_cache_holds(SSL_get_session(t->ssl))) {
        unsigned sl;
        const unsigned char *sid = SSL_SESSION_get_id(SSL_get_session(t->ssl), &sl);
        if (sl <= sizeof t->sid) {
            memcpy(t->sid, sid, sl);
            t->sid_len = (uint8_t)sl;
            t->sess = SSL_get_session(t->ssl);
        }
    }
    /* freed without a shutdown, OpenSSL would drop the session from the cache as if the
     * connection had failed: it has not (own_fail forgets it if it does) */
    SSL_set_shutdown(t->ssl, SSL_SENT_SHUTDOWN);
    SSL_free(t->ssl);
    t->ssl = NULL;
    t->flags |= T_OWN;
    return;
keep:
    gw_tls_rec_clear(&t->rec);
}

/* One record of TYPE holding BUFS into the wire buffer. 0 or -1. */
static int seal_into_wire(gw_tls_conn *t, uint8_t type, const uv_buf_t *bufs, unsigned n,
                          size_t total)
{
    gw_tls_buf *w = &t->c->server->tls_wire;
    if (gw_tls_buf_reserve(w, total + GW_TLS_REC_OVERHEAD) < 0)
        return -1;
    int l = gw_tls_rec_seal(&t->rec, type, bufs, n, total, w->p + w->len);
    if (l < 0)
        return -1;
    w->len += (size_t)l;
    return 0;
}

static int send_alert(gw_tls_conn *t, uint8_t desc)
{
    char a[2] = { desc == AL_CLOSE_NOTIFY || desc == AL_USER_CANCELED ? 1 : 2, (char)desc };
    uv_buf_t b = uv_buf_init(a, 2);
    return seal_into_wire(t, GW_TLS_CT_ALERT, &b, 1, 2);
}

/* TLS 1.3: our KeyUpdate(update_not_requested) under the current write key, and the next
 * key from then on (RFC 8446 §4.6.3). 0 or -1. */
static int own_key_update(gw_tls_conn *t)
{
    char ku[5] = { 24, 0, 0, 1, 0 };
    uv_buf_t b = uv_buf_init(ku, 5);
    t->flags &= ~T_KU_OWED;
    if (seal_into_wire(t, GW_TLS_CT_HANDSHAKE, &b, 1, 5) < 0 ||
        gw_tls_rec_next_key(&t->rec, &t->rec.wr) < 0)
        return -1;
    return 0;
}

/* Before a data record: the KeyUpdate the client asked for (one answers any number of
 * requests), or ours once the write key protected gw_tls_rec_rekey_at records. 0 or -1. */
static int own_key_update_due(gw_tls_conn *t)
{
    if ((t->flags & T_KU_OWED) || (t->rec.tls13 && t->rec.wr.seq >= gw_tls_rec_rekey_at))
        return own_key_update(t);
    return 0;
}

/* Plaintext into records of up to 2^14 bytes, each gathering as many pieces as fit. */
static int own_write(gw_tls_conn *t, const uv_buf_t *bufs, unsigned n)
{
    unsigned i = 0;
    size_t at = 0; /* into bufs[i] */
    for (;;) {
        uv_buf_t pc[16];
        unsigned np = 0;
        size_t total = 0;
        while (i < n && np < 16 && total < GW_TLS_REC_MAX_PLAIN) {
            size_t take = bufs[i].len - at;
            if (take > GW_TLS_REC_MAX_PLAIN - total)
                take = GW_TLS_REC_MAX_PLAIN - total;
            if (take)
                pc[np++] = uv_buf_init(bufs[i].base + at, (unsigned)take);
            total += take;
            at += take;
            if (at == bufs[i].len) {
                i++;
                at = 0;
            }
        }
        if (!total)
            return 0;
        if (own_key_update_due(t) < 0 || seal_into_wire(t, GW_TLS_CT_APPDATA, pc, np, total) < 0)
            return -1;
    }
}

/* RFC 5246 §7.2: a fatal alert sent or received, and the session is not resumed. */
static void forget_session(gw_tls_conn *t)
{
    if (t->sid_len)
        gw__tls_cache_forget(t->sid, t->sid_len, t->sess);
    t->sid_len = 0;
}

/* T_OWN: a fatal error in the client's records: an alert, the framing told. Returns 1. */
static int own_fail(gw_tls_conn *t, uint8_t alert)
{
    t->flags |= T_FAILED | T_NOTIFY_SENT;
    forget_session(t);
    if (alert != AL_CLOSE_NOTIFY && send_alert(t, alert) == 0)
        flush_wire(t);
    gw__client_tls_event(t->c, GW_TLS_ERR_RECORD);
    gw__client_deliver(t->c, UV_EPROTO);
    return 1;
}

/* What a record's header may say after the handshake: TLS 1.3 protects everything as
 * application data; TLS 1.2 names the type (a ChangeCipherSpec now is unexpected). */
static int record_type_ok(const gw_tls_conn *t, uint8_t type)
{
    return t->rec.tls13 ? type == GW_TLS_CT_APPDATA
                        : type == GW_TLS_CT_APPDATA || type == GW_TLS_CT_ALERT ||
                              type == GW_TLS_CT_HANDSHAKE;
}

static size_t max_cipher(const gw_tls_conn *t)
{
    return t->rec.tls13 ? GW_TLS_REC_MAX_CIPHER13 : GW_TLS_REC_MAX_CIPHER12;
}

/* T_OWN: something to do without reading the socket: plaintext waiting, or a whole record
 * (or a header bad enough to fail on) in io.in. */
static int own_ready(const gw_tls_conn *t)
{
    if (t->pt_off < t->pt_end)
        return 1;
    uint32_t avail = t->io.in_len - t->io.in_off;
    if (avail < 5)
        return 0;
    const unsigned char *h = (const unsigned char *)t->io.in + t->io.in_off;
    size_t len = (size_t)h[3] << 8 | h[4];
    return !record_type_ok(t, h[0]) || len > max_cipher(t) || avail >= 5 + len;
}

/* T_OWN, TLS 1.3: a handshake record's P (N bytes). The only message a client may send
 * now is KeyUpdate (§4.6.3), which may be split across records but must end one (§5.1);
 * at most 4 bytes are carried to the next record. Returns -1 when taken, else the alert. */
static int own_handshake(gw_tls_conn *t, const unsigned char *p, size_t n)
{
    unsigned char m[5];
    size_t have = t->hs_len;
    if (n == 0) /* zero-length handshake fragments are not allowed (§5.1) */
        return AL_UNEXPECTED_MESSAGE;
    memcpy(m, t->hs_buf, have);
    for (size_t i = 0; i < n; i++) {
        if (have == 5) /* anything after a KeyUpdate in its record */
            return AL_UNEXPECTED_MESSAGE;
        m[have++] = p[i];
        if (m[0] != 24) /* a NewSessionTicket, Finished, ... from a client */
            return AL_UNEXPECTED_MESSAGE;
        if (have == 4 && (m[1] || m[2] || m[3] != 1))
            return AL_DECODE_ERROR; /* a KeyUpdate's body is one byte */
    }
    if (have < 5) {
        memcpy(t->hs_buf, m, have);
        t->hs_len = (uint8_t)have;
        return -1;
    }
    t->hs_len = 0;
    if (m[4] > 1)
        return AL_ILLEGAL_PARAMETER;
    if (++t->ku_in_a_row > TLS_MAX_KEY_UPDATES)
        return AL_UNEXPECTED_MESSAGE; /* a flood: each costs a key derivation or two */
    /* the client's next records use its next key; asked to, ours follows before our next
     * data (one answer for any number of requests) */
    if (gw_tls_rec_next_key(&t->rec, &t->rec.rd) < 0)
        return AL_INTERNAL_ERROR;
    if (m[4] == 1)
        t->flags |= T_KU_OWED;
    return -1;
}

/* T_OWN: opens records and delivers their plaintext while the framing wants it; alerts and
 * KeyUpdate handled. 1 when the connection failed or is closing (stop), else 0. */
static int own_read(gw_tls_conn *t)
{
    gw_client *c = t->c;
    while ((t->flags & T_WANT_READ) && !(t->flags & (T_FAILED | T_PEER_CLOSED))) {
        if (t->pt_off < t->pt_end) {
            uv_buf_t b;
            gw__client_alloc(c, &b);
            if (!b.base || b.len == 0)
                return 0;
            uint32_t k = t->pt_end - t->pt_off;
            if (k > b.len)
                k = (uint32_t)b.len;
            memcpy(b.base, t->io.in + t->pt_off, k);
            t->pt_off += k;
            gw__client_deliver(c, (ssize_t)k);
            if (c->state == CS_CLOSING)
                return 1;
            continue;
        }
        t->pt_off = t->pt_end = 0;
        if (!own_ready(t))
            return 0;
        unsigned char *h = (unsigned char *)t->io.in + t->io.in_off;
        size_t len = (size_t)h[3] << 8 | h[4];
        uint8_t type;
        size_t po, pl;
        if (!record_type_ok(t, h[0])) /* e.g. a ChangeCipherSpec or TLS 1.3 plaintext now */
            return own_fail(t, AL_UNEXPECTED_MESSAGE);
        if (len > max_cipher(t))
            return own_fail(t, AL_RECORD_OVERFLOW);
        if (!t->rec.tls13 && (h[1] != 3 || h[2] != 3)) /* TLS 1.3 ignores it (§5.1) */
            return own_fail(t, AL_PROTOCOL_VERSION);
        int o = gw_tls_rec_open(&t->rec, (char *)h, 5 + len, &type, &po, &pl);
        if (o < 0)
            return own_fail(t, o == GW_TLS_REC_OVERFLOW  ? AL_RECORD_OVERFLOW
                               : o == GW_TLS_REC_NO_TYPE ? AL_UNEXPECTED_MESSAGE
                                                         : AL_BAD_RECORD_MAC);
        uint32_t at = t->io.in_off + (uint32_t)po;
        t->io.in_off += (uint32_t)(5 + len);
        const unsigned char *p = h + po;
        if (t->hs_len && type != GW_TLS_CT_HANDSHAKE) /* a split message interrupted (§5.1) */
            return own_fail(t, AL_UNEXPECTED_MESSAGE);
        if (type == GW_TLS_CT_APPDATA) {
            t->pt_off = at;
            t->pt_end = at + (uint32_t)pl;
            if (pl)
                t->ku_in_a_row = t->warn_in_a_row = t->empty_in_a_row = 0;
            else if (++t->empty_in_a_row > TLS_MAX_EMPTY) /* records that cost, carry nothing */
                return own_fail(t, AL_UNEXPECTED_MESSAGE);
        } else if (type == GW_TLS_CT_ALERT) {
            if (pl != 2)
                return own_fail(t, AL_DECODE_ERROR);
            if (!t->rec.tls13 && p[0] != 1 && p[0] != 2) /* neither warning nor fatal */
                return own_fail(t, AL_ILLEGAL_PARAMETER);
            /* TLS 1.3: user_canceled, at any level, changes nothing (§6.1); TLS 1.2: a
             * warning other than close_notify (a few in a row) */
            if (t->rec.tls13 ? p[1] == AL_USER_CANCELED : p[0] == 1 && p[1] != AL_CLOSE_NOTIFY) {
                if (!t->rec.tls13 && ++t->warn_in_a_row > TLS_MAX_WARNINGS)
                    return own_fail(t, AL_UNEXPECTED_MESSAGE);
                continue;
            }
            if (p[1] == AL_CLOSE_NOTIFY) { /* the framing hears UV_EOF (pump) */
                t->flags |= T_PEER_CLOSED | T_EOF_DUE | (t->rec.tls13 ? T_PEER_HALF : 0);
                return 0;
            }
            t->flags |= T_FAILED | T_NOTIFY_SENT; /* no alert back */
            forget_session(t);
            gw__client_tls_event(c, GW_TLS_ERR_RECORD);
            gw__client_deliver(c, UV_EPROTO);
            return 1;
        } else if (type == GW_TLS_CT_HANDSHAKE && t->rec.tls13) {
            int a = own_handshake(t, p, pl);
            if (a >= 0)
                return own_fail(t, (uint8_t)a);
        } else if (type == GW_TLS_CT_HANDSHAKE && pl && p[0] == 1) {
            /* TLS 1.2: a ClientHello, renegotiation: refused as OpenSSL did (RFC 5746) */
            return own_fail(t, AL_HANDSHAKE_FAILURE);
        } else {
            return own_fail(t, AL_UNEXPECTED_MESSAGE); /* any other handshake message */
        }
    }
    return 0;
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
    SSL_set_app_data(t->ssl, t); /* for the key log callback */
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
    gw_tls_rec_clear(&t->rec);
    free(t->io.in);
    gw_tls_ctx_unref(t->ctx);
    free(t);
}

int gw__tls_alpn_h2(const gw_tls_conn *t)
{
    return (t->flags & T_ALPN_H2) != 0;
}

int gw__tls_peer_half_closed(const gw_tls_conn *t)
{
    return (t->flags & T_PEER_HALF) != 0;
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
    int want = !(t->flags & (T_FAILED | T_PEER_CLOSED)) &&
               (!(t->flags & T_HS_DONE) ||
                ((t->flags & T_WANT_READ) &&
                 ((t->flags & T_OWN) ? !own_ready(t) : t->io.in_off == t->io.in_len)));
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
            size_t wire_at = c->server->tls_wire.len;
            ERR_clear_error();
            int r = SSL_do_handshake(t->ssl);
            int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, r);
            enum gw_tls_event ev = e == SSL_ERROR_NONE || e == SSL_ERROR_WANT_READ
                                       ? GW_TLS_HANDSHAKE : classify(e);
            ERR_clear_error();
            int resumed = 0;
            if (e == SSL_ERROR_NONE) {
                const unsigned char *ap;
                unsigned an;
                SSL_get0_alpn_selected(t->ssl, &ap, &an);
                if (an == 2 && ap[0] == 'h' && ap[1] == '2')
                    t->flags |= T_ALPN_H2;
                resumed = SSL_session_reused(t->ssl);
                take_over(t, c->server->tls_wire.p + wire_at, c->server->tls_wire.len - wire_at);
                ERR_clear_error();
            }
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
            gw__client_tls_ready(c, resumed ? GW_TLS_RESUMED : GW_TLS_HANDSHAKE);
            if (c->state == CS_CLOSING)
                goto out;
        }
        if ((t->flags & T_OWN) && own_read(t))
            goto out;
        if ((t->flags & T_KU_OWED) && !(t->flags & (T_FAILED | T_NOTIFY_SENT))) {
            /* asked for in what was just read: answered now, not only before our next data */
            if (own_key_update(t) < 0) {
                own_fail(t, AL_INTERNAL_ERROR);
                goto out;
            }
            flush_wire(t);
        }
        while (!(t->flags & T_OWN) && (t->flags & T_WANT_READ) &&
               !(t->flags & (T_FAILED | T_PEER_CLOSED))) {
            uv_buf_t b;
            gw__client_alloc(c, &b);
            if (!b.base || b.len == 0)
                break;
            gw_tls_err_clear();
            int n = SSL_read(t->ssl, b.base, (int)b.len);
            int e = n > 0 ? SSL_ERROR_NONE : SSL_get_error(t->ssl, n);
            gw_tls_err_clear();
            flush_wire(t); /* post-handshake messages (key updates) */
            if (n > 0) {
                gw__client_deliver(c, n);
                if (c->state == CS_CLOSING)
                    goto out;
                continue;
            }
            if (e == SSL_ERROR_WANT_READ)
                break;
            if (e == SSL_ERROR_ZERO_RETURN) { /* close_notify: we may still write */
                t->flags |= T_PEER_CLOSED | T_EOF_DUE |
                            (SSL_version(t->ssl) == TLS1_3_VERSION ? T_PEER_HALF : 0);
                break;
            }
            t->flags |= T_FAILED;
            gw__client_tls_event(c, GW_TLS_ERR_RECORD);
            gw__client_deliver(c, UV_EPROTO);
            goto out;
        }
        if ((t->flags & (T_EOF_DUE | T_WANT_READ)) == (T_EOF_DUE | T_WANT_READ)) {
            t->flags &= ~T_EOF_DUE;
            gw__client_deliver(c, UV_EOF);
            if (c->state == CS_CLOSING)
                goto out;
        }
    } while (t->flags & T_REPUMP);
    /* what OpenSSL took is gone from t->io.in; an empty buffer goes back (idle memory).
     * Plaintext waiting in it (T_OWN) stays where it is until delivered. */
    if (t->pt_off < t->pt_end) {
        /* nothing moves */
    } else if (t->io.in_off == t->io.in_len) {
        t->pt_off = t->pt_end = 0;
        free(t->io.in);
        t->io.in = NULL;
        t->io.in_off = t->io.in_len = 0;
    } else if (t->io.in_off > 0) {
        t->pt_off = t->pt_end = 0;
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
    if (t->flags & T_PEER_CLOSED) { /* as a socket after EOF: EOF again, posted (no loop) */
        t->flags |= T_EOF_DUE | T_POSTED;
        gw__server_post(c->server, &c->post_node);
        return;
    }
    if (t->flags & T_IN_PUMP) {
        t->flags |= T_REPUMP;
        return;
    }
    if ((t->flags & T_HS_DONE) &&
        ((t->flags & T_OWN) ? own_ready(t)
                            : t->io.in_off < t->io.in_len || SSL_has_pending(t->ssl))) {
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
    gw_tls_err_clear();
    int r = SSL_write(t->ssl, p, (int)n); /* the BIO takes everything: all or an error */
    gw_tls_err_clear();
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
    if (!(t->flags & T_HS_DONE) || (t->flags & (T_FAILED | T_NOTIFY_SENT)))
        return GW_ECLOSED; /* nothing goes after our close_notify (or an alert) */
    int r = 0;
    if (t->flags & T_OWN) {
        if (own_write(t, bufs, n) < 0) {
            t->flags |= T_FAILED;
            r = GW_ECLOSED;
        }
        int w = flush_wire(t);
        return r < 0 ? r : w;
    }
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
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
    if (t->flags & T_OWN) {
        send_alert(t, AL_CLOSE_NOTIFY);
    } else {
        ERR_clear_error();
        SSL_shutdown(t->ssl);
        ERR_clear_error();
    }
    gw_server *s = c->server;
    if (s->tls_wire.len && c->pending_write == 0) {
        uv_buf_t b = uv_buf_init(s->tls_wire.p, (unsigned)s->tls_wire.len);
        (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1); /* best effort: never queued */
    }
    s->tls_wire.len = 0;
}
