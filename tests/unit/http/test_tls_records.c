/* test_tls_records.c — a TLS server connection after its handshake (tls.c, tls_record.c):
 * with an AEAD (TLS 1.3 or 1.2) it runs its records itself and holds no OpenSSL state while
 * idle; the bytes an idle connection holds are counted, not timed (the harness:
 * tls_records_harness.h). What the record layer refuses: test_tls_record_rules.c. */
#include "tls_records_harness.h"

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

/* The server's SSL_CTX of the running server (tls_transport.h), to vary the handshake. */
static SSL_CTX *server_ssl_ctx(void)
{
    gw_tls_ctx *x = gw_tls_slot_acquire(&T.slot);
    SSL_CTX *ctx = gw__tls_ctx_default(x);
    gw_tls_ctx_unref(x); /* the slot keeps its reference */
    return ctx;
}

/* TLS 1.3 handovers the record layer must get right (regression tests from the review's
 * probes): 0, 2 and 3 session tickets (the write sequence number starts after them), a
 * HelloRetryRequest, a chain of resumptions each from a ticket of an own-records
 * connection, and two connections on one thread interleaved with KeyUpdates (the thread's
 * cipher contexts keep each connection's keys apart). */
static void test_tls13_handover_variants(void **state)
{
    (void)state;
    static char body[BIG_LEN];
    for (int tickets = 0; tickets <= 3; tickets += tickets ? 1 : 2) {
        server_start(NULL);
        SSL_CTX_set_num_tickets(server_ssl_ctx(), (size_t)tickets);
        SSL_CTX *cc = client_ctx(TLS1_3_VERSION, NULL);
        cli k;
        assert_true(idle_bytes(cc, &k) < 256); /* the records run here */
        assert_int_equal(cli_get(&k, "/big", body, sizeof body), BIG_LEN);
        assert_memory_equal(body, T.big, BIG_LEN);
        cli_close(&k);
        SSL_CTX_free(cc);
        server_stop();
    }
    server_start(NULL);
    assert_int_equal(SSL_CTX_set1_groups_list(server_ssl_ctx(), "X25519"), 1);
    SSL_CTX *cc = client_ctx(TLS1_3_VERSION, NULL);
    assert_int_equal(SSL_CTX_set1_groups_list(cc, "P-256:X25519"), 1); /* key share: P-256 */
    cli k;
    assert_true(idle_bytes(cc, &k) < 256);
    assert_int_equal(cli_get(&k, "/big", body, sizeof body), BIG_LEN);
    assert_memory_equal(body, T.big, BIG_LEN);
    SSL_SESSION *sess = SSL_get1_session(k.ssl);
    SSL_shutdown(k.ssl);
    cli_close(&k);
    for (int i = 0; i < 3; i++) {
        cli r = cli_open_session(cc, sess);
        assert_int_equal(SSL_session_reused(r.ssl), 1);
        assert_int_equal(cli_get(&r, "/", NULL, 0), 2);
        SSL_SESSION_free(sess);
        sess = SSL_get1_session(r.ssl); /* the ticket this connection got */
        SSL_shutdown(r.ssl);
        cli_close(&r);
    }
    SSL_SESSION_free(sess);
    cli a = cli_open(cc), b = cli_open(cc);
    for (int i = 0; i < 20; i++) {
        cli *x = i % 2 ? &b : &a;
        if (i % 3 == 0)
            assert_int_equal(SSL_key_update(x->ssl, SSL_KEY_UPDATE_REQUESTED), 1);
        assert_int_equal(cli_get(x, "/", NULL, 0), 2);
    }
    assert_int_equal(T.events[GW_TLS_ERR_RECORD], 0);
    cli_close(&a);
    cli_close(&b);
    SSL_CTX_free(cc);
    server_stop();
}

int main(void)
{
    if (harness_setup() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idle_tls13_connection_holds_no_openssl_memory),
        cmocka_unit_test(test_tls12_aead_own_records_cbc_keeps_openssl),
        cmocka_unit_test(test_tls13_suites_and_key_update),
        cmocka_unit_test(test_tampered_record_closes),
        cmocka_unit_test(test_request_in_the_finished_flight),
        cmocka_unit_test(test_tls12_failed_connection_session_forgotten),
        cmocka_unit_test(test_tls13_handover_variants),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    harness_teardown();
    return r;
}
