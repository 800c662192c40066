/* test_tls_record_rules.c — what the server's own TLS record layer (tls.c, tls_record.c)
 * accepts and refuses after the handshake, and with which alert: a raw client makes its
 * records by hand from OpenSSL's keys (TLS 1.3: the key log; TLS 1.2: the session) after an
 * OpenSSL handshake. RFC 8446 §4.6.3, §5, §6; RFC 5246 §6-7; the caps BoringSSL and OpenSSL
 * have; close_notify both ways; the session-id cache; max_fragment_length. */
#include "tls_records_harness.h"

/* ---- raw records: a TLS 1.3 client writing its records by hand ------------------------ */

/* The last connection's application traffic secrets, from the client's key log. */
static unsigned char ck_client[48], ck_server[48];
static size_t ck_len;

static void hex_to(const char *p, unsigned char *out)
{
    size_t n = 0;
    for (unsigned v; p[0] && p[1] && n < 48 && sscanf(p, "%2x", &v) == 1; p += 2)
        out[n++] = (unsigned char)v;
    ck_len = n;
}

static void cli_keylog(const SSL *ssl, const char *line)
{
    (void)ssl;
    if (strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0)
        hex_to(strrchr(line, ' ') + 1, ck_client);
    else if (strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) == 0)
        hex_to(strrchr(line, ' ') + 1, ck_server);
}

typedef struct raw {
    cli k;
    gw_tls_rec r;             /* the client's side: rd opens the server's records */
    unsigned char in[1 << 18];
    size_t in_len;
    int alert_level, alert;   /* -1: none came */
    int n_ku, bad, closed;
    size_t app_len;
    char app[1 << 18];
} raw;

static raw RA;
static unsigned char wire[1 << 17];

static SSL_CTX *raw_ctx(void)
{
    SSL_CTX *cc = client_ctx(TLS1_3_VERSION, "TLS_AES_128_GCM_SHA256");
    SSL_CTX_set_keylog_callback(cc, cli_keylog);
    return cc;
}

/* A connection whose handshake OpenSSL did; from here on its records are made here. */
static void raw_open(raw *x, SSL_CTX *cc)
{
    memset(x, 0, sizeof *x);
    x->alert = -1;
    x->k = cli_open(cc);
    assert_int_equal(gw_tls_rec_init13(&x->r, NID_aes_128_gcm, NID_sha256, ck_server, ck_client,
                                       ck_len, 0, 0), 0);
}

static void raw_close(raw *x)
{
    gw_tls_rec_clear(&x->r);
    cli_close(&x->k);
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 2000));
}

static void raw_send(raw *x, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(x->k.fd, c, n, MSG_NOSIGNAL);
        if (w > 0) {
            c += w;
            n -= (size_t)w;
        } else {
            assert_true(w < 0 && errno == EAGAIN);
            srv_pump();
        }
    }
}

/* One record of TYPE holding P (N bytes), sent. */
static void send_rec(raw *x, uint8_t type, const void *p, size_t n)
{
    uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
    int l = gw_tls_rec_seal(&x->r, type, &b, 1, n, (char *)wire);
    assert_true(l > 0);
    raw_send(x, wire, (size_t)l);
}

/* A record whose inner plaintext (content, type and padding) is INNER, whatever it holds,
 * sealed with AES-128-GCM, into OUT; its length. */
static size_t seal_inner_dir(gw_tls_rec_dir *d, const unsigned char *inner, size_t n,
                             unsigned char *out)
{
    unsigned char nonce[12];
    memcpy(nonce, d->iv, 12);
    for (int i = 0; i < 8; i++)
        nonce[11 - i] ^= (unsigned char)(d->seq >> (8 * i));
    size_t clen = n + 16;
    unsigned char h[5] = { 23, 3, 3, (unsigned char)(clen >> 8), (unsigned char)clen };
    memcpy(out, h, 5);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int l;
    assert_true(EVP_EncryptInit_ex(c, EVP_aes_128_gcm(), NULL, d->key, nonce));
    assert_true(EVP_EncryptUpdate(c, NULL, &l, out, 5));
    assert_true(EVP_EncryptUpdate(c, out + 5, &l, inner, (int)n));
    assert_true(EVP_EncryptFinal_ex(c, out + 5 + l, &l));
    assert_true(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, 16, out + 5 + n));
    EVP_CIPHER_CTX_free(c);
    d->seq++;
    return 5 + clen;
}

static size_t seal_inner(raw *x, const unsigned char *inner, size_t n, unsigned char *out)
{
    return seal_inner_dir(&x->r.wr, inner, n, out);
}

static void send_inner(raw *x, const unsigned char *inner, size_t n)
{
    raw_send(x, wire, seal_inner(x, inner, n, wire));
}

/* Reads and opens the server's records until an alert, the close, WANT in the data, or MS. */
static void raw_until(raw *x, int ms, const char *want)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    while (now_ms() < end && !x->closed && x->alert < 0 &&
           !(want && memmem(x->app, x->app_len, want, strlen(want)))) {
        srv_pump();
        ssize_t r = recv(x->k.fd, x->in + x->in_len, sizeof x->in - x->in_len, 0);
        if (r == 0 || (r < 0 && errno != EAGAIN))
            x->closed = 1;
        else if (r > 0)
            x->in_len += (size_t)r;
        else
            usleep(200);
        size_t off = 0;
        while (x->in_len - off >= 5) {
            unsigned char *h = x->in + off;
            size_t len = (size_t)h[3] << 8 | h[4], po, pl;
            uint8_t type;
            if (x->in_len - off < 5 + len)
                break;
            off += 5 + len;
            if (x->bad || gw_tls_rec_open(&x->r, (char *)h, 5 + len, &type, &po, &pl) < 0) {
                x->bad++;
            } else if (type == GW_TLS_CT_APPDATA && x->app_len + pl <= sizeof x->app) {
                memcpy(x->app + x->app_len, h + po, pl);
                x->app_len += pl;
            } else if (type == GW_TLS_CT_ALERT && pl == 2) {
                x->alert_level = h[po];
                x->alert = h[po + 1];
            } else if (type == GW_TLS_CT_HANDSHAKE) { /* session tickets, KeyUpdates */
                for (size_t m = 0; m + 4 <= pl; m += 4 + ((size_t)h[po + m + 2] << 8 | h[po + m + 3]))
                    if (h[po + m] == 24) {
                        x->n_ku++;
                        assert_int_equal(gw_tls_rec_next_key(&x->r, &x->r.rd), 0);
                    }
            }
        }
        memmove(x->in, x->in + off, x->in_len - off);
        x->in_len -= off;
    }
    assert_int_equal(x->bad, 0);
}

/* Answers (a 200 with body "ok") in what came so far. */
static int n_ok(const raw *x)
{
    int n = 0;
    for (const char *p = x->app; (p = memmem(p, x->app_len - (size_t)(p - x->app),
                                             "\r\n\r\nok", 6)) != NULL; p += 6)
        n++;
    return n;
}

static const char GET[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";

/* What the server answers a record (or bytes) it must refuse: the alert (level 2). */
static int alert_for(SSL_CTX *cc, int kase)
{
    static unsigned char inner[GW_TLS_REC_MAX_PLAIN + 256];
    raw *x = &RA;
    raw_open(x, cc);
    size_t n = 0;
    switch (kase) {
    case 0: /* an inner plaintext of zeros only: no content type (F1) */
        memset(inner, 0, 100);
        send_inner(x, inner, 100);
        break;
    case 1: /* 2^14 + 1 bytes of content (F2) */
        memset(inner, 'A', GW_TLS_REC_MAX_PLAIN + 1);
        inner[GW_TLS_REC_MAX_PLAIN + 1] = GW_TLS_CT_APPDATA;
        send_inner(x, inner, GW_TLS_REC_MAX_PLAIN + 2);
        break;
    case 2: /* a request padded to 2^14 + 200 bytes in all: the limit counts the padding (F2) */
        memset(inner, 0, sizeof inner);
        memcpy(inner, GET, strlen(GET));
        inner[strlen(GET)] = GW_TLS_CT_APPDATA;
        send_inner(x, inner, GW_TLS_REC_MAX_PLAIN + 200);
        break;
    case 3: /* KeyUpdate with request_update 2 (F3) */
        send_rec(x, GW_TLS_CT_HANDSHAKE, "\x18\x00\x00\x01\x02", 5);
        break;
    case 4: /* KeyUpdate of length 2 (F3) */
        send_rec(x, GW_TLS_CT_HANDSHAKE, "\x18\x00\x00\x02\x00\x00", 6);
        break;
    case 5: /* a NewSessionTicket from the client */
        send_rec(x, GW_TLS_CT_HANDSHAKE, "\x04\x00\x00\x05\x00\x00\x00\x00\x00", 9);
        break;
    case 6: /* two KeyUpdates in one record: the first does not end it (§5.1) */
        send_rec(x, GW_TLS_CT_HANDSHAKE, "\x18\x00\x00\x01\x00\x18\x00\x00\x01\x00", 10);
        break;
    case 7: /* a KeyUpdate begun, then data (§5.1: no interleaving) */
        send_rec(x, GW_TLS_CT_HANDSHAKE, "\x18\x00\x00", 3);
        send_rec(x, GW_TLS_CT_APPDATA, GET, strlen(GET));
        break;
    case 8: /* an empty handshake record */
        send_rec(x, GW_TLS_CT_HANDSHAKE, "", 0);
        break;
    case 9: /* an alert of 3 bytes */
        send_rec(x, GW_TLS_CT_ALERT, "\x01\x00\x00", 3);
        break;
    case 10: /* a plaintext ChangeCipherSpec after the handshake */
        raw_send(x, "\x14\x03\x03\x00\x01\x01", 6);
        break;
    case 11: /* a record longer than 2^14 + 256, refused from its header */
        raw_send(x, "\x17\x03\x03\x41\x01", 5);
        break;
    }
    (void)n;
    raw_until(x, 2000, NULL);
    int a = x->alert_level == 2 ? x->alert : -1;
    raw_close(x);
    return a;
}

/* Each refused record gets the alert RFC 8446 names (§4.6.3, §5.1, §5.2, §5.4, §6). */
static void test_tls13_refused_records_get_their_alerts(void **state)
{
    (void)state;
    static const int want[] = { 10, 22, 22, 47, 50, 10, 10, 10, 10, 50, 10, 22 };
    server_start(NULL);
    SSL_CTX *cc = raw_ctx();
    for (int i = 0; i < (int)(sizeof want / sizeof want[0]); i++) {
        int a = alert_for(cc, i);
        print_message("case %d: alert %d (want %d)\n", i, a, want[i]);
        assert_int_equal(a, want[i]);
    }
    assert_int_equal(T.events[GW_TLS_ERR_RECORD], (int)(sizeof want / sizeof want[0]));
    assert_int_equal(T.n_request, 0);
    SSL_CTX_free(cc);
    server_stop();
}

/* Records that are odd but legal: one sent a byte at a time, empty and 1-byte records,
 * padding, a KeyUpdate split across records (§5.1) and one a byte per record. */
static void test_tls13_odd_but_legal_records(void **state)
{
    (void)state;
    static unsigned char inner[2048];
    server_start(NULL);
    SSL_CTX *cc = raw_ctx();
    raw *x = &RA;
    raw_open(x, cc);
    /* one record, one byte per send, the server's loop turning in between */
    uv_buf_t b = uv_buf_init((char *)GET, (unsigned)strlen(GET));
    int l = gw_tls_rec_seal(&x->r, GW_TLS_CT_APPDATA, &b, 1, strlen(GET), (char *)wire);
    for (int i = 0; i < l; i++) {
        raw_send(x, wire + i, 1);
        srv_pump();
    }
    raw_until(x, 2000, "\r\n\r\nok");
    assert_int_equal(n_ok(x), 1);
    /* 20 empty records, then the request in 1-byte records, all in one send */
    size_t at = 0;
    for (int i = 0; i < 20; i++) {
        b = uv_buf_init((char *)"", 0);
        at += (size_t)gw_tls_rec_seal(&x->r, GW_TLS_CT_APPDATA, &b, 1, 0, (char *)wire + at);
    }
    for (size_t i = 0; i < strlen(GET); i++) {
        b = uv_buf_init((char *)GET + i, 1);
        at += (size_t)gw_tls_rec_seal(&x->r, GW_TLS_CT_APPDATA, &b, 1, 1, (char *)wire + at);
    }
    raw_send(x, wire, at);
    PUMP_UNTIL(n_ok(x) == 2 || (raw_until(x, 10, NULL), 0), 2000);
    assert_int_equal(n_ok(x), 2);
    /* padding: 1,000 zeros after the type */
    memset(inner, 0, sizeof inner);
    memcpy(inner, GET, strlen(GET));
    inner[strlen(GET)] = GW_TLS_CT_APPDATA;
    send_inner(x, inner, strlen(GET) + 1 + 1000);
    PUMP_UNTIL(n_ok(x) == 3 || (raw_until(x, 10, NULL), 0), 2000);
    assert_int_equal(n_ok(x), 3);
    /* KeyUpdate(update_requested) in two records, then a request under the next key: the
     * server steps its key and answers with its own KeyUpdate first */
    send_rec(x, GW_TLS_CT_HANDSHAKE, "\x18\x00\x00", 3);
    send_rec(x, GW_TLS_CT_HANDSHAKE, "\x01\x01", 2);
    assert_int_equal(gw_tls_rec_next_key(&x->r, &x->r.wr), 0);
    send_rec(x, GW_TLS_CT_APPDATA, GET, strlen(GET));
    PUMP_UNTIL(n_ok(x) == 4 || (raw_until(x, 10, NULL), 0), 2000);
    assert_int_equal(n_ok(x), 4);
    assert_int_equal(x->n_ku, 1);
    /* ... and one byte per record */
    for (int i = 0; i < 5; i++)
        send_rec(x, GW_TLS_CT_HANDSHAKE, "\x18\x00\x00\x01\x01" + i, 1);
    assert_int_equal(gw_tls_rec_next_key(&x->r, &x->r.wr), 0);
    send_rec(x, GW_TLS_CT_APPDATA, GET, strlen(GET));
    PUMP_UNTIL(n_ok(x) == 5 || (raw_until(x, 10, NULL), 0), 2000);
    assert_int_equal(n_ok(x), 5);
    assert_int_equal(x->n_ku, 2);
    assert_int_equal(x->alert, -1);
    raw_close(x);
    assert_int_equal(T.events[GW_TLS_ERR_RECORD], 0);
    SSL_CTX_free(cc);
    server_stop();
}

/* N KeyUpdates (update_requested when ASK) in one send, then (when GET) a request under the
 * key they lead to. */
static void send_key_updates(raw *x, int n, int ask, int get)
{
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        uv_buf_t b = uv_buf_init(ask ? "\x18\x00\x00\x01\x01" : "\x18\x00\x00\x01\x00", 5);
        at += (size_t)gw_tls_rec_seal(&x->r, GW_TLS_CT_HANDSHAKE, &b, 1, 5, (char *)wire + at);
        assert_int_equal(gw_tls_rec_next_key(&x->r, &x->r.wr), 0);
    }
    if (get) {
        uv_buf_t b = uv_buf_init((char *)GET, (unsigned)strlen(GET));
        at += (size_t)gw_tls_rec_seal(&x->r, GW_TLS_CT_APPDATA, &b, 1, strlen(GET), (char *)wire + at);
    }
    raw_send(x, wire, at);
}

/* KeyUpdates in a row: requests read together get one answer; 32 in a row are taken, the
 * 33rd with no data between ends the connection (unexpected_message, BoringSSL's cap). */
static void test_tls13_key_update_flood(void **state)
{
    (void)state;
    server_start(NULL);
    SSL_CTX *cc = raw_ctx();
    raw *x = &RA;
    raw_open(x, cc);
    send_key_updates(x, 32, 1, 1);
    raw_until(x, 2000, "\r\n\r\nok");
    assert_int_equal(n_ok(x), 1);
    assert_int_equal(x->n_ku, 1); /* one answer for the 32 requests */
    send_key_updates(x, 32, 1, 1); /* the request before reset the count */
    PUMP_UNTIL(n_ok(x) == 2 || (raw_until(x, 10, NULL), 0), 2000);
    assert_int_equal(n_ok(x), 2);
    assert_int_equal(x->n_ku, 2);
    send_key_updates(x, 33, 0, 0);
    raw_until(x, 2000, NULL);
    assert_int_equal(x->alert_level, 2);
    assert_int_equal(x->alert, 10);
    assert_int_equal(x->n_ku, 2);
    raw_close(x);
    assert_int_equal(T.events[GW_TLS_ERR_RECORD], 1);
    SSL_CTX_free(cc);
    server_stop();
}

/* The server moves to its next write key before gw_tls_rec_rekey_at records (RFC 8446 §5.5;
 * lowered to 3 here): a 7-record answer goes with two KeyUpdates of its own, read by the
 * raw client and by OpenSSL's. */
static void test_tls13_rekey_before_the_record_limit(void **state)
{
    (void)state;
    gw_tls_rec_rekey_at = 3;
    server_start(NULL);
    SSL_CTX *cc = raw_ctx();
    raw *x = &RA;
    raw_open(x, cc);
    send_rec(x, GW_TLS_CT_APPDATA, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n", 30);
    uint64_t end = now_ms() + 3000;
    while (now_ms() < end && x->app_len < BIG_LEN && x->alert < 0 && !x->closed)
        raw_until(x, 10, NULL);
    assert_true(x->app_len > BIG_LEN);
    assert_memory_equal(x->app + x->app_len - BIG_LEN, T.big, BIG_LEN);
    assert_int_equal(x->n_ku, 2);
    raw_close(x);
    static char body[BIG_LEN];
    cli k = cli_open(cc);
    for (int i = 0; i < 3; i++) {
        memset(body, 0, sizeof body);
        assert_int_equal(cli_get(&k, "/big", body, sizeof body), BIG_LEN);
        assert_memory_equal(body, T.big, BIG_LEN);
    }
    cli_close(&k);
    gw_tls_rec_rekey_at = 1ull << 24;
    assert_int_equal(T.events[GW_TLS_ERR_RECORD], 0);
    SSL_CTX_free(cc);
    server_stop();
}

/* Two ends of one connection with fresh secrets: P the server's side, Q the client's. */
static void rec_pair(gw_tls_rec *p, gw_tls_rec *q)
{
    unsigned char a[32], b[32];
    for (int i = 0; i < 32; i++) {
        a[i] = (unsigned char)rand();
        b[i] = (unsigned char)rand();
    }
    assert_int_equal(gw_tls_rec_init13(p, NID_aes_128_gcm, NID_sha256, a, b, 32, 0, 0), 0);
    assert_int_equal(gw_tls_rec_init13(q, NID_aes_128_gcm, NID_sha256, b, a, 32, 0, 0), 0);
}

static int seal_str(gw_tls_rec *r, const char *s, char *out)
{
    uv_buf_t b = uv_buf_init((char *)s, (unsigned)strlen(s));
    return gw_tls_rec_seal(r, GW_TLS_CT_APPDATA, &b, 1, strlen(s), out);
}

static int open_ok(gw_tls_rec *r, char *rec, int len)
{
    uint8_t type;
    size_t po, pl;
    return len > 0 && gw_tls_rec_open(r, rec, (size_t)len, &type, &po, &pl) == 0;
}

/* The thread's cached cipher contexts: a direction with no key (key id 0) never borrows
 * the key a context still holds from a failed record, and a cleared connection's key is not
 * kept in them (a key id it had, forged onto another key, gets that key, not the old one);
 * sequence numbers never wrap (RFC 8446 §5.3). */
static void test_record_keys_and_sequence_limits(void **state)
{
    (void)state;
    gw_tls_rec p, q, z, b, c;
    char r1[128], r2[128], r3[128];
    rec_pair(&p, &q);
    assert_true(open_ok(&p, r1, seal_str(&q, "one", r1)));
    int l2 = seal_str(&q, "two", r2);
    memcpy(r3, r2, sizeof r3);
    r3[10] ^= 1;
    assert_false(open_ok(&p, r3, l2)); /* the context keeps p's key, marked as no key */
    z = p;
    memset(z.rd.key, 0, sizeof z.rd.key);
    z.rd.key_id = 0; /* as cleared */
    assert_false(open_ok(&z, r2, l2));
    assert_true(open_ok(&p, r2, l2));
    gw_tls_rec_clear(&p);
    gw_tls_rec_clear(&q);
    gw_tls_rec_clear(&z);

    rec_pair(&p, &q);
    assert_true(open_ok(&p, r1, seal_str(&q, "one", r1))); /* the seal context: q's key */
    uint64_t gone = q.wr.key_id;
    gw_tls_rec_clear(&q);
    rec_pair(&b, &c); /* c reads what b writes */
    b.wr.key_id = gone;
    assert_true(open_ok(&c, r1, seal_str(&b, "three", r1)));
    gw_tls_rec_clear(&p);
    gw_tls_rec_clear(&b);
    gw_tls_rec_clear(&c);

    rec_pair(&p, &q);
    q.wr.seq = p.rd.seq = UINT64_MAX - 1;
    assert_true(open_ok(&p, r1, seal_str(&q, "last", r1)));
    assert_int_equal(seal_str(&q, "wrapped", r1), -1);
    q.wr.seq = UINT64_MAX; /* made here, as seal refuses it */
    assert_false(open_ok(&p, r1, (int)seal_inner_dir(&q.wr, (const unsigned char *)"x\x17", 2,
                                                     (unsigned char *)r1)));
    gw_tls_rec_clear(&p);
    gw_tls_rec_clear(&q);
    gw_tls_rec_thread_cleanup();
}

/* Reads K until the server's close_notify (1) or anything else ends it (0); what came is in
 * BUF, its length *LEN. */
static int read_to_close_notify(cli *k, char *buf, size_t cap, size_t *len)
{
    *len = 0;
    uint64_t end = now_ms() + 3000;
    while (now_ms() < end) {
        int r = SSL_read(k->ssl, buf + *len, (int)(cap - *len));
        if (r > 0) {
            *len += (size_t)r;
            continue;
        }
        int e = SSL_get_error(k->ssl, r);
        if (e == SSL_ERROR_ZERO_RETURN)
            return 1;
        if (e != SSL_ERROR_WANT_READ) {
            ERR_clear_error();
            return 0;
        }
        srv_pump();
        usleep(200);
    }
    return 0;
}

/* The client's close_notify after its request (RFC 8446 §6.1): the answer goes out, then
 * the server's close_notify, then the close, with our records (TLS 1.3, 1.2) and OpenSSL's
 * (CCM). An answer under way (GET /later) is awaited in TLS 1.3, where close_notify closes
 * the client's direction only; in TLS 1.2 it ends the connection (RFC 5246 §7.2.1). */
static void close_notify_answered(int version, const char *suite)
{
    server_start(version == TLS1_3_VERSION ? suite : NULL);
    SSL_CTX *cc = version == TLS1_3_VERSION ? client_ctx(version, suite) : client_ctx12(suite);
    char buf[4096];
    size_t len;
    cli k = cli_open(cc);
    cli_write(&k, GET, (int)strlen(GET));
    assert_int_equal(SSL_shutdown(k.ssl), 0); /* close_notify sent, none received yet */
    assert_int_equal(read_to_close_notify(&k, buf, sizeof buf, &len), 1);
    assert_non_null(memmem(buf, len, "\r\n\r\nok", 6));
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 2000));
    cli_close(&k);

    k = cli_open(cc);
    const char later[] = "GET /later HTTP/1.1\r\nHost: x\r\n\r\n";
    cli_write(&k, later, (int)strlen(later));
    assert_true(PUMP_UNTIL(T.later != NULL, 2000));
    assert_int_equal(SSL_shutdown(k.ssl), 0);
    PUMP_UNTIL(0, 100); /* the server reads the close_notify */
    if (version == TLS1_3_VERSION) {
        assert_non_null(T.later);
        gw_response_simple(T.later, 200, "text/plain", "ok", 2, NULL);
        T.later = NULL;
    } else {
        assert_null(T.later); /* aborted */
    }
    assert_int_equal(read_to_close_notify(&k, buf, sizeof buf, &len), 1);
    if (version == TLS1_3_VERSION)
        assert_non_null(memmem(buf, len, "\r\n\r\nok", 6));
    else
        assert_int_equal(len, 0);
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 2000));
    cli_close(&k);
    assert_int_equal(T.events[GW_TLS_ERR_RECORD], 0);
    SSL_CTX_free(cc);
    server_stop();
}

static void test_client_close_notify_answered(void **state)
{
    (void)state;
    close_notify_answered(TLS1_3_VERSION, "TLS_AES_128_GCM_SHA256");
    close_notify_answered(TLS1_3_VERSION, "TLS_AES_128_CCM_SHA256");
    close_notify_answered(TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256");
}

/* ---- TLS 1.2: raw records, the session-id cache, max_fragment_length --------------------- */

/* A TLS 1.2 connection of CC (resuming SESS when not NULL) whose records are made here from
 * the client's session: the keys of gw_tls_rec_init12 with the directions swapped. */
static void raw12_open(raw *x, SSL_CTX *cc, SSL_SESSION *sess)
{
    memset(x, 0, sizeof *x);
    x->alert = -1;
    x->k = cli_open_session(cc, sess);
    const SSL_CIPHER *ci = SSL_get_current_cipher(x->k.ssl);
    unsigned char master[48], cr[32], sr[32];
    assert_int_equal(SSL_SESSION_get_master_key(SSL_get0_session(x->k.ssl), master, 48), 48);
    SSL_get_client_random(x->k.ssl, cr, 32);
    SSL_get_server_random(x->k.ssl, sr, 32);
    assert_int_equal(gw_tls_rec_init12(&x->r, SSL_CIPHER_get_cipher_nid(ci),
                                       EVP_MD_get_type(SSL_CIPHER_get_handshake_digest(ci)),
                                       master, 48, cr, sr, 1, 1), 0);
    gw_tls_rec_dir d = x->r.rd;
    x->r.rd = x->r.wr;
    x->r.wr = d;
}

/* A TLS 1.2 ChaCha20-Poly1305 record of TYPE holding P (N bytes, any length), sent. */
static void send_chacha12(raw *x, uint8_t type, const unsigned char *p, size_t n)
{
    unsigned char nonce[12], aad[13];
    uint64_t seq = x->r.wr.seq++;
    memcpy(nonce, x->r.wr.iv, 12);
    for (int i = 0; i < 8; i++) {
        nonce[11 - i] ^= (unsigned char)(seq >> (8 * i));
        aad[7 - i] = (unsigned char)(seq >> (8 * i));
    }
    unsigned char h[5] = { type, 3, 3, (unsigned char)((n + 16) >> 8), (unsigned char)(n + 16) };
    memcpy(aad + 8, h, 3);
    aad[11] = (unsigned char)(n >> 8);
    aad[12] = (unsigned char)n;
    memcpy(wire, h, 5);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int l;
    assert_true(EVP_EncryptInit_ex(c, EVP_chacha20_poly1305(), NULL, x->r.wr.key, nonce));
    assert_true(EVP_EncryptUpdate(c, NULL, &l, aad, 13));
    assert_true(EVP_EncryptUpdate(c, wire + 5, &l, p, (int)n));
    assert_true(EVP_EncryptFinal_ex(c, wire + 5 + l, &l));
    assert_true(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, 16, wire + 5 + n));
    EVP_CIPHER_CTX_free(c);
    raw_send(x, wire, 5 + n + 16);
}

static int alert12_for(SSL_CTX *cc, int kase)
{
    static unsigned char big[GW_TLS_REC_MAX_PLAIN + 8];
    raw *x = &RA;
    raw12_open(x, cc, NULL);
    switch (kase) {
    case 0: /* 2^14 + 8 bytes of plaintext in a record short enough to pass its header */
        memset(big, 'A', sizeof big);
        send_chacha12(x, GW_TLS_CT_APPDATA, big, sizeof big);
        break;
    case 1: { /* a record version other than TLS 1.2's */
        uv_buf_t b = uv_buf_init((char *)GET, (unsigned)strlen(GET));
        int l = gw_tls_rec_seal(&x->r, GW_TLS_CT_APPDATA, &b, 1, strlen(GET), (char *)wire);
        wire[2] = 1;
        raw_send(x, wire, (size_t)l);
        break;
    }
    case 2: /* an alert level neither warning nor fatal */
        send_rec(x, GW_TLS_CT_ALERT, "\x03\x28", 2);
        break;
    case 3: /* 6 warnings in a row */
        for (int i = 0; i < 6; i++)
            send_rec(x, GW_TLS_CT_ALERT, "\x01\x64", 2);
        break;
    case 4: /* 33 empty records in a row */
        for (int i = 0; i < 33; i++)
            send_rec(x, GW_TLS_CT_APPDATA, "", 0);
        break;
    }
    raw_until(x, 2000, NULL);
    int a = x->alert_level == 2 ? x->alert : -1;
    raw_close(x);
    return a;
}

/* TLS 1.2 records refused with the alert RFC 5246 names, and the caps OpenSSL has; a fatal
 * user_canceled closes; renegotiation gets handshake_failure (as with OpenSSL's records). */
static void test_tls12_refused_records_get_their_alerts(void **state)
{
    (void)state;
    static const int want[] = { 22, 70, 47, 10, 10 };
    server_start(NULL);
    SSL_CTX *cc = client_ctx12("ECDHE-ECDSA-CHACHA20-POLY1305");
    for (int i = 0; i < (int)(sizeof want / sizeof want[0]); i++) {
        int a = alert12_for(cc, i);
        print_message("case %d: alert %d (want %d)\n", i, a, want[i]);
        assert_int_equal(a, want[i]);
    }
    raw *x = &RA; /* 5 warnings, a fatal user_canceled: closed, the GET after it unread */
    raw12_open(x, cc, NULL);
    for (int i = 0; i < 5; i++)
        send_rec(x, GW_TLS_CT_ALERT, "\x01\x64", 2);
    send_rec(x, GW_TLS_CT_APPDATA, GET, strlen(GET));
    raw_until(x, 2000, "\r\n\r\nok");
    assert_int_equal(n_ok(x), 1);
    send_rec(x, GW_TLS_CT_ALERT, "\x02\x5a", 2);
    send_rec(x, GW_TLS_CT_APPDATA, GET, strlen(GET));
    raw_until(x, 2000, NULL);
    assert_true(x->closed);
    assert_int_equal(n_ok(x), 1);
    raw_close(x);
    cli k = cli_open(cc); /* renegotiation */
    assert_int_equal(cli_get(&k, "/", NULL, 0), 2);
    assert_int_equal(SSL_renegotiate(k.ssl), 1);
    int r = 0;
    PUMP_UNTIL((r = SSL_do_handshake(k.ssl)) == 1 || SSL_get_error(k.ssl, r) != SSL_ERROR_WANT_READ,
               2000);
    assert_int_equal(ERR_GET_REASON(ERR_peek_last_error()), SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE);
    ERR_clear_error();
    cli_close(&k);
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 2000));
    SSL_CTX_free(cc);
    server_stop();
}

/* A client that negotiated max_fragment_length (RFC 6066 §4) gets records no longer than
 * that: OpenSSL keeps such a connection's records. */
static void test_max_fragment_length_respected(void **state)
{
    (void)state;
    static char body[BIG_LEN];
    for (int v = 0; v < 2; v++) {
        server_start(NULL);
        SSL_CTX *cc = client_ctx(v ? TLS1_3_VERSION : TLS1_2_VERSION, NULL);
        assert_int_equal(SSL_CTX_set_tlsext_max_fragment_length(cc, TLSEXT_max_fragment_length_512), 1);
        cli k = cli_open(cc);
        memset(body, 0, sizeof body);
        assert_int_equal(cli_get(&k, "/big", body, sizeof body), BIG_LEN);
        assert_memory_equal(body, T.big, BIG_LEN);
        cli_close(&k);
        SSL_CTX_free(cc);
        server_stop();
    }
}

/* 1 when CC resumes SESS (a copy: a client SSL freed without close_notify spoils its own). */
static int resumes(SSL_CTX *cc, SSL_SESSION *sess)
{
    SSL_SESSION *copy = SSL_SESSION_dup(sess);
    cli k = cli_open_session(cc, copy);
    int r = SSL_session_reused(k.ssl);
    assert_int_equal(cli_get(&k, "/", NULL, 0), 2);
    cli_close(&k);
    SSL_SESSION_free(copy);
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 2000));
    return r;
}

/* The TLS 1.2 session-id cache (RFC 5246 §7.2): a ticket-resuming client naming another
 * client's session id cannot make a failure of its own forget that session; a fatal alert
 * the client sends forgets the connection's session; a connection the client ends with
 * close_notify keeps it, also on OpenSSL's records (CBC). */
static void test_tls12_session_cache_and_alerts(void **state)
{
    (void)state;
    cache_size = 64;
    server_start(NULL);
    cache_size = 0;
    SSL_CTX *byid = client_ctx12("ECDHE-ECDSA-AES128-GCM-SHA256");
    SSL_CTX_set_options(byid, SSL_OP_NO_TICKET);
    SSL_CTX *tix = client_ctx12("ECDHE-ECDSA-AES128-GCM-SHA256");
    cli k = cli_open(byid);
    assert_int_equal(cli_get(&k, "/", NULL, 0), 2);
    SSL_SESSION *victim = SSL_SESSION_dup(SSL_get0_session(k.ssl));
    cli_close(&k);
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 2000));
    k = cli_open(tix);
    assert_int_equal(cli_get(&k, "/", NULL, 0), 2);
    SSL_SESSION *att = SSL_SESSION_dup(SSL_get0_session(k.ssl));
    cli_close(&k);
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 2000));
    unsigned idl;
    const unsigned char *id = SSL_SESSION_get_id(victim, &idl);
    assert_int_equal(SSL_SESSION_set1_id(att, id, idl), 1);
    k = cli_open_session(tix, att);
    assert_int_equal(SSL_session_reused(k.ssl), 1);
    send_forged_record(tix, &k);
    cli_close(&k);
    assert_int_equal(resumes(byid, victim), 1);

    raw *x = &RA; /* a resumed connection the client ends with a fatal alert */
    SSL_SESSION *copy = SSL_SESSION_dup(victim);
    raw12_open(x, byid, copy);
    assert_int_equal(SSL_session_reused(x->k.ssl), 1);
    send_rec(x, GW_TLS_CT_ALERT, "\x02\x28", 2);
    raw_until(x, 2000, NULL);
    assert_true(x->closed);
    raw_close(x);
    SSL_SESSION_free(copy);
    assert_int_equal(resumes(byid, victim), 0);
    SSL_SESSION_free(victim);
    SSL_SESSION_free(att);
    SSL_CTX_free(tix);
    SSL_CTX_free(byid);

    SSL_CTX *cbc = client_ctx12("ECDHE-ECDSA-AES128-SHA256"); /* OpenSSL's records */
    SSL_CTX_set_options(cbc, SSL_OP_NO_TICKET);
    k = cli_open(cbc);
    cli_write(&k, GET, (int)strlen(GET));
    assert_int_equal(SSL_shutdown(k.ssl), 0);
    char buf[1024];
    size_t len;
    assert_int_equal(read_to_close_notify(&k, buf, sizeof buf, &len), 1);
    SSL_SESSION *s = SSL_get1_session(k.ssl);
    cli_close(&k);
    assert_true(PUMP_UNTIL(gw_server_active(T.s) == 0, 2000));
    assert_int_equal(resumes(cbc, s), 1);
    SSL_SESSION_free(s);
    SSL_CTX_free(cbc);
    server_stop();
}

int main(void)
{
    if (harness_setup() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tls13_refused_records_get_their_alerts),
        cmocka_unit_test(test_tls13_odd_but_legal_records),
        cmocka_unit_test(test_tls13_key_update_flood),
        cmocka_unit_test(test_tls13_rekey_before_the_record_limit),
        cmocka_unit_test(test_record_keys_and_sequence_limits),
        cmocka_unit_test(test_client_close_notify_answered),
        cmocka_unit_test(test_tls12_refused_records_get_their_alerts),
        cmocka_unit_test(test_max_fragment_length_respected),
        cmocka_unit_test(test_tls12_session_cache_and_alerts),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    harness_teardown();
    return r;
}
