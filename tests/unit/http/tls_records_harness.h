/* tls_records_harness.h — the harness of the TLS record-layer unit tests
 * (test_tls_records.c, test_tls_record_rules.c): a gw_server with a TLS listener on a real
 * loop (port 0) and OpenSSL clients on non-blocking loopback sockets in the same thread;
 * every OpenSSL allocation goes through CRYPTO_set_mem_functions, and those made while the
 * server's loop runs are tracked until freed. Included once per test program. */
#ifndef TLS_RECORDS_HARNESS_H
#define TLS_RECORDS_HARNESS_H

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
#include "http/tls_record.h"
#include "http/tls_transport.h"

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
    gw_request *later; /* GET /later: answered when the test says (gw_response_simple) */
    int n_abort;
} T;

static void h_request(gw_request *req)
{
    T.n_request++;
    if (req->path.n == 6 && memcmp(req->path.p, "/later", 6) == 0)
        T.later = req;
    else if (req->path.n == 4 && memcmp(req->path.p, "/big", 4) == 0)
        gw_response_simple(req, 200, "text/plain", T.big, BIG_LEN, NULL);
    else
        gw_response_simple(req, 200, "text/plain", "ok", 2, NULL);
}
static void h_body(gw_request *req, const char *p, size_t n) { (void)req, (void)p, (void)n; }
static void h_body_end(gw_request *req) { (void)req; }
static void h_drain(gw_request *req) { (void)req; }
static void h_abort(gw_request *req, int err)
{
    (void)err;
    T.n_abort++;
    if (req == T.later)
        T.later = NULL;
}
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

static SSL_CTX *client_ctx12(const char *ciphers)
{
    SSL_CTX *cc = client_ctx(TLS1_2_VERSION, NULL);
    assert_int_equal(SSL_CTX_set_cipher_list(cc, ciphers), 1);
    return cc;
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

/* Before the tests: the allocation hooks (before OpenSSL's first allocation), a
 * certificate. 0, or -1. */
static int harness_setup(void)
{
    if (!CRYPTO_set_mem_functions(m_malloc, m_realloc, m_free))
        return -1;
    signal(SIGPIPE, SIG_IGN);
    make_cert();
    return 0;
}

static void harness_teardown(void)
{
    unlink(cert_path);
    unlink(key_path);
    rmdir(dir);
}

#endif
