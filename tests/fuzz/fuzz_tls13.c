/* fuzz_tls13.c — the server's own record layer after the handshake (http/tls.c after
 * take_over, http/tls_record.c): TLS 1.3, and TLS 1.2 with an AEAD, driven through the real
 * server: one gw_server with a TLS listener on a libuv loop, kept across runs, the handler
 * of fuzz_server.h, and per input one loopback client that completes a real handshake with
 * OpenSSL (suite and version chosen by the input), takes the keys (TLS 1.3: the traffic
 * secrets from the client's key log; TLS 1.2: the session's master secret and the randoms),
 * frees its SSL and from then on plays the client's side with the same library code turned
 * round (a gw_tls_rec with its directions swapped: gw_tls_rec_seal under the client's key,
 * gw_tls_rec_open of what the server wrote).
 *
 * Input: byte 0 = flags: bits 0-1 suite (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305; 3:
 * AES-128-GCM resuming a session: another handshake, another ticket count), bits 2-3 mode,
 * bits 4-5 handler mode (fuzz_server.h), bit 6 end with a close_notify, bit 7 offer ALPN h2
 * (the server then speaks HTTP/2).
 *   mode 0 (raw, TLS 1.3): byte 1 = number of extra cut points (0-3), one byte per cut
 *     point, then bytes sent as they are (ciphertext: garbage records, bad headers, huge
 *     lengths), in pieces, each read by the server before the next is sent; a whole record
 *     among them must end the connection with the alert that fits.
 *   modes 1-3 (records; 1: TLS 1.3 without the raw op, 2: TLS 1.3, 3: TLS 1.2, where the
 *     record's type is its header's and there is no padding): ops, op = byte % 7:
 *     0 raw:       n (1 byte), n raw bytes
 *     1 record:    inner type, padding, length (2 bytes, big endian, capped at what is
 *                  left), that many plaintext bytes: sealed under the client's key
 *     2 keyupdate: the request byte: a KeyUpdate handshake record with that body
 *     3 flush:     k: the first (k + 1) / 256 of what is pending goes out now
 *     4 request:   a GET as one application data record
 *     5 alert:     level, description: an alert record
 *     6 hold:      from now on requests are held unanswered (the connection's buffer fills,
 *                  reading stops with plaintext waiting); again: the held ones are answered
 *                  ("/big" with 40 KiB: three records) and no more are held
 *   A handshake record that ends with a KeyUpdate (update_requested 0 or 1) switches the
 *   client's key after it, as a client's would.
 *
 * Invariants checked (a failure traps):
 *   - every record the server wrote after the handshake (up to a last one cut by the close)
 *     is application data on the wire and opens under the client's view of the server's
 *     keys, its KeyUpdates followed; its handshake messages are only NewSessionTicket and
 *     KeyUpdate(update_not_requested), whole inside one record; an alert is two bytes and
 *     the last record; HTTP/1.1 plaintext starts with a status line;
 *   - the server's alerts have the right level and are never internal_error; a
 *     conversation of well-formed requests and KeyUpdates (32 in a row at most) gets no
 *     record error at all;
 *   - every request the handler got ends exactly once (fuzz_server.h's handler);
 *   - the connection closes after the client's EOF, within a bound, and the server holds no
 *     connection afterwards; no leak (LeakSanitizer), no sanitizer report. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <signal.h>

#define FUZZ_DRIVER "fuzz_tls13"
#include "tests/fuzz/fuzz_server.h"
#include "http/tls.h"
#include "http/tls_record.h"

#define PENDING_CAP (256 * 1024)

static const char *SUITE_NAMES[] = { "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                     "TLS_CHACHA20_POLY1305_SHA256" };
static const unsigned SUITE_IDS[] = { 0x1301, 0x1302, 0x1303 };
static const char *SUITES12[] = { "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384",
                                  "ECDHE-ECDSA-CHACHA20-POLY1305" };

static struct {
    gw_tls_slot slot;
    SSL_CTX *cc[2][3][2];     /* TLS 1.3 / 1.2, per suite, without / with ALPN h2 */
    char dir[64], cert[128], key[128];
    unsigned char cts[48], sts[48]; /* the client's key log: application traffic secrets */
    size_t cts_len, sts_len;
    SSL_SESSION *sess[2];     /* an AES-128-GCM session to resume (suite value 3) */
    int tls12;                /* this input's connection is TLS 1.2 (mode 3) */
    int legal;                /* only well-formed requests, KeyUpdates (32 in a row at most),
                                 flushes and holds were sent: no record error is owed */
    int ku_run;
    struct {                  /* the client's handshake messages, split across records */
        uint8_t hdr[4], first;
        size_t hn, left;
    } hs;
    gw_tls_rec cv;              /* the client's view: rd = the server's key, wr = ours */
    char *pending;            /* bytes for the server, not sent yet */
    size_t pending_len;
    int hold;                 /* new requests are held, unanswered, until released */
    gw_request *held[MAX_DONE];
    int n_held;
    char *big;                /* the body of a held "/big" request's answer */
    int record_errors;        /* GW_TLS_ERR_RECORD events of this input */
    int server_alert;         /* the description of the server's last alert, or -1 */
} F;

static void on_tls_event(enum gw_tls_event ev, void *data)
{
    (void)data;
    if (ev == GW_TLS_ERR_RECORD)
        F.record_errors++;
}

/* ---- the handler: fuzz_server.h's, and held requests ---------------------------------- */

#define BIG_LEN (40 * 1024) /* three records */

/* While F.hold, a request is kept unanswered (its body unread): the connection keeps
 * reading until its buffer is full and stops (read_stop with plaintext still in the TLS
 * input buffer); released, it is answered, "/big" with three records. */
static void hold_request(gw_request *req)
{
    if (!F.hold || F.n_held == MAX_DONE) {
        h_request(req);
        return;
    }
    G.n_request++;
    req->data = calloc(1, sizeof(rstate));
    if (!req->data)
        abort();
    F.held[F.n_held++] = req;
}

static void release_held(void)
{
    while (F.n_held > 0) { /* popped first: an answer may abort the others (on_abort) */
        gw_request *req = F.held[--F.n_held];
        F.held[F.n_held] = NULL;
        free(req->data);
        req->data = NULL;
        G.n_answered++;
        if (req->path.n == 4 && memcmp(req->path.p, "/big", 4) == 0)
            gw_response_simple(req, 200, "text/plain", F.big, BIG_LEN, NULL);
        else
            gw_response_simple(req, 200, "text/plain", "held", 4, NULL);
    }
}

static void hold_abort(gw_request *req, int err)
{
    for (int i = 0; i < F.n_held; i++)
        if (F.held[i] == req) {
            F.held[i] = F.held[--F.n_held];
            F.held[F.n_held] = NULL;
        }
    h_abort(req, err);
}

static const gw_handler hold_handler = { hold_request, h_body, h_body_end, h_drain, hold_abort };

/* ---- set-up: a certificate, the TLS server, the client contexts ------------------------ */

static void cleanup_files(void)
{
    unlink(F.cert);
    unlink(F.key);
    rmdir(F.dir);
}

static void make_cert(void)
{
    snprintf(F.dir, sizeof F.dir, "/tmp/gw-fuzztls-XXXXXX");
    if (!mkdtemp(F.dir))
        abort();
    snprintf(F.cert, sizeof F.cert, "%s/cert.pem", F.dir);
    snprintf(F.key, sizeof F.key, "%s/key.pem", F.dir);
    atexit(cleanup_files);
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    if (!k || !x)
        abort();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 30L * 86400);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"localhost", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_set_pubkey(x, k);
    if (X509_sign(x, k, EVP_sha256()) <= 0)
        abort();
    FILE *f = fopen(F.cert, "w");
    if (!f || !PEM_write_X509(f, x))
        abort();
    fclose(f);
    f = fopen(F.key, "w");
    if (!f || !PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL))
        abort();
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(k);
}

static int hexval(char ch)
{
    return ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* The client's key log: its two application traffic secrets. */
static void client_keylog(const SSL *ssl, const char *line)
{
    unsigned char *out;
    size_t *len;
    (void)ssl;
    if (strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0) {
        out = F.cts;
        len = &F.cts_len;
    } else if (strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) == 0) {
        out = F.sts;
        len = &F.sts_len;
    } else {
        return;
    }
    const char *p = strchr(line + 24, ' ');
    size_t n = 0;
    for (p = p ? p + 1 : ""; p[0] && p[1] && n < 48; p += 2)
        out[n++] = (unsigned char)(hexval(p[0]) << 4 | hexval(p[1]));
    *len = n;
}

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    make_cert();
    G.resp = malloc(RESP_CAP);
    F.pending = malloc(PENDING_CAP);
    F.big = malloc(BIG_LEN);
    if (!G.resp || !F.pending || !F.big || uv_loop_init(&G.loop) != 0)
        abort();
    memset(F.big, 'b', BIG_LEN);
    static gw_tls_conf conf; /* ~9 KB */
    snprintf(conf.certs[0].cert, sizeof conf.certs[0].cert, "%s", F.cert);
    snprintf(conf.certs[0].key, sizeof conf.certs[0].key, "%s", F.key);
    conf.n_certs = 1;
    conf.protocols = GW_TLS_V12 | GW_TLS_V13;
    memcpy(conf.alpn, "\x02h2\x08http/1.1", 12);
    conf.alpn_len = 12;
    char err[256] = "";
    gw_tls_ctx *x = gw_tls_ctx_new(&conf, err, sizeof err);
    if (!x) {
        fprintf(stderr, "%s: %s\n", FUZZ_DRIVER, err);
        abort();
    }
    gw_tls_slot_init(&F.slot, x);
    gw_server_opts o = {
        .limits = { .max_uri_bytes = 1024, .max_header_bytes = 4096, .max_headers = 32,
                    .max_body_bytes = 4096, .header_timeout_ms = 2000, .body_timeout_ms = 2000,
                    .idle_timeout_ms = 2000, .send_timeout_ms = 2000, .read_buffer_bytes = 8192 },
        .gateway_headers = 1,
        .on_request_done = on_done,
        .tls = &F.slot,
        .on_tls_event = on_tls_event,
        .h2 = { .max_concurrent_streams = 16, .stream_window = 4096, .connection_window = 65535,
                .reset_burst = 50, .reset_rate = 10 },
    };
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    if (gw_server_init(&G.s, &G.loop, (struct sockaddr *)&a, &o, &hold_handler) != 0)
        abort();
    for (int v = 0; v < 2; v++)
        for (int i = 0; i < 3; i++)
            for (int h = 0; h < 2; h++) {
                SSL_CTX *cc = SSL_CTX_new(TLS_client_method());
                int ver = v ? TLS1_2_VERSION : TLS1_3_VERSION;
                if (!cc || !SSL_CTX_set_min_proto_version(cc, ver) ||
                    !SSL_CTX_set_max_proto_version(cc, ver) ||
                    !(v ? SSL_CTX_set_cipher_list(cc, SUITES12[i])
                        : SSL_CTX_set_ciphersuites(cc, SUITE_NAMES[i])) ||
                    (h && SSL_CTX_set_alpn_protos(cc, (const unsigned char *)"\x02h2", 3) != 0))
                    abort();
                SSL_CTX_set_keylog_callback(cc, client_keylog);
                F.cc[v][i][h] = cc;
            }
}

/* ---- the client ------------------------------------------------------------------------ */

/* A TLS 1.3 handshake on a new loopback connection; the client's view of the keys in F.cv.
 * The socket (non-blocking), or -1 when the handshake did not complete. */
static int handshake(int suite, int h2, int resume)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_port = htons((uint16_t)gw_server_port(G.s)) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS))
        abort();
    SSL *ssl = SSL_new(F.cc[F.tls12][suite][h2]);
    if (!ssl || !SSL_set_fd(ssl, fd))
        abort();
    SSL_set_connect_state(ssl);
    SSL_set_tlsext_host_name(ssl, "localhost");
    SSL_SESSION *sess = F.sess[F.tls12];
    if (resume && sess && !SSL_set_session(ssl, sess))
        abort();
    F.cts_len = F.sts_len = 0;
    uint64_t end = fuzz_now_ms() + 5000;
    int r, e;
    while ((r = SSL_do_handshake(ssl)) != 1) {
        e = SSL_get_error(ssl, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
            die("the handshake failed");
        if (fuzz_now_ms() > end)
            die("no handshake within 5 s");
        turn(fd, 5);
    }
    const SSL_CIPHER *ci = SSL_get_current_cipher(ssl);
    if (F.tls12 ? SSL_version(ssl) != TLS1_2_VERSION || strcmp(SSL_CIPHER_get_name(ci), SUITES12[suite])
                : SSL_version(ssl) != TLS1_3_VERSION || SSL_CIPHER_get_protocol_id(ci) != SUITE_IDS[suite])
        die("not the protocol and suite asked for");
    int cnid = SSL_CIPHER_get_cipher_nid(ci);
    int mnid = EVP_MD_get_type(SSL_CIPHER_get_handshake_digest(ci));
    if (resume && sess && !SSL_session_reused(ssl))
        die("the session was not resumed");
    /* SSL_do_handshake returned after writing Finished and read nothing after the server's
     * Finished: the session tickets are still in the socket, the first records under the
     * server's application key. (Marked shut down: else SSL_free makes the session it
     * resumed unresumable.) */
    SSL_set_shutdown(ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    /* the server's view, then turned round: the client reads with the server's key.
     * TLS 1.2: each side's Finished was record 0 under the new keys */
    if (F.tls12) {
        unsigned char master[48], cr[32], sr[32];
        size_t ml = SSL_SESSION_get_master_key(SSL_get_session(ssl), master, sizeof master);
        if (SSL_get_client_random(ssl, cr, 32) != 32 || SSL_get_server_random(ssl, sr, 32) != 32 ||
            gw_tls_rec_init12(&F.cv, cnid, mnid, master, ml, cr, sr, 1, 1) < 0)
            die("no TLS 1.2 keys from the client's session");
    } else if (F.cts_len == 0 || F.cts_len != F.sts_len ||
               gw_tls_rec_init13(&F.cv, cnid, mnid, F.cts, F.sts, F.cts_len, 0, 0) < 0) {
        die("no application traffic secrets in the client's key log");
    }
    SSL_free(ssl);
    ERR_clear_error();
    gw_tls_rec_dir d = F.cv.rd;
    F.cv.rd = F.cv.wr;
    F.cv.wr = d;
    return fd;
}

static void pend(const void *p, size_t n)
{
    if (n > PENDING_CAP - F.pending_len) {
        n = PENDING_CAP - F.pending_len;
        F.legal = 0; /* a record cut */
    }
    memcpy(F.pending + F.pending_len, p, n);
    F.pending_len += n;
}

/* Follows the client's handshake messages (they may be split across records and several
 * share one): 1 when a KeyUpdate (update_requested 0 or 1) ends exactly with P[0..N). */
static int ends_key_update(const uint8_t *p, size_t n)
{
    int ku = 0;
    for (size_t i = 0; i < n; i++) {
        if (F.hs.hn < 4) {
            F.hs.hdr[F.hs.hn++] = p[i];
            if (F.hs.hn == 4) {
                F.hs.left = (size_t)F.hs.hdr[1] << 16 | (size_t)F.hs.hdr[2] << 8 | F.hs.hdr[3];
                if (F.hs.left == 0)
                    F.hs.hn = 0;
            }
            continue;
        }
        if (F.hs.hdr[1] == 0 && F.hs.hdr[2] == 0 && F.hs.hdr[3] == F.hs.left)
            F.hs.first = p[i];
        if (--F.hs.left == 0) {
            ku = i == n - 1 && F.hs.hdr[0] == 24 && F.hs.hdr[1] == 0 && F.hs.hdr[2] == 0 &&
                 F.hs.hdr[3] == 1 && F.hs.first <= 1;
            F.hs.hn = 0;
        }
    }
    return ku;
}

/* One record of TYPE holding P[0..N) and PAD zeros of padding, sealed under the client's
 * key (padding: the type goes in as a plaintext byte, followed by zeros, and the record's
 * last byte, its "type", is then a zero too). A KeyUpdate ending the record switches keys. */
static void pend_record(uint8_t type, const uint8_t *p, size_t n, size_t pad)
{
    static const char zeros[256];
    char out[GW_TLS_REC_MAX_PLAIN + GW_TLS_REC_OVERHEAD];
    if (pad > sizeof zeros || F.tls12)
        pad = F.tls12 ? 0 : sizeof zeros; /* TLS 1.2 has no padding */
    if (n + pad > GW_TLS_REC_MAX_PLAIN)
        n = GW_TLS_REC_MAX_PLAIN - pad;
    uv_buf_t b[3] = { uv_buf_init((char *)p, (unsigned)n), uv_buf_init((char *)&type, 1),
                      uv_buf_init((char *)zeros, pad ? (unsigned)pad - 1 : 0) };
    int l = pad ? gw_tls_rec_seal(&F.cv, 0, b, 3, n + pad, out)
                : gw_tls_rec_seal(&F.cv, type, b, 1, n, out);
    if (l < 0)
        die("gw_tls_rec_seal failed on the client's side");
    pend(out, (size_t)l);
    if (!F.tls12 && type == GW_TLS_CT_HANDSHAKE && ends_key_update(p, n) &&
        gw_tls_rec_next_key(&F.cv, &F.cv.wr) < 0)
        die("gw_tls_rec_next_key failed on the client's side");
}

/* Sends the first N pending bytes, the server reading them before anything else is sent. */
static void flush_pending(int fd, size_t n)
{
    if (n > F.pending_len)
        n = F.pending_len;
    cli_send(fd, (const uint8_t *)F.pending, n);
    memmove(F.pending, F.pending + n, F.pending_len - n);
    F.pending_len -= n;
    for (int k = 0; k < 3; k++)
        turn(fd, 0);
    cli_read(fd);
}

/* A session to resume: a full handshake whose tickets the client's SSL reads. */
static void fetch_session(int v)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = { .sin_family = AF_INET,
                             .sin_port = htons((uint16_t)gw_server_port(G.s)) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS))
        abort();
    SSL *ssl = SSL_new(F.cc[v][0][0]);
    if (!ssl || !SSL_set_fd(ssl, fd))
        abort();
    SSL_set_connect_state(ssl);
    SSL_set_tlsext_host_name(ssl, "localhost");
    uint64_t end = fuzz_now_ms() + 5000;
    char b[16];
    while (!SSL_is_init_finished(ssl) || !SSL_get0_session(ssl) ||
           !SSL_SESSION_is_resumable(SSL_get0_session(ssl))) {
        int r = SSL_read(ssl, b, sizeof b), e = SSL_get_error(ssl, r);
        if ((e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) || fuzz_now_ms() > end)
            die("no session ticket to resume");
        turn(fd, 5);
    }
    F.sess[v] = SSL_get1_session(ssl);
    SSL_shutdown(ssl); /* freed without it, OpenSSL marks the session not resumable */
    SSL_free(ssl);
    ERR_clear_error();
    close(fd);
    end = fuzz_now_ms() + 5000;
    while (gw_server_active(G.s) > 0 && fuzz_now_ms() < end)
        turn(-1, 10);
}

/* ---- the client's view of what the server wrote ---------------------------------------- */

static void check_server_records(int h2)
{
    unsigned char *p = (unsigned char *)G.resp, *end = p + G.resp_len;
    int alert = 0;
    size_t app = 0;
    F.server_alert = -1;
    while (end - p >= 5) {
        size_t len = (size_t)p[3] << 8 | p[4];
        if ((size_t)(end - p) < 5 + len)
            break; /* cut by the close */
        if (alert)
            die("a record after the server's alert");
        if ((F.tls12 ? p[0] != GW_TLS_CT_APPDATA && p[0] != GW_TLS_CT_ALERT
                     : p[0] != GW_TLS_CT_APPDATA) || p[1] != 3 || p[2] != 3)
            die("a record header the server should not write after the handshake");
        if (len > GW_TLS_REC_MAX_CIPHER13)
            die("a record longer than 2^14 + 256");
        uint8_t type;
        size_t po, pl;
        if (gw_tls_rec_open(&F.cv, (char *)p, 5 + len, &type, &po, &pl) < 0)
            die("a record the client cannot open");
        const unsigned char *q = p + po;
        int key_update = 0;
        if (type == GW_TLS_CT_APPDATA) {
            if (!h2 && pl > 0 && app == 0 &&
                (pl < 9 || memcmp(q, "HTTP/1.1 ", 9) != 0))
                die("HTTP/1.1 plaintext that does not start with a status line");
            app += pl;
        } else if (type == GW_TLS_CT_ALERT) {
            if (pl != 2 || (q[0] != 1 && q[0] != 2))
                die("a malformed alert");
            alert = 1;
            F.server_alert = q[1];
            if (q[0] != (q[1] == 0 || q[1] == 90 ? 1 : 2))
                die("an alert of the wrong level");
            if (q[1] == 80)
                die("internal_error: hostile input made the record layer fail inside");
        } else if (type == GW_TLS_CT_HANDSHAKE && !F.tls12) {
            for (size_t at = 0; at < pl;) {
                if (pl - at < 4)
                    die("a handshake message cut inside a record");
                size_t ml = (size_t)q[at + 1] << 16 | (size_t)q[at + 2] << 8 | q[at + 3];
                if (pl - at - 4 < ml)
                    die("a handshake message longer than its record");
                if (q[at] == 24) {
                    if (ml != 1 || q[at + 4] != 0 || at + 5 != pl)
                        die("a KeyUpdate that is not update_not_requested ending its record");
                    key_update = 1;
                } else if (q[at] != 4) {
                    die("a handshake message other than NewSessionTicket or KeyUpdate");
                }
                at += 4 + ml;
            }
        } else {
            die("an inner content type the server never sends");
        }
        if (key_update && gw_tls_rec_next_key(&F.cv, &F.cv.rd) < 0)
            die("gw_tls_rec_next_key failed on the client's side");
        p += 5 + len;
    }
}

/* ---- libFuzzer ------------------------------------------------------------------------- */

/* Raw bytes can be no record under the client's key: when they hold a whole record header
 * (and, for application data of a legal length, its whole body), the server must fail the
 * connection with the alert that fits. Returns that alert, or -1. */
static int play_raw(int fd, const uint8_t *d, size_t n)
{
    if (n < 1)
        return -1;
    int nsplit = d[0] & 3;
    if (n < 1 + (size_t)nsplit)
        return -1;
    const uint8_t *payload = d + 1 + nsplit;
    size_t plen = n - 1 - (size_t)nsplit, at = 0;
    int expect = -1;
    if (plen >= 5) {
        size_t len = (size_t)payload[3] << 8 | payload[4];
        expect = payload[0] != GW_TLS_CT_APPDATA ? 10  /* unexpected_message */
                 : len > GW_TLS_REC_MAX_CIPHER13      ? 22  /* record_overflow */
                 : plen >= 5 + len                ? 20  /* bad_record_mac */
                                                  : -1;
    }
    for (int i = 0; i <= nsplit; i++) {
        size_t cut = i < nsplit ? plen * d[1 + i] / 256 : plen;
        if (cut <= at)
            continue;
        pend(payload + at, cut - at);
        flush_pending(fd, cut - at);
        at = cut;
    }
    return expect;
}

static void play_ops(int fd, const uint8_t *d, size_t n, int mode)
{
    static const char get[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    size_t i = 0;
#define NEXT() (i < n ? d[i++] : 0)
    while (i < n) {
        int op = NEXT() % 7;
        if (op == 0 && mode == 1)
            op = 1;
        if (op == 0 || op == 1 || op == 5 || (op == 2 && (F.tls12 || i >= n || d[i] > 1)))
            F.legal = 0;
        F.ku_run = op == 2 ? F.ku_run + 1 : op == 4 ? 0 : F.ku_run;
        if (F.ku_run > 32) /* more in a row are refused (BoringSSL's cap) */
            F.legal = 0;
        switch (op) {
        case 0: {
            size_t k = NEXT();
            if (k > n - i)
                k = n - i;
            pend(d + i, k);
            i += k;
            break;
        }
        case 1: {
            uint8_t type = NEXT(), pad = NEXT();
            size_t k = (size_t)NEXT() << 8;
            k |= NEXT();
            if (k > n - i)
                k = n - i;
            pend_record(type, d + i, k, pad);
            i += k;
            break;
        }
        case 2: {
            uint8_t ku[5] = { 24, 0, 0, 1, NEXT() };
            pend_record(GW_TLS_CT_HANDSHAKE, ku, 5, 0);
            break;
        }
        case 3:
            flush_pending(fd, F.pending_len * ((size_t)NEXT() + 1) / 256);
            break;
        case 4:
            pend_record(GW_TLS_CT_APPDATA, (const uint8_t *)get, sizeof get - 1, 0);
            break;
        case 5: {
            uint8_t al[2];
            al[0] = NEXT();
            al[1] = NEXT();
            pend_record(GW_TLS_CT_ALERT, al, 2, 0);
            break;
        }
        case 6:
            release_held();
            F.hold = !F.hold;
            break;
        }
    }
#undef NEXT
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!G.s) {
        setup();
        fetch_session(0);
        fetch_session(1);
    }
    if (size < 1)
        return 0;
    int suite = (data[0] & 3) % 3, resume = (data[0] & 3) == 3, mode = (data[0] >> 2) & 3, h2 = data[0] >> 7;
    F.tls12 = mode == 3;
    F.legal = mode != 0;
    F.ku_run = 0;
    memset(&F.hs, 0, sizeof F.hs);
    G.mode = (data[0] >> 4) & 3;
    G.n_request = G.n_answered = G.n_abort = G.n_done = 0;
    F.pending_len = 0;
    F.record_errors = 0;
    F.hold = 0;

    int fd = handshake(suite, h2, resume);
    G.resp_len = 0;
    int expect = -1;
    if (mode == 0)
        expect = play_raw(fd, data + 1, size - 1);
    else
        play_ops(fd, data + 1, size - 1, mode);
    if (data[0] & 0x40) {
        uint8_t cn[2] = { 1, 0 };
        pend_record(GW_TLS_CT_ALERT, cn, 2, 0);
    }
    flush_pending(fd, F.pending_len);
    release_held();
    F.hold = 0;
    fuzz_end_connection(fd);
    check_server_records(h2);
    if (F.legal && (F.record_errors != 0 || F.server_alert > 0)) {
        fprintf(stderr, "alert %d, %d record errors\n", F.server_alert, F.record_errors);
        die("a well-formed conversation ended with a record error");
    }
    if (expect >= 0 && (F.record_errors != 1 || F.server_alert != expect)) {
        fprintf(stderr, "expected alert %d, got %d (%d record errors)\n", expect,
                F.server_alert, F.record_errors);
        die("raw bytes did not end the connection with the alert that fits");
    }
    gw_tls_rec_clear(&F.cv);
    return 0;
}
