/* tls_record.c — see tls_record.h. */
#include "http/tls_record.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

typedef struct suite {
    unsigned id;           /* IANA CipherSuite */
    const char *cipher;    /* EVP name */
    const char *md;        /* the suite's hash (HKDF) */
    uint8_t key_len, hash_len;
} suite;

static const suite SUITES[] = {
    { 0x1301, "AES-128-GCM", "SHA256", 16, 32 },
    { 0x1302, "AES-256-GCM", "SHA384", 32, 48 },
    { 0x1303, "ChaCha20-Poly1305", "SHA256", 32, 32 },
};
#define N_SUITES (sizeof SUITES / sizeof SUITES[0])

static EVP_CIPHER *ciphers[N_SUITES];
static EVP_MD *mds[N_SUITES];
static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;
static atomic_uint_fast64_t next_key_id = 1;

/* A cipher context per suite and direction (0 open, 1 seal) on each thread, and whose key
 * it holds: keyed again only when the record is another connection's (or key's). */
static _Thread_local struct {
    EVP_CIPHER_CTX *ctx;
    uint64_t key_id;
} tc[N_SUITES][2];

static void fetch(void)
{
    for (size_t i = 0; i < N_SUITES; i++) {
        ciphers[i] = EVP_CIPHER_fetch(NULL, SUITES[i].cipher, NULL);
        mds[i] = EVP_MD_fetch(NULL, SUITES[i].md, NULL);
    }
}

static int suite_of(unsigned id)
{
    pthread_once(&fetch_once, fetch);
    for (size_t i = 0; i < N_SUITES; i++)
        if (SUITES[i].id == id)
            return ciphers[i] && mds[i] ? (int)i : -1;
    return -1;
}

int gw_tls13_suite_supported(unsigned suite_id)
{
    return suite_of(suite_id) >= 0;
}

static _Thread_local EVP_MD_CTX *md_ctx; /* HKDF's hashes on this thread */

/* HKDF-Expand-Label(secret, label, "", len) (RFC 8446 §7.1), len <= Hash.length: one HKDF
 * block, T(1) = HMAC(secret, HkdfLabel || 0x01), the HMAC spelled out over a reused digest
 * context (OpenSSL 3.0's HMAC() fetches and frees a MAC each call: 4x the instructions). */
static int expand_label(int s, const unsigned char *secret, const char *label,
                        unsigned char *out, size_t len)
{
    unsigned char pad[128], t[EVP_MAX_MD_SIZE];
    unsigned char info[64];
    size_t ll = strlen(label), n = 0, hl = SUITES[s].hash_len;
    size_t block = (size_t)EVP_MD_get_block_size(mds[s]); /* 64 or 128: > hl, no key hash */
    unsigned tl = 0;
    int ok = 0;
    info[n++] = (unsigned char)(len >> 8);
    info[n++] = (unsigned char)len;
    info[n++] = (unsigned char)(6 + ll);
    memcpy(info + n, "tls13 ", 6);
    n += 6;
    memcpy(info + n, label, ll);
    n += ll;
    info[n++] = 0; /* empty context */
    info[n++] = 1; /* the block counter */
    if (len > hl || block > sizeof pad || (!md_ctx && !(md_ctx = EVP_MD_CTX_new())))
        return -1;
    memset(pad, 0x36, block);
    for (size_t i = 0; i < hl; i++)
        pad[i] ^= secret[i];
    if (EVP_DigestInit_ex(md_ctx, mds[s], NULL) && EVP_DigestUpdate(md_ctx, pad, block) &&
        EVP_DigestUpdate(md_ctx, info, n) && EVP_DigestFinal_ex(md_ctx, t, &tl)) {
        memset(pad, 0x5c, block);
        for (size_t i = 0; i < hl; i++)
            pad[i] ^= secret[i];
        ok = EVP_DigestInit_ex(md_ctx, mds[s], NULL) && EVP_DigestUpdate(md_ctx, pad, block) &&
             EVP_DigestUpdate(md_ctx, t, tl) && EVP_DigestFinal_ex(md_ctx, t, &tl);
    }
    if (ok)
        memcpy(out, t, len);
    OPENSSL_cleanse(pad, sizeof pad);
    OPENSSL_cleanse(t, sizeof t);
    return ok ? 0 : -1;
}

static int derive(int s, gw_tls13_dir *d)
{
    d->key_id = atomic_fetch_add_explicit(&next_key_id, 1, memory_order_relaxed);
    if (expand_label(s, d->secret, "key", d->key, SUITES[s].key_len) < 0 ||
        expand_label(s, d->secret, "iv", d->iv, sizeof d->iv) < 0)
        return -1;
    return 0;
}

int gw_tls13_init(gw_tls13 *r, unsigned suite_id, const unsigned char *client_secret,
                  const unsigned char *server_secret, size_t secret_len, uint64_t read_seq,
                  uint64_t write_seq)
{
    int s = suite_of(suite_id);
    memset(r, 0, sizeof *r);
    if (s < 0 || secret_len != SUITES[s].hash_len)
        return -1;
    r->suite = (uint8_t)s;
    memcpy(r->rd.secret, client_secret, secret_len);
    memcpy(r->wr.secret, server_secret, secret_len);
    if (derive(s, &r->rd) < 0 || derive(s, &r->wr) < 0) {
        gw_tls13_clear(r);
        return -1;
    }
    r->rd.seq = read_seq;
    r->wr.seq = write_seq;
    return 0;
}

int gw_tls13_next_key(gw_tls13 *r, gw_tls13_dir *d)
{
    unsigned char next[48];
    size_t hl = SUITES[r->suite].hash_len;
    if (expand_label(r->suite, d->secret, "traffic upd", next, hl) < 0)
        return -1;
    memcpy(d->secret, next, hl);
    OPENSSL_cleanse(next, sizeof next);
    d->seq = 0;
    return derive(r->suite, d);
}

void gw_tls13_clear(gw_tls13 *r)
{
    OPENSSL_cleanse(r, sizeof *r);
}

/* The thread's context for D's key, ready for the record at SEQ (nonce = IV xor seq). */
static EVP_CIPHER_CTX *keyed(int s, int enc, const gw_tls13_dir *d, uint64_t seq)
{
    unsigned char nonce[12];
    memcpy(nonce, d->iv, 12);
    for (int i = 0; i < 8; i++)
        nonce[11 - i] ^= (unsigned char)(seq >> (8 * i));
    if (!tc[s][enc].ctx) {
        if (!(tc[s][enc].ctx = EVP_CIPHER_CTX_new()))
            return NULL;
        if (!EVP_CipherInit_ex(tc[s][enc].ctx, ciphers[s], NULL, NULL, NULL, enc)) {
            EVP_CIPHER_CTX_free(tc[s][enc].ctx);
            tc[s][enc].ctx = NULL;
            return NULL;
        }
        tc[s][enc].key_id = 0;
    }
    EVP_CIPHER_CTX *ctx = tc[s][enc].ctx;
    const unsigned char *key = tc[s][enc].key_id == d->key_id ? NULL : d->key;
    if (!EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, enc)) {
        tc[s][enc].key_id = 0;
        return NULL;
    }
    tc[s][enc].key_id = d->key_id;
    return ctx;
}

int gw_tls13_seal(gw_tls13 *r, uint8_t type, const uv_buf_t *bufs, unsigned n, size_t total,
                  char *out)
{
    if (total > GW_TLS13_MAX_PLAIN)
        return -1;
    EVP_CIPHER_CTX *ctx = keyed(r->suite, 1, &r->wr, r->wr.seq);
    if (!ctx)
        return -1;
    unsigned char *o = (unsigned char *)out;
    size_t clen = total + 1 + 16;
    o[0] = GW_TLS13_CT_APPDATA; /* the outer type of every protected record */
    o[1] = 3;
    o[2] = 3;
    o[3] = (unsigned char)(clen >> 8);
    o[4] = (unsigned char)clen;
    int l;
    if (!EVP_EncryptUpdate(ctx, NULL, &l, o, 5))
        goto fail;
    unsigned char *p = o + 5;
    for (unsigned i = 0; i < n; i++) {
        if (!bufs[i].len)
            continue;
        if (!EVP_EncryptUpdate(ctx, p, &l, (const unsigned char *)bufs[i].base, (int)bufs[i].len))
            goto fail;
        p += l;
    }
    if (!EVP_EncryptUpdate(ctx, p, &l, &type, 1))
        goto fail;
    p += l;
    if (!EVP_EncryptFinal_ex(ctx, p, &l))
        goto fail;
    p += l;
    if (!EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, p))
        goto fail;
    p += 16;
    if ((size_t)(p - o) != 5 + clen)
        goto fail;
    r->wr.seq++;
    return (int)(5 + clen);
fail:
    tc[r->suite][1].key_id = 0;
    return -1;
}

/* Decrypts REC in place with D's key at SEQ. The padded inner plaintext length, or -1. */
static int aead_open(const gw_tls13 *r, const gw_tls13_dir *d, uint64_t seq, unsigned char *rec,
                     size_t len)
{
    if (len < 5 + 1 + 16 || len > 5 + GW_TLS13_MAX_CIPHER)
        return -1;
    EVP_CIPHER_CTX *ctx = keyed(r->suite, 0, d, seq);
    if (!ctx)
        return -1;
    size_t clen = len - 5 - 16;
    unsigned char *tag = rec + 5 + clen;
    int l, l2;
    if (!EVP_DecryptUpdate(ctx, NULL, &l, rec, 5) ||
        !EVP_DecryptUpdate(ctx, rec + 5, &l, rec + 5, (int)clen) ||
        !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16, tag) ||
        EVP_DecryptFinal_ex(ctx, rec + 5 + l, &l2) <= 0) {
        tc[r->suite][0].key_id = 0;
        return -1;
    }
    return (int)clen;
}

int gw_tls13_open(gw_tls13 *r, char *rec, size_t len, uint8_t *type, size_t *plain_len)
{
    unsigned char *u = (unsigned char *)rec;
    int n = aead_open(r, &r->rd, r->rd.seq, u, len);
    if (n < 0)
        return -1;
    r->rd.seq++;
    while (n > 0 && u[5 + n - 1] == 0) /* padding (§5.4) */
        n--;
    if (n == 0 || n - 1 > GW_TLS13_MAX_PLAIN)
        return -1;
    *type = u[5 + n - 1];
    *plain_len = (size_t)n - 1;
    return 0;
}

int gw_tls13_check(const gw_tls13 *r, const gw_tls13_dir *d, uint64_t seq, const char *rec,
                   size_t len)
{
    unsigned char copy[1024];
    if (len > sizeof copy)
        return 0;
    memcpy(copy, rec, len);
    int ok = aead_open(r, d, seq, copy, len) >= 0;
    OPENSSL_cleanse(copy, len);
    return ok;
}

void gw_tls13_thread_cleanup(void)
{
    EVP_MD_CTX_free(md_ctx);
    md_ctx = NULL;
    for (size_t i = 0; i < N_SUITES; i++)
        for (int e = 0; e < 2; e++) {
            EVP_CIPHER_CTX_free(tc[i][e].ctx);
            tc[i][e].ctx = NULL;
            tc[i][e].key_id = 0;
        }
}
