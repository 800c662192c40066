/* test_tls_records.c — a TLS server connection after its handshake (tls.c, tls_record.c):
 * with an AEAD (TLS 1.3 or 1.2) it runs its records itself and holds no OpenSSL state while
 * idle. A
 * gw_server with a TLS listener on a real loop (port 0) and an OpenSSL client on a
 * non-blocking loopback socket in the same thread; every OpenSSL allocation goes through
 * CRYPTO_set_mem_functions, and those made while the server's loop runs are tracked until
 * freed: the bytes an idle connection holds are counted, not timed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http/server.h"
#include "http/tls.h"

#define BIG_LEN 100000 /* several records each way */

/* ---- OpenSSL's allocations made by the server side, live ----------------------------- */

#define TRACK_SLOTS (1u << 16)
static struct { void *p; size_t n; } track[TRACK_SLOTS];
static int in_server;    /* the server's loop is running: its allocations are tracked */
static size_t server_live;

static size_t slot_of(void *p)
{
    return (size_t)(((uintptr_t)p >> 4) * 0x9E3779B97F4A7C15ull >> 48) & (TRACK_SLOTS - 1);
}

static void track_add(void *p, size_t n)
{
    for (size_t i = slot_of(p), k = 0; k < TRACK_SLOTS; k++, i = (i + 1) & (TRACK_SLOTS - 1))
        if (!track[i].p) {
            track[i].p = p;
            track[i].n = n;
            server_live += n;
            return;
        }
}

static void track_del(void *p)
{
    for (size_t i = slot_of(p), k = 0; k < TRACK_SLOTS && track[i].p; k++,
                i = (i + 1) & (TRACK_SLOTS - 1))
        if (track[i].p == p) {
            server_live -= track[i].n;
            track[i].p = NULL;
            /* re-insert the rest of the run (open addressing, linear probing) */
            for (size_t j = (i + 1) & (TRACK_SLOTS - 1); track[j].p; j = (j + 1) & (TRACK_SLOTS - 1)) {
                void *q = track[j].p;
                size_t m = track[j].n;
                track[j].p = NULL;
                server_live -= m;
                track_add(q, m);
            }
            return;
        }
}

static void *m_malloc(size_t n, const char *f, int l)
{
    (void)f, (void)l;
    void *p = malloc(n);
    if (p && in_server)
        track_add(p, n);
    return p;
}

static void *m_realloc(void *o, size_t n, const char *f, int l)
{
    (void)f, (void)l;
    int was = 0;
    if (o) {
        size_t before = server_live;
        track_del(o);
        was = server_live != before;
    }
    void *p = realloc(o, n);
    if (p && (in_server || was))
        track_add(p, n);
    return p;
}

static void m_free(void *p, const char *f, int l)
{
    (void)f, (void)l;
    if (p)
        track_del(p);
    free(p);
}

/* ---- a certificate ------------------------------------------------------------------- */

static char dir[64], cert_path[128], key_path[128];

static void make_cert(void)
{
    snprintf(dir, sizeof dir, "/tmp/gw-tlsrec-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(cert_path, sizeof cert_path, "%s/cert.pem", dir);
    snprintf(key_path, sizeof key_path, "%s/key.pem", dir);
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    assert_non_null(k);
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"localhost", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    X509_set_pubkey(x, k);
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    FILE *f = fopen(cert_path, "w");
    assert_non_null(f);
    PEM_write_X509(f, x);
    fclose(f);
    f = fopen(key_path, "w");
    assert_non_null(f);
    PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(k);
}

/* ---- the server ---------------------------------------------------------------------- */

static struct {
    uv_loop_t loop;
    gw_server *s;
    gw_tls_slot slot;
    int closed;
    int n_request;
    int events[GW_TLS__EVENTS];
    char *big;
} T;

static void h_request(gw_request *req)
{
    T.n_request++;
    if (req->path.n == 4 && memcmp(req->path.p, "/big", 4) == 0)
        gw_response_simple(req, 200, "text/plain", T.big, BIG_LEN, NULL);
    else
        gw_response_simple(req, 200, "text/plain", "ok", 2, NULL);
}
static void h_body(gw_request *req, const char *p, size_t n) { (void)req, (void)p, (void)n; }
static void h_body_end(gw_request *req) { (void)req; }
static void h_drain(gw_request *req) { (void)req; }
static void h_abort(gw_request *req, int err) { (void)req, (void)err; }
static const gw_handler handler = { h_request, h_body, h_body_end, h_drain, h_abort };

static void on_tls_event(enum gw_tls_event ev, void *data)
{
    (void)data;
    T.events[ev]++;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void srv_pump(void)
{
    in_server = 1;
    uv_run(&T.loop, UV_RUN_NOWAIT);
    in_server = 0;
}

/* Runs the server's loop until COND holds (evaluated once per turn) or MS pass. */
#define PUMP_UNTIL(cond, ms)                                                           \
    ({                                                                                 \
        uint64_t end_ = now_ms() + (ms);                                               \
        int ok_;                                                                       \
        while (!(ok_ = (cond)) && now_ms() < end_) {                                   \
            srv_pump();                                                                \
            usleep(200);                                                               \
        }                                                                              \
        ok_;                                                                           \
    })

static uint32_t cache_size; /* the TLS 1.2 session-id cache of the next server_start */

static void server_start(const char *suites)
{
    memset(&T, 0, sizeof T);
    T.big = malloc(BIG_LEN);
    assert_non_null(T.big);
    for (int i = 0; i < BIG_LEN; i++)
        T.big[i] = (char)('a' + i % 26);
    gw_tls_conf conf;
    memset(&conf, 0, sizeof conf);
    snprintf(conf.certs[0].cert, sizeof conf.certs[0].cert, "%s", cert_path);
    snprintf(conf.certs[0].key, sizeof conf.certs[0].key, "%s", key_path);
    conf.n_certs = 1;
    conf.protocols = GW_TLS_V12 | GW_TLS_V13;
    conf.session_cache_size = cache_size;
    snprintf(conf.ciphersuites, sizeof conf.ciphersuites, "%s", suites ? suites : "");
    char err[256] = "";
    gw_tls_ctx *x = gw_tls_ctx_new(&conf, err, sizeof err);
    assert_non_null(x);
    gw_tls_slot_init(&T.slot, x);
    assert_int_equal(uv_loop_init(&T.loop), 0);
    gw_server_opts o = {
        .limits = { .max_uri_bytes = 1024, .max_header_bytes = 4096, .max_headers = 32,
                    .max_body_bytes = 1000, .header_timeout_ms = 2000, .body_timeout_ms = 2000,
                    .idle_timeout_ms = 5000, .send_timeout_ms = 2000, .read_buffer_bytes = 8192 },
        .tls = &T.slot,
        .on_tls_event = on_tls_event,
    };
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    assert_int_equal(gw_server_init(&T.s, &T.loop, (struct sockaddr *)&a, &o, &handler), 0);
}

static void on_server_closed(gw_server *s)
{
    gw_server_free(s);
    T.closed = 1;
}

static void server_stop(void)
{
    gw_server_close(T.s, on_server_closed);
    assert_true(PUMP_UNTIL(T.closed, 2000));
    srv_pump();
    assert_int_equal(uv_loop_close(&T.loop), 0);
    gw_tls_slot_destroy(&T.slot);
    gw_tls_thread_cleanup();
    free(T.big);
}

/* ---- the client ---------------------------------------------------------------------- */

typedef struct cli {
    int fd;
    SSL *ssl;
} cli;

static SSL_CTX *client_ctx(int max_version, const char *suites)
{
    SSL_CTX *cc = SSL_CTX_new(TLS_client_method());
    assert_non_null(cc);
    SSL_CTX_set_max_proto_version(cc, max_version);
    if (suites)
        assert_int_equal(SSL_CTX_set_ciphersuites(cc, suites), 1);
    return cc;
}

/* A connection of CC, resuming SESS when not NULL, the handshake done. */
static cli cli_open_session(SSL_CTX *cc, SSL_SESSION *sess)
{
    cli k;
    k.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    assert_true(k.fd >= 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)gw_server_port(T.s)) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int r = connect(k.fd, (struct sockaddr *)&a, sizeof a);
    assert_true(r == 0 || errno == EINPROGRESS);
    k.ssl = SSL_new(cc);
    assert_non_null(k.ssl);
    SSL_set_fd(k.ssl, k.fd);
    if (sess)
        SSL_set_session(k.ssl, sess);
    SSL_set_connect_state(k.ssl);
    int done = 0;
    assert_true(PUMP_UNTIL((done = SSL_do_handshake(k.ssl)) == 1 ||
                               (SSL_get_error(k.ssl, done) != SSL_ERROR_WANT_READ &&
                                SSL_get_error(k.ssl, done) != SSL_ERROR_WANT_WRITE), 5000));
    assert_int_equal(done, 1);
    return k;
}

static cli cli_open(SSL_CTX *cc)
{
    return cli_open_session(cc, NULL);
}

static void cli_close(cli *k)
{
    SSL_free(k->ssl);
    close(k->fd);
}

static void cli_write(cli *k, const void *p, int n)
{
    int w = 0;
    assert_true(PUMP_UNTIL((w = SSL_write(k->ssl, p, n)) > 0 ||
                               SSL_get_error(k->ssl, w) != SSL_ERROR_WANT_WRITE, 3000));
    assert_int_equal(w, n);
}

/* GET PATH; the response's body length, or -1 when the connection failed. */
static long cli_get(cli *k, const char *path, char *body, size_t cap)
{
    char req[128], buf[256 * 1024];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    cli_write(k, req, n);
    size_t len = 0;
    uint64_t end = now_ms() + 5000;
    while (now_ms() < end) {
        int r = SSL_read(k->ssl, buf + len, (int)(sizeof buf - len));
        if (r > 0) {
            len += (size_t)r;
            char *h = memmem(buf, len, "\r\n\r\n", 4);
            char *cl = h ? strcasestr(buf, "content-length:") : NULL;
            if (h && cl) {
                long bl = strtol(cl + 15, NULL, 10);
                if (len >= (size_t)(h + 4 - buf) + (size_t)bl) {
                    if (body && (size_t)bl <= cap)
                        memcpy(body, h + 4, (size_t)bl);
                    return bl;
                }
            }
            continue;
        }
        int e = SSL_get_error(k->ssl, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            ERR_clear_error();
            return -1;
        }
        srv_pump();
        usleep(200);
    }
    return -1;
}

/* ---- tests --------------------------------------------------------------------------- */

/* An idle TLS 1.3 keep-alive connection holds no OpenSSL memory (the SSL, its session,
 * cipher contexts and handshake leftovers were ~13.7 KB before tls_record.c). */
static void test_idle_tls13_connection_holds_no_openssl_memory(void **state)
{
    (void)state;
    server_start(NULL);
    SSL_CTX *cc = client_ctx(TLS1_3_VERSION, NULL);
    cli w = cli_open(cc); /* warm-up: the thread's cipher contexts, OpenSSL's lazy state */
    assert_int_equal(cli_get(&w, "/", NULL, 0), 2);
    cli_close(&w);
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 2000));
    size_t base = server_live;
    cli k = cli_open(cc);
    assert_int_equal(cli_get(&k, "/", NULL, 0), 2);
    PUMP_UNTIL(0, 50);
    assert_int_equal(gw_server_active(T.s), 1);
    size_t held = server_live - base;
    print_message("OpenSSL bytes held by an idle TLS 1.3 connection: %zu\n", held);
    assert_true(held < 256);
    assert_int_equal(cli_get(&k, "/", NULL, 0), 2); /* and it still works */
    cli_close(&k);
    SSL_CTX_free(cc);
    server_stop();
}

static SSL_CTX *client_ctx12(const char *ciphers)
{
    SSL_CTX *cc = client_ctx(TLS1_2_VERSION, NULL);
    assert_int_equal(SSL_CTX_set_cipher_list(cc, ciphers), 1);
    return cc;
}

/* OpenSSL bytes the server holds for one idle connection of CC (after a warm-up one), the
 * connection left open in *K. */
static size_t idle_bytes(SSL_CTX *cc, cli *k)
{
    cli w = cli_open(cc);
    assert_int_equal(cli_get(&w, "/", NULL, 0), 2);
    cli_close(&w);
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 2000));
    size_t base = server_live;
    *k = cli_open(cc);
    assert_int_equal(cli_get(k, "/", NULL, 0), 2);
    PUMP_UNTIL(0, 50);
    assert_int_equal(gw_server_active(T.s), 1);
    return server_live - base;
}

/* TLS 1.2 with an AEAD: the records run here too (keys from the master secret), full and
 * resumed handshakes; a CBC suite keeps OpenSSL's record layer (and its memory). */
static void test_tls12_aead_own_records_cbc_keeps_openssl(void **state)
{
    (void)state;
    static const char *aeads[] = { "ECDHE-ECDSA-AES128-GCM-SHA256",
                                   "ECDHE-ECDSA-AES256-GCM-SHA384",
                                   "ECDHE-ECDSA-CHACHA20-POLY1305" };
    static char body[BIG_LEN];
    for (size_t i = 0; i < sizeof aeads / sizeof aeads[0]; i++) {
        server_start(NULL);
        SSL_CTX *cc = client_ctx12(aeads[i]);
        cli k;
        size_t held = idle_bytes(cc, &k);
        print_message("%s: OpenSSL bytes held by an idle connection: %zu\n", aeads[i], held);
        assert_string_equal(SSL_get_version(k.ssl), "TLSv1.2");
        assert_string_equal(SSL_CIPHER_get_name(SSL_get_current_cipher(k.ssl)), aeads[i]);
        assert_true(held < 256);
        memset(body, 0, sizeof body);
        assert_int_equal(cli_get(&k, "/big", body, sizeof body), BIG_LEN);
        assert_memory_equal(body, T.big, BIG_LEN);
        /* resumed: the session (ticket) of this connection */
        SSL_SESSION *sess = SSL_get1_session(k.ssl);
        SSL_shutdown(k.ssl);
        cli_close(&k);
        assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 2000));
        size_t base = server_live;
        cli r = cli_open_session(cc, sess);
        assert_int_equal(SSL_session_reused(r.ssl), 1);
        assert_int_equal(cli_get(&r, "/", NULL, 0), 2);
        PUMP_UNTIL(0, 50);
        assert_true(server_live - base < 256);
        assert_int_equal(cli_get(&r, "/big", body, sizeof body), BIG_LEN);
        assert_memory_equal(body, T.big, BIG_LEN);
        SSL_SESSION_free(sess);
        SSL_shutdown(r.ssl); /* close_notify: the server closes */
        assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 2000));
        assert_int_equal(T.events[GW_TLS_ERR_RECORD], 0);
        assert_int_equal(T.events[GW_TLS_RESUMED], 1);
        cli_close(&r);
        SSL_CTX_free(cc);
        server_stop();
    }
    server_start(NULL);
    SSL_CTX *cc = client_ctx12("ECDHE-ECDSA-AES128-SHA256");
    cli k;
    assert_true(idle_bytes(cc, &k) > 4096);
    assert_int_equal(cli_get(&k, "/big", body, sizeof body), BIG_LEN);
    assert_memory_equal(body, T.big, BIG_LEN);
    cli_close(&k);
    SSL_CTX_free(cc);
    server_stop();
}

/* Each suite the layer runs: small and multi-record answers, KeyUpdate both ways (the
 * client asks for ours), then close_notify. */
static void test_tls13_suites_and_key_update(void **state)
{
    (void)state;
    static const char *suites[] = { "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384",
                                    "TLS_CHACHA20_POLY1305_SHA256" };
    static char body[BIG_LEN];
    for (size_t i = 0; i < sizeof suites / sizeof suites[0]; i++) {
        server_start(NULL);
        SSL_CTX *cc = client_ctx(TLS1_3_VERSION, suites[i]);
        cli k = cli_open(cc);
        assert_string_equal(SSL_CIPHER_get_name(SSL_get_current_cipher(k.ssl)), suites[i]);
        assert_int_equal(cli_get(&k, "/", NULL, 0), 2);
        memset(body, 0, sizeof body);
        assert_int_equal(cli_get(&k, "/big", body, sizeof body), BIG_LEN);
        assert_memory_equal(body, T.big, BIG_LEN);
        for (int u = 0; u < 3; u++) {
            assert_int_equal(SSL_key_update(k.ssl, SSL_KEY_UPDATE_REQUESTED), 1);
            assert_int_equal(cli_get(&k, "/", NULL, 0), 2);
            assert_int_equal(cli_get(&k, "/big", body, sizeof body), BIG_LEN);
            assert_memory_equal(body, T.big, BIG_LEN);
        }
        assert_int_equal(SSL_key_update(k.ssl, SSL_KEY_UPDATE_NOT_REQUESTED), 1);
        assert_int_equal(cli_get(&k, "/", NULL, 0), 2);
        assert_int_equal(T.n_request, 9);
        SSL_shutdown(k.ssl); /* close_notify: the server closes */
        assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 2000));
        assert_int_equal(T.events[GW_TLS_ERR_RECORD], 0);
        cli_close(&k);
        SSL_CTX_free(cc);
        server_stop();
    }
}

/* Sends K a record made with another connection's keys (its tag cannot verify); the server
 * closes both. */
static void send_forged_record(SSL_CTX *cc, cli *k)
{
    cli o = cli_open(cc);
    BIO *mem = BIO_new(BIO_s_mem());
    BIO *keep = SSL_get_wbio(o.ssl);
    BIO_up_ref(keep);
    SSL_set0_wbio(o.ssl, mem);
    assert_int_equal(SSL_write(o.ssl, "GET / HTTP/1.1\r\n\r\n", 18), 18);
    char rec[256];
    int n = BIO_read(mem, rec, sizeof rec);
    assert_true(n > 22);
    assert_int_equal(send(k->fd, rec, (size_t)n, MSG_NOSIGNAL), n);
    BIO_free(keep);
    cli_close(&o);
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 2000)); /* o went, k too */
}

/* A record whose tag does not verify ends the connection with bad_record_mac (TLS 1.3,
 * then TLS 1.2). */
static void tampered_record_closes(int version)
{
    server_start(NULL);
    SSL_CTX *cc = client_ctx(version, NULL);
    cli k = cli_open(cc);
    assert_int_equal(cli_get(&k, "/", NULL, 0), 2);
    send_forged_record(cc, &k);
    assert_true(PUMP_UNTIL(T.events[GW_TLS_ERR_RECORD] == 1, 2000));
    char b[64];
    int r = 0;
    PUMP_UNTIL((r = SSL_read(k.ssl, b, sizeof b)) <= 0 &&
                   SSL_get_error(k.ssl, r) != SSL_ERROR_WANT_READ, 2000);
    assert_true(r <= 0);
    assert_int_equal(ERR_GET_REASON(ERR_peek_last_error()), SSL_R_SSLV3_ALERT_BAD_RECORD_MAC);
    ERR_clear_error();
    cli_close(&k);
    SSL_CTX_free(cc);
    server_stop();
}

static void test_tampered_record_closes(void **state)
{
    (void)state;
    tampered_record_closes(TLS1_3_VERSION);
    tampered_record_closes(TLS1_2_VERSION);
}

/* The client's last handshake flight and its first request in one TCP segment (what
 * browsers send): OpenSSL takes the Finished, the request waits in the ciphertext buffer for
 * the connection's own records (TLS 1.3, then TLS 1.2). */
static void request_in_finished_flight(int version)
{
    server_start(NULL);
    SSL_CTX *cc = client_ctx(version, NULL);
    cli k;
    k.fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)gw_server_port(T.s)) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int c = connect(k.fd, (struct sockaddr *)&a, sizeof a);
    assert_true(c == 0 || errno == EINPROGRESS);
    k.ssl = SSL_new(cc);
    BIO *out = BIO_new(BIO_s_mem()); /* what the client writes waits here */
    SSL_set_bio(k.ssl, BIO_new_socket(k.fd, BIO_NOCLOSE), out);
    SSL_set_connect_state(k.ssl);
    char buf[65536];
    int r, n;
    uint64_t end = now_ms() + 5000;
    while ((r = SSL_do_handshake(k.ssl)) != 1 && now_ms() < end) {
        assert_int_equal(SSL_get_error(k.ssl, r), SSL_ERROR_WANT_READ);
        while ((n = BIO_read(out, buf, sizeof buf)) > 0)
            assert_int_equal(send(k.fd, buf, (size_t)n, MSG_NOSIGNAL), n);
        srv_pump();
        usleep(200);
    }
    assert_int_equal(r, 1);
    assert_int_equal(SSL_write(k.ssl, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27), 27);
    n = BIO_read(out, buf, sizeof buf); /* Finished (1.2: and its key exchange) + request */
    assert_true(n > 27 + 22);
    assert_int_equal(send(k.fd, buf, (size_t)n, MSG_NOSIGNAL), n);
    size_t len = 0;
    end = now_ms() + 5000;
    while (!memmem(buf, len, "\r\n\r\nok", 6) && now_ms() < end) {
        r = SSL_read(k.ssl, buf + len, (int)(sizeof buf - len));
        if (r > 0)
            len += (size_t)r;
        else
            assert_int_equal(SSL_get_error(k.ssl, r), SSL_ERROR_WANT_READ);
        srv_pump();
        usleep(200);
    }
    assert_non_null(memmem(buf, len, "\r\n\r\nok", 6));
    assert_int_equal(T.n_request, 1);
    cli_close(&k);
    SSL_CTX_free(cc);
    server_stop();
}

static void test_request_in_the_finished_flight(void **state)
{
    (void)state;
    request_in_finished_flight(TLS1_3_VERSION);
    request_in_finished_flight(TLS1_2_VERSION);
}

/* TLS 1.2 session-id cache: a session resumes after its connection ended, not after it
 * failed (RFC 5246 §7.2.2; OpenSSL did this when it ran the records). */
static void test_tls12_failed_connection_session_forgotten(void **state)
{
    (void)state;
    cache_size = 64;
    server_start(NULL);
    cache_size = 0;
    SSL_CTX *cc = client_ctx(TLS1_2_VERSION, NULL);
    SSL_CTX_set_options(cc, SSL_OP_NO_TICKET); /* resumption by session id only */
    cli k = cli_open(cc);
    assert_int_equal(cli_get(&k, "/", NULL, 0), 2);
    /* copies: a client SSL freed without close_notify marks its session not resumable */
    SSL_SESSION *sess = SSL_SESSION_dup(SSL_get0_session(k.ssl));
    SSL_SESSION *copy = SSL_SESSION_dup(sess);
    cli_close(&k);
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 2000));
    cli r = cli_open_session(cc, copy);
    assert_int_equal(SSL_session_reused(r.ssl), 1);
    assert_int_equal(cli_get(&r, "/", NULL, 0), 2);
    send_forged_record(cc, &r);
    assert_int_equal(T.events[GW_TLS_ERR_RECORD], 1);
    cli_close(&r);
    cli f = cli_open_session(cc, sess);
    assert_int_equal(SSL_session_reused(f.ssl), 0); /* forgotten: a full handshake */
    assert_int_equal(cli_get(&f, "/", NULL, 0), 2);
    cli_close(&f);
    SSL_SESSION_free(sess);
    SSL_SESSION_free(copy);
    SSL_CTX_free(cc);
    server_stop();
}

int main(void)
{
    if (!CRYPTO_set_mem_functions(m_malloc, m_realloc, m_free))
        return 1; /* must come before OpenSSL's first allocation */
    signal(SIGPIPE, SIG_IGN);
    make_cert();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_tls13_connection_holds_no_openssl_memory),
        cmocka_unit_test(test_tls12_aead_own_records_cbc_keeps_openssl),
        cmocka_unit_test(test_tls13_suites_and_key_update),
        cmocka_unit_test(test_tampered_record_closes),
        cmocka_unit_test(test_request_in_the_finished_flight),
        cmocka_unit_test(test_tls12_failed_connection_session_forgotten),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(cert_path);
    unlink(key_path);
    rmdir(dir);
    return r;
}
