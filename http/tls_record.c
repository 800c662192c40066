/* tls_record.c — see tls_record.h. */
#include "http/tls_record.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/obj_mac.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

typedef struct aead {
    int nid;
    const char *name;    /* EVP name */
    uint8_t key_len;
    uint8_t iv12_len;    /* TLS 1.2: the IV from the key block (GCM: a 4-byte salt) */
    uint8_t explicit12;  /* TLS 1.2: explicit nonce bytes in each record (GCM: 8) */
} aead;

static const aead AEADS[] = {
    { NID_aes_128_gcm, "AES-128-GCM", 16, 4, 8 },
    { NID_aes_256_gcm, "AES-256-GCM", 32, 4, 8 },
    { NID_chacha20_poly1305, "ChaCha20-Poly1305", 32, 12, 0 },
};
#define N_AEADS (sizeof AEADS / sizeof AEADS[0])

static const struct { int nid; const char *name; uint8_t len; } MDS[] = {
    { NID_sha256, "SHA256", 32 },
    { NID_sha384, "SHA384", 48 },
};
#define N_MDS (sizeof MDS / sizeof MDS[0])

static EVP_CIPHER *ciphers[N_AEADS];
static EVP_MD *mds[N_MDS];
static EVP_KDF *prf; /* TLS1-PRF, TLS 1.2's key expansion */
static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;
static atomic_uint_fast64_t next_key_id = 1; /* 0 is no key: never matched (keyed) */

uint64_t gw_tls_rec_rekey_at = 1ull << 24;

/* A cipher context per AEAD and direction (0 open, 1 seal) on each thread, and whose key it
 * holds: keyed again only when the record is another connection's (or key's). */
static _Thread_local struct {
    EVP_CIPHER_CTX *ctx;
    uint64_t key_id;
} tc[N_AEADS][2];
static _Thread_local EVP_MD_CTX *md_ctx; /* HKDF's hashes on this thread */

static void fetch(void)
{
    for (size_t i = 0; i < N_AEADS; i++)
        ciphers[i] = EVP_CIPHER_fetch(NULL, AEADS[i].name, NULL);
    for (size_t i = 0; i < N_MDS; i++)
        mds[i] = EVP_MD_fetch(NULL, MDS[i].name, NULL);
    prf = EVP_KDF_fetch(NULL, "TLS1-PRF", NULL);
}

/* The table indexes of CIPHER_NID and MD_NID, or -1. */
static int lookup(int cipher_nid, int md_nid, int *a, int *m)
{
    pthread_once(&fetch_once, fetch);
    *a = *m = -1;
    for (size_t i = 0; i < N_AEADS; i++)
        if (AEADS[i].nid == cipher_nid && ciphers[i])
            *a = (int)i;
    for (size_t i = 0; i < N_MDS; i++)
        if (MDS[i].nid == md_nid && mds[i])
            *m = (int)i;
    return *a < 0 || *m < 0 ? -1 : 0;
}

int gw_tls_rec_supported(int cipher_nid, int md_nid)
{
    int a, m;
    return lookup(cipher_nid, md_nid, &a, &m) == 0;
}

/* HKDF-Expand-Label(secret, label, "", len) (RFC 8446 §7.1), len <= Hash.length: one HKDF
 * block, T(1) = HMAC(secret, HkdfLabel || 0x01), the HMAC spelled out over a reused digest
 * context (OpenSSL 3.0's HMAC() fetches and frees a MAC each call: 4x the instructions). */
static int expand_label(int m, const unsigned char *secret, const char *label,
                        unsigned char *out, size_t len)
{
    unsigned char pad[128], t[EVP_MAX_MD_SIZE];
    unsigned char info[64];
    size_t ll = strlen(label), n = 0, hl = MDS[m].len;
    size_t block = (size_t)EVP_MD_get_block_size(mds[m]); /* 64 or 128: > hl, no key hash */
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
    if (EVP_DigestInit_ex(md_ctx, mds[m], NULL) && EVP_DigestUpdate(md_ctx, pad, block) &&
        EVP_DigestUpdate(md_ctx, info, n) && EVP_DigestFinal_ex(md_ctx, t, &tl)) {
        memset(pad, 0x5c, block);
        for (size_t i = 0; i < hl; i++)
            pad[i] ^= secret[i];
        ok = EVP_DigestInit_ex(md_ctx, mds[m], NULL) && EVP_DigestUpdate(md_ctx, pad, block) &&
             EVP_DigestUpdate(md_ctx, t, tl) && EVP_DigestFinal_ex(md_ctx, t, &tl);
    }
    if (ok)
        memcpy(out, t, len);
    OPENSSL_cleanse(pad, sizeof pad);
    OPENSSL_cleanse(t, sizeof t);
    return ok ? 0 : -1;
}

static int derive13(const gw_tls_rec *r, gw_tls_rec_dir *d)
{
    d->key_id = atomic_fetch_add_explicit(&next_key_id, 1, memory_order_relaxed);
    if (expand_label(r->md, d->secret, "key", d->key, AEADS[r->aead].key_len) < 0 ||
        expand_label(r->md, d->secret, "iv", d->iv, sizeof d->iv) < 0)
        return -1;
    return 0;
}

int gw_tls_rec_init13(gw_tls_rec *r, int cipher_nid, int md_nid,
                      const unsigned char *client_secret, const unsigned char *server_secret,
                      size_t secret_len, uint64_t read_seq, uint64_t write_seq)
{
    int a, m;
    memset(r, 0, sizeof *r);
    if (lookup(cipher_nid, md_nid, &a, &m) < 0 || secret_len != MDS[m].len)
        return -1;
    r->aead = (uint8_t)a;
    r->md = (uint8_t)m;
    r->tls13 = 1;
    memcpy(r->rd.secret, client_secret, secret_len);
    memcpy(r->wr.secret, server_secret, secret_len);
    if (derive13(r, &r->rd) < 0 || derive13(r, &r->wr) < 0) {
        gw_tls_rec_clear(r);
        return -1;
    }
    r->rd.seq = read_seq;
    r->wr.seq = write_seq;
    return 0;
}

int gw_tls_rec_init12(gw_tls_rec *r, int cipher_nid, int md_nid, const unsigned char *master,
                      size_t master_len, const unsigned char client_random[32],
                      const unsigned char server_random[32], uint64_t read_seq,
                      uint64_t write_seq)
{
    int a, m;
    memset(r, 0, sizeof *r);
    if (lookup(cipher_nid, md_nid, &a, &m) < 0 || !prf || master_len != 48)
        return -1;
    r->aead = (uint8_t)a;
    r->md = (uint8_t)m;
    /* key_block = PRF(master_secret, "key expansion", server_random + client_random):
     * client_write_key, server_write_key, client_write_IV, server_write_IV (no MAC keys) */
    unsigned char kb[2 * 32 + 2 * 12];
    size_t kl = AEADS[a].key_len, il = AEADS[a].iv12_len;
    EVP_KDF_CTX *k = EVP_KDF_CTX_new(prf);
    OSSL_PARAM p[6];
    p[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)MDS[m].name, 0);
    p[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET, (void *)master, master_len);
    p[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, (void *)"key expansion", 13);
    p[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, (void *)server_random, 32);
    p[4] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, (void *)client_random, 32);
    p[5] = OSSL_PARAM_construct_end();
    int ok = k && EVP_KDF_derive(k, kb, 2 * kl + 2 * il, p) > 0;
    EVP_KDF_CTX_free(k);
    if (ok) {
        memcpy(r->rd.key, kb, kl);
        memcpy(r->wr.key, kb + kl, kl);
        memcpy(r->rd.iv, kb + 2 * kl, il);
        memcpy(r->wr.iv, kb + 2 * kl + il, il);
        r->rd.key_id = atomic_fetch_add_explicit(&next_key_id, 1, memory_order_relaxed);
        r->wr.key_id = atomic_fetch_add_explicit(&next_key_id, 1, memory_order_relaxed);
        r->rd.seq = read_seq;
        r->wr.seq = write_seq;
    }
    OPENSSL_cleanse(kb, sizeof kb);
    if (!ok)
        gw_tls_rec_clear(r);
    return ok ? 0 : -1;
}

int gw_tls_rec_next_key(gw_tls_rec *r, gw_tls_rec_dir *d)
{
    unsigned char next[48];
    size_t hl = MDS[r->md].len;
    if (!r->tls13 || expand_label(r->md, d->secret, "traffic upd", next, hl) < 0)
        return -1;
    memcpy(d->secret, next, hl);
    OPENSSL_cleanse(next, sizeof next);
    d->seq = 0;
    return derive13(r, d);
}

/* A thread's context still holding the key of D (a connection going away) is keyed with
 * zeros: a closed connection's key schedule does not outlive it in the cache. */
static void forget_cached(int a, int enc, const gw_tls_rec_dir *d)
{
    static const unsigned char zero[32];
    if (!d->key_id || !tc[a][enc].ctx || tc[a][enc].key_id != d->key_id)
        return;
    tc[a][enc].key_id = 0;
    (void)EVP_CipherInit_ex(tc[a][enc].ctx, NULL, NULL, zero, NULL, enc);
}

void gw_tls_rec_clear(gw_tls_rec *r)
{
    for (int enc = 0; enc < 2 && r->aead < N_AEADS; enc++) { /* (a check opens with wr's) */
        forget_cached(r->aead, enc, &r->rd);
        forget_cached(r->aead, enc, &r->wr);
    }
    OPENSSL_cleanse(r, sizeof *r);
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

/* The per-record nonce: IV xor the sequence number (TLS 1.3, TLS 1.2 ChaCha20), or the
 * salt followed by the explicit nonce EXPLICIT (TLS 1.2 GCM; the IV's last 8 bytes are 0). */
static void nonce_of(const gw_tls_rec_dir *d, uint64_t seq, const unsigned char *explicit_,
                     unsigned char nonce[12])
{
    memcpy(nonce, d->iv, 12);
    if (explicit_) {
        memcpy(nonce + 4, explicit_, 8);
        return;
    }
    for (int i = 0; i < 8; i++)
        nonce[11 - i] ^= (unsigned char)(seq >> (8 * i));
}

/* The thread's context for AEAD A with D's key, ready for NONCE. A direction with no key
 * (key_id 0: cleared, or never derived) gets none: a slot whose keying failed also says 0,
 * and still holds the key of whichever connection it last served. */
static EVP_CIPHER_CTX *keyed(int a, int enc, const gw_tls_rec_dir *d, const unsigned char *nonce)
{
    if (!d->key_id)
        return NULL;
    if (!tc[a][enc].ctx) {
        if (!(tc[a][enc].ctx = EVP_CIPHER_CTX_new()))
            return NULL;
        if (!EVP_CipherInit_ex(tc[a][enc].ctx, ciphers[a], NULL, NULL, NULL, enc)) {
            EVP_CIPHER_CTX_free(tc[a][enc].ctx);
            tc[a][enc].ctx = NULL;
            return NULL;
        }
        tc[a][enc].key_id = 0;
    }
    EVP_CIPHER_CTX *ctx = tc[a][enc].ctx;
    const unsigned char *key = tc[a][enc].key_id == d->key_id ? NULL : d->key;
    if (!EVP_CipherInit_ex(ctx, NULL, NULL, key, nonce, enc)) {
        tc[a][enc].key_id = 0;
        return NULL;
    }
    tc[a][enc].key_id = d->key_id;
    return ctx;
}

int gw_tls_rec_seal(gw_tls_rec *r, uint8_t type, const uv_buf_t *bufs, unsigned n,
                    size_t total, char *out)
{
    if (total > GW_TLS_REC_MAX_PLAIN || r->wr.seq == UINT64_MAX) /* no wrap (RFC 8446 §5.3) */
        return -1;
    unsigned char *o = (unsigned char *)out, nonce[12], aad[13];
    size_t ex = r->tls13 ? 0 : AEADS[r->aead].explicit12;
    size_t clen = ex + total + (r->tls13 ? 1 : 0) + 16;
    o[0] = r->tls13 ? GW_TLS_CT_APPDATA : type; /* TLS 1.3: every record looks like data */
    o[1] = 3;
    o[2] = 3;
    o[3] = (unsigned char)(clen >> 8);
    o[4] = (unsigned char)clen;
    unsigned char *p = o + 5;
    if (ex) {
        put64(p, r->wr.seq); /* the explicit nonce: the sequence number, unique per key */
        p += 8;
    }
    nonce_of(&r->wr, r->wr.seq, ex ? o + 5 : NULL, nonce);
    EVP_CIPHER_CTX *ctx = keyed(r->aead, 1, &r->wr, nonce);
    if (!ctx)
        return -1;
    int l;
    if (r->tls13) {
        if (!EVP_EncryptUpdate(ctx, NULL, &l, o, 5))
            goto fail;
    } else {
        put64(aad, r->wr.seq);
        aad[8] = type;
        aad[9] = 3;
        aad[10] = 3;
        aad[11] = (unsigned char)(total >> 8);
        aad[12] = (unsigned char)total;
        if (!EVP_EncryptUpdate(ctx, NULL, &l, aad, 13))
            goto fail;
    }
    for (unsigned i = 0; i < n; i++) {
        if (!bufs[i].len)
            continue;
        if (!EVP_EncryptUpdate(ctx, p, &l, (const unsigned char *)bufs[i].base, (int)bufs[i].len))
            goto fail;
        p += l;
    }
    if (r->tls13) {
        if (!EVP_EncryptUpdate(ctx, p, &l, &type, 1))
            goto fail;
        p += l;
    }
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
    tc[r->aead][1].key_id = 0;
    return -1;
}

/* Decrypts REC in place with D's key at SEQ: the plaintext (TLS 1.3: padded inner
 * plaintext) at rec + *off, its length returned; -1 when the tag does not verify. */
static int aead_open(const gw_tls_rec *r, const gw_tls_rec_dir *d, uint64_t seq,
                     unsigned char *rec, size_t len, size_t *off)
{
    size_t ex = r->tls13 ? 0 : AEADS[r->aead].explicit12;
    if (len < 5 + ex + 16 + (r->tls13 ? 1 : 0) ||
        len > 5 + (r->tls13 ? GW_TLS_REC_MAX_CIPHER13 : GW_TLS_REC_MAX_CIPHER12))
        return -1;
    unsigned char nonce[12], aad[13];
    size_t plen = len - 5 - ex - 16;
    nonce_of(d, seq, ex ? rec + 5 : NULL, nonce);
    EVP_CIPHER_CTX *ctx = keyed(r->aead, 0, d, nonce);
    if (!ctx)
        return -1;
    unsigned char *c = rec + 5 + ex, *tag = c + plen;
    int l, l2, ok;
    if (r->tls13) {
        ok = EVP_DecryptUpdate(ctx, NULL, &l, rec, 5);
    } else {
        put64(aad, seq);
        aad[8] = rec[0];
        aad[9] = rec[1];
        aad[10] = rec[2];
        aad[11] = (unsigned char)(plen >> 8);
        aad[12] = (unsigned char)plen;
        ok = EVP_DecryptUpdate(ctx, NULL, &l, aad, 13);
    }
    if (!ok || !EVP_DecryptUpdate(ctx, c, &l, c, (int)plen) ||
        !EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16, tag) ||
        EVP_DecryptFinal_ex(ctx, c + l, &l2) <= 0) {
        tc[r->aead][0].key_id = 0;
        return -1;
    }
    *off = 5 + ex;
    return (int)plen;
}

int gw_tls_rec_open(gw_tls_rec *r, char *rec, size_t len, uint8_t *type, size_t *plain_off,
                    size_t *plain_len)
{
    unsigned char *u = (unsigned char *)rec;
    size_t off;
    if (r->rd.seq == UINT64_MAX)
        return GW_TLS_REC_BAD_MAC;
    int n = aead_open(r, &r->rd, r->rd.seq, u, len, &off);
    if (n < 0)
        return GW_TLS_REC_BAD_MAC;
    r->rd.seq++;
    if (!r->tls13) {
        if (n > GW_TLS_REC_MAX_PLAIN)
            return GW_TLS_REC_OVERFLOW;
        *type = u[0];
    } else {
        /* the whole TLSInnerPlaintext, padding included, is at most 2^14 + 1 (§5.4) */
        if (n > GW_TLS_REC_MAX_PLAIN + 1)
            return GW_TLS_REC_OVERFLOW;
        while (n > 0 && u[off + (size_t)n - 1] == 0) /* padding (§5.4) */
            n--;
        if (n == 0)
            return GW_TLS_REC_NO_TYPE;
        *type = u[off + (size_t)n - 1];
        n--;
    }
    *plain_off = off;
    *plain_len = (size_t)n;
    return 0;
}

int gw_tls_rec_check(const gw_tls_rec *r, const gw_tls_rec_dir *d, uint64_t seq,
                     const char *rec, size_t len)
{
    unsigned char copy[1024];
    size_t off;
    if (len > sizeof copy)
        return 0;
    memcpy(copy, rec, len);
    int ok = aead_open(r, d, seq, copy, len, &off) >= 0;
    OPENSSL_cleanse(copy, len);
    return ok;
}

void gw_tls_rec_thread_cleanup(void)
{
    EVP_MD_CTX_free(md_ctx);
    md_ctx = NULL;
    for (size_t i = 0; i < N_AEADS; i++)
        for (int e = 0; e < 2; e++) {
            EVP_CIPHER_CTX_free(tc[i][e].ctx);
            tc[i][e].ctx = NULL;
            tc[i][e].key_id = 0;
        }
}
