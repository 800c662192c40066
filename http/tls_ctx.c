/* tls_ctx.c — certificate snapshots (tls.h): load and check every pair of a listener, group
 * them into SSL_CTXs, the SNI and ALPN callbacks, session resumption settings and ticket
 * keys. Everything here runs at start-up or on a reload thread, except the callbacks, which
 * OpenSSL calls during a handshake on a worker loop (they only read the snapshot). */
#include "http/tls.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <openssl/core_names.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/tls_sni.h"
#include "http/tls_transport.h"

enum { KT_RSA, KT_EC, KT_OTHER, KT__N };

typedef struct cert_group {
    SSL_CTX *ctx;
    char names[1024];    /* the sorted name set: certificates with the same one share ctx */
    unsigned key_types;  /* 1 << KT_*: one certificate per key type */
    int first_cert;      /* index in certs[] of the first certificate of this group */
} cert_group;

struct gw_tls_ctx {
    atomic_int refs;
    gw_tls_conf conf;
    cert_group groups[GW_TLS_MAX_CERTS]; /* groups[0] serves clients without a match */
    int n_groups;
    gw_sni_table sni;
    gw_tls_cert_info certs[GW_TLS_MAX_CERTS];
    int n_certs;
    unsigned char ticket_secret[32];
    EVP_MD_CTX *certs_md; /* SHA-256 over the certificates, while loading */
};

/* tls_cache.c */
int gw__tls_cache_new(SSL *ssl, SSL_SESSION *sess, size_t size);
SSL_SESSION *gw__tls_cache_get(SSL *ssl, const unsigned char *id, int len, int *copy);
void gw__tls_cache_remove(SSL_CTX *ctx, SSL_SESSION *sess);

static int ex_index = -1; /* SSL_CTX ex_data slot: the snapshot a group belongs to */
static pthread_once_t ex_once = PTHREAD_ONCE_INIT;
static void ex_init(void)
{
    ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

/* ---- callbacks (on the worker loops, during handshakes) ------------------------------ */

int gw_tls_alpn_select(const unsigned char *wire, size_t wlen, const unsigned char *offer,
                       size_t olen, const unsigned char **out, unsigned char *outlen)
{
    /* our preference order decides, as nginx and HAProxy do */
    for (size_t i = 0; i < wlen; i += 1u + wire[i]) {
        size_t l = wire[i];
        if (i + 1 + l > wlen)
            return 0;
        for (size_t j = 0; j < olen; j += 1u + offer[j]) {
            size_t m = offer[j];
            if (j + 1 + m > olen)
                return 0;
            if (m == l && memcmp(offer + j + 1, wire + i + 1, l) == 0) {
                *out = offer + j + 1;
                *outlen = (unsigned char)m;
                return 1;
            }
        }
    }
    return 0;
}

static int alpn_cb(SSL *s, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    gw_tls_ctx *x = arg;
    (void)s;
    if (gw_tls_alpn_select(x->conf.alpn, x->conf.alpn_len, in, inlen, out, outlen))
        return SSL_TLSEXT_ERR_OK;
    return SSL_TLSEXT_ERR_ALERT_FATAL; /* RFC 7301 §3.2: no_application_protocol */
}

/* SNI: exact name, then wildcard, else the default group the connection started with. */
static int servername_cb(SSL *s, int *al, void *arg)
{
    gw_tls_ctx *x = arg;
    (void)al;
    const char *name = SSL_get_servername(s, TLSEXT_NAMETYPE_host_name);
    if (!name)
        return SSL_TLSEXT_ERR_NOACK;
    int g = gw_sni_lookup(&x->sni, name, strlen(name));
    if (g > 0 && !SSL_set_SSL_CTX(s, x->groups[g].ctx))
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    return SSL_TLSEXT_ERR_OK;
}

static void hmac_label(const unsigned char secret[32], uint64_t period, const char *label,
                       unsigned char out[32])
{
    unsigned char msg[64];
    size_t n = 0;
    memcpy(msg, "gw-ticket-", 10);
    n = 10;
    for (int i = 7; i >= 0; i--)
        msg[n++] = (unsigned char)(period >> (i * 8));
    size_t l = strlen(label);
    memcpy(msg + n, label, l);
    n += l;
    unsigned int outl = 32;
    HMAC(EVP_sha256(), secret, 32, msg, n, out, &outl);
}

void gw_tls_ticket_keys(const unsigned char secret[32], uint64_t period, unsigned char name[16],
                        unsigned char aes[32], unsigned char hmac[32])
{
    unsigned char n32[32];
    hmac_label(secret, period, "name", n32);
    memcpy(name, n32, 16);
    hmac_label(secret, period, "aes", aes);
    hmac_label(secret, period, "hmac", hmac);
}

/* The keys of the last periods asked for on this thread: three HMACs per ticket otherwise
 * (~60k instructions a full handshake). Keyed by the secret itself, not the snapshot's
 * address, which a later snapshot may reuse. */
typedef struct ticket_keys {
    int valid;
    uint64_t period;
    unsigned char secret[32], name[16], aes[32], hmac[32];
} ticket_keys;
static _Thread_local ticket_keys key_cache[3]; /* by period % 3: previous, current, next */

static const ticket_keys *period_keys(const gw_tls_ctx *x, uint64_t period)
{
    ticket_keys *k = &key_cache[period % 3];
    if (!k->valid || k->period != period || CRYPTO_memcmp(k->secret, x->ticket_secret, 32)) {
        gw_tls_ticket_keys(x->ticket_secret, period, k->name, k->aes, k->hmac);
        memcpy(k->secret, x->ticket_secret, 32);
        k->period = period;
        k->valid = 1;
    }
    return k;
}

void gw__tls_ticket_cache_clear(void)
{
    OPENSSL_cleanse(key_cache, sizeof key_cache);
}

static int ticket_init(EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, const unsigned char aes[32],
                       const unsigned char hmac[32], const unsigned char iv[16], int enc)
{
    OSSL_PARAM params[2];
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    if (!EVP_MAC_CTX_set_params(hctx, params) || !EVP_MAC_init(hctx, hmac, 32, NULL))
        return 0;
    return enc ? EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, aes, iv)
               : EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, aes, iv);
}

/* Session tickets: the key of the current period encrypts; the previous period's (and the
 * next one's, for clocks a little apart between instances) still decrypt, and a ticket
 * under an old key is renewed. Keys derive from the secret (gw_tls_ticket_keys). */
static int ticket_cb(SSL *s, unsigned char key_name[16], unsigned char iv[16],
                     EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    gw_tls_ctx *x = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), ex_index);
    if (!x)
        return -1;
    uint64_t rot = x->conf.ticket_rotate_s ? x->conf.ticket_rotate_s : 3600;
    uint64_t period = (uint64_t)time(NULL) / rot;
    if (enc) {
        const ticket_keys *k = period_keys(x, period);
        if (RAND_bytes(iv, 16) != 1)
            return -1;
        memcpy(key_name, k->name, 16);
        return ticket_init(cctx, hctx, k->aes, k->hmac, iv, 1) ? 1 : -1;
    }
    static const int64_t tries[] = { 0, -1, 1 };
    for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
        const ticket_keys *k = period_keys(x, period + (uint64_t)tries[i]);
        if (memcmp(k->name, key_name, 16) != 0)
            continue;
        if (!ticket_init(cctx, hctx, k->aes, k->hmac, iv, 0))
            return -1;
        /* 2 = valid, issue a fresh ticket: under an older key, and always in TLS 1.3,
         * whose clients use a ticket once (OpenSSL's do), so a resumed client needs the
         * next one to resume again */
        return tries[i] == 0 && SSL_version(s) < TLS1_3_VERSION ? 1 : 2;
    }
    return 0; /* unknown key: a full handshake */
}

/* ---- loading ------------------------------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *file, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    char ossl[256] = "";
    if (e)
        ERR_error_string_n(e, ossl, sizeof ossl);
    if (ossl[0])
        snprintf(err, errlen, "%s: %s (%s)", file, what, ossl);
    else
        snprintf(err, errlen, "%s: %s", file, what);
    ERR_clear_error();
}

static void name_text(X509_NAME *n, char *out, size_t outlen)
{
    out[0] = '\0';
    BIO *b = BIO_new(BIO_s_mem());
    if (!b)
        return;
    X509_NAME_print_ex(b, n, 0, XN_FLAG_RFC2253);
    int l = BIO_read(b, out, (int)outlen - 1);
    out[l > 0 ? l : 0] = '\0';
    BIO_free(b);
}

static time_t asn1_time(const ASN1_TIME *t)
{
    struct tm tm;
    if (!t || !ASN1_TIME_to_tm(t, &tm))
        return 0;
    return timegm(&tm);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The certificate's DNS names (SANs, else the CN) into info->sans, the sorted set into
 * key; each added to the SNI table for GROUP later. Returns the count, <0 on error. */
static int cert_names(X509 *x, char names[][GW_SNI_NAME_MAX + 1], int max)
{
    int n = 0;
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; gens && i < sk_GENERAL_NAME_num(gens) && n < max; i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        if (g->type != GEN_DNS)
            continue;
        const unsigned char *p = ASN1_STRING_get0_data(g->d.dNSName);
        int l = ASN1_STRING_length(g->d.dNSName);
        if (l <= 0 || l > GW_SNI_NAME_MAX || memchr(p, 0, (size_t)l))
            continue;
        memcpy(names[n], p, (size_t)l);
        names[n][l] = '\0';
        for (int k = 0; k < l; k++)
            if (names[n][k] >= 'A' && names[n][k] <= 'Z')
                names[n][k] = (char)(names[n][k] - 'A' + 'a');
        n++;
    }
    if (gens)
        GENERAL_NAMES_free(gens);
    if (n == 0) {
        int l = X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, names[0],
                                          GW_SNI_NAME_MAX + 1);
        if (l > 0)
            n = 1;
    }
    return n;
}

static int cache_new_cb(SSL *s, SSL_SESSION *sess)
{
    gw_tls_ctx *x = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(s), ex_index);
    /* OpenSSL reports TLS 1.3 sessions too, which resume by (stateless) ticket only: keeping
     * them would fill the cache with sessions nobody asks for */
    if (!x || SSL_version(s) >= TLS1_3_VERSION)
        return 0;
    return gw__tls_cache_new(s, sess, x->conf.session_cache_size);
}

static SSL_CTX *new_ssl_ctx(gw_tls_ctx *x, char *err, size_t errlen, const char *file)
{
    const gw_tls_conf *c = &x->conf;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        set_err(err, errlen, file, "cannot create an SSL_CTX");
        return NULL;
    }
    SSL_CTX_set_ex_data(ctx, ex_index, x);
    SSL_CTX_set_min_proto_version(ctx, (c->protocols & GW_TLS_V12) ? TLS1_2_VERSION : TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, (c->protocols & GW_TLS_V13) ? TLS1_3_VERSION : TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 SSL_OP_NO_COMPRESSION);
    /* an idle connection holds no record buffers; the chain sent is the one loaded (the
     * store is empty: building one per handshake found nothing to add, ~7k instructions) */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_NO_AUTO_CHAIN);
    /* TLS 1.3: the traffic secrets, for the record layer a connection runs itself once the
     * handshake is done (tls.c: the SSL is freed then) */
    if (c->protocols & GW_TLS_V13)
        SSL_CTX_set_keylog_callback(ctx, gw__tls_keylog);
    if (c->ciphers[0] && !SSL_CTX_set_cipher_list(ctx, c->ciphers)) {
        snprintf(err, errlen, "tls.ciphers: no valid cipher in \"%.200s\"", c->ciphers);
        goto fail;
    }
    if (c->ciphersuites[0] && !SSL_CTX_set_ciphersuites(ctx, c->ciphersuites)) {
        snprintf(err, errlen, "tls.ciphersuites: no valid suite in \"%.200s\"", c->ciphersuites);
        goto fail;
    }
    if (c->alpn_len)
        SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, x);
    SSL_CTX_set_tlsext_servername_callback(ctx, servername_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx, x);
    /* resumption: the session-id context is set once every certificate is loaded */
    SSL_CTX_set_timeout(ctx, c->ticket_rotate_s ? (long)c->ticket_rotate_s : 3600);
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
    SSL_CTX_set_num_tickets(ctx, 1);
    if (c->session_cache_size) {
        /* per worker (tls_cache.c), not OpenSSL's cache locked across the workers */
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL);
        SSL_CTX_sess_set_new_cb(ctx, cache_new_cb);
        SSL_CTX_sess_set_get_cb(ctx, gw__tls_cache_get);
        SSL_CTX_sess_set_remove_cb(ctx, gw__tls_cache_remove);
    } else {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    }
    SSL_CTX_clear_options(ctx, SSL_OP_NO_TICKET);
    ERR_clear_error();
    return ctx;
fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

static int key_type(EVP_PKEY *k, char *out, size_t outlen)
{
    int bits = EVP_PKEY_get_bits(k);
    if (EVP_PKEY_get_base_id(k) == EVP_PKEY_RSA) {
        snprintf(out, outlen, "RSA-%d", bits);
        return KT_RSA;
    }
    if (EVP_PKEY_get_base_id(k) == EVP_PKEY_EC) {
        char curve[24] = "";
        size_t cl = 0;
        EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, curve, sizeof curve, &cl);
        snprintf(out, outlen, "EC-%s", strcmp(curve, "prime256v1") == 0 ? "P-256"
                                       : strcmp(curve, "secp384r1") == 0 ? "P-384" : curve);
        return KT_EC;
    }
    snprintf(out, outlen, "%s", OBJ_nid2sn(EVP_PKEY_get_base_id(k)));
    return KT_OTHER;
}

/* Loads pair I into its group (a new one unless one with the same names lacks this key
 * type). 0, or -1 with err set. */
static int load_pair(gw_tls_ctx *x, int i, char *err, size_t errlen)
{
    const gw_tls_cert_conf *cc = &x->conf.certs[i];
    gw_tls_cert_info *info = &x->certs[i];
    X509 *leaf = NULL;
    EVP_PKEY *key = NULL;
    STACK_OF(X509) *chain = NULL;
    char (*names)[GW_SNI_NAME_MAX + 1] = NULL; /* 16 KiB: off the stack */
    int rc = -1;
    BIO *b = BIO_new_file(cc->cert, "r");
    if (!b) {
        snprintf(err, errlen, "%s: cannot read: %s", cc->cert, strerror(errno));
        ERR_clear_error();
        return -1;
    }
    leaf = PEM_read_bio_X509(b, NULL, NULL, NULL);
    if (!leaf) {
        BIO_free(b);
        set_err(err, errlen, cc->cert, "no PEM certificate");
        return -1;
    }
    chain = sk_X509_new_null();
    X509 *ca;
    while (chain && (ca = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
        sk_X509_push(chain, ca);
    ERR_clear_error(); /* the end of the file ends the chain */
    BIO_free(b);
    b = BIO_new_file(cc->key, "r");
    if (!b) {
        snprintf(err, errlen, "%s: cannot read: %s", cc->key, strerror(errno));
        ERR_clear_error();
        goto out;
    }
    key = PEM_read_bio_PrivateKey(b, NULL, NULL, (void *)""); /* no passphrase prompt */
    BIO_free(b);
    if (!key) {
        set_err(err, errlen, cc->key, "no PEM private key (or it is encrypted)");
        goto out;
    }
    if (X509_check_private_key(leaf, key) != 1) {
        snprintf(err, errlen, "%s: does not match the key %s", cc->cert, cc->key);
        ERR_clear_error();
        goto out;
    }
    memcpy(info->file, cc->cert, sizeof info->file); /* same size, NUL-terminated */
    info->file[sizeof info->file - 1] = '\0';
    name_text(X509_get_subject_name(leaf), info->subject, sizeof info->subject);
    name_text(X509_get_issuer_name(leaf), info->issuer, sizeof info->issuer);
    info->not_before = asn1_time(X509_get0_notBefore(leaf));
    info->not_after = asn1_time(X509_get0_notAfter(leaf));
    if (info->not_after && info->not_after < time(NULL)) {
        char when[64];
        struct tm tm;
        gmtime_r(&info->not_after, &tm);
        strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        snprintf(err, errlen, "%s: expired (notAfter %s)", cc->cert, when);
        goto out;
    }
    int kt = key_type(key, info->key_type, sizeof info->key_type);
    names = malloc(64 * sizeof *names);
    int nn = names ? cert_names(leaf, names, 64) : -1;
    if (nn <= 0) {
        snprintf(err, errlen, "%s: no DNS name (subjectAltName or CN)", cc->cert);
        goto out;
    }
    char *sorted[64];
    size_t at = 0;
    info->sans[0] = '\0';
    for (int k = 0; k < nn; k++) {
        sorted[k] = names[k];
        at += (size_t)snprintf(info->sans + at, at < sizeof info->sans ? sizeof info->sans - at : 0,
                               "%s%s", k ? ", " : "", names[k]);
        if (at >= sizeof info->sans)
            at = sizeof info->sans - 1;
    }
    qsort(sorted, (size_t)nn, sizeof sorted[0], cmp_str);
    char set[1024];
    size_t sl = 0;
    for (int k = 0; k < nn; k++) {
        sl += (size_t)snprintf(set + sl, sl < sizeof set ? sizeof set - sl : 0, "%s,", sorted[k]);
        if (sl >= sizeof set)
            sl = sizeof set - 1;
    }
    int g;
    for (g = 0; g < x->n_groups; g++)
        if (strcmp(x->groups[g].names, set) == 0)
            break;
    if (g < x->n_groups && (x->groups[g].key_types & (1u << kt))) {
        snprintf(err, errlen, "%s: same names and key type (%s) as %s", cc->cert, info->key_type,
                 x->conf.certs[x->groups[g].first_cert].cert);
        goto out;
    }
    if (g == x->n_groups) {
        cert_group *ng = &x->groups[g];
        if (!(ng->ctx = new_ssl_ctx(x, err, errlen, cc->cert)))
            goto out;
        snprintf(ng->names, sizeof ng->names, "%s", set);
        ng->first_cert = i;
        x->n_groups++;
        for (int k = 0; k < nn; k++)
            if (gw_sni_add(&x->sni, names[k], g) < 0) {
                snprintf(err, errlen, "%s: invalid DNS name \"%.100s\"", cc->cert, names[k]);
                goto out;
            }
    }
    cert_group *gr = &x->groups[g];
    gr->key_types |= 1u << kt;
    if (SSL_CTX_use_certificate(gr->ctx, leaf) != 1 || SSL_CTX_use_PrivateKey(gr->ctx, key) != 1) {
        set_err(err, errlen, cc->cert, "refused by OpenSSL");
        goto out;
    }
    for (int k = 0; chain && k < sk_X509_num(chain); k++)
        if (SSL_CTX_add1_chain_cert(gr->ctx, sk_X509_value(chain, k)) != 1) {
            set_err(err, errlen, cc->cert, "chain certificate refused");
            goto out;
        }
    unsigned char *der = NULL;
    int dl = i2d_X509(leaf, &der);
    if (dl > 0)
        EVP_DigestUpdate(x->certs_md, der, (size_t)dl);
    OPENSSL_free(der);
    rc = 0;
out:
    X509_free(leaf);
    EVP_PKEY_free(key);
    sk_X509_pop_free(chain, X509_free);
    free(names);
    return rc;
}

/* A process-wide random secret when no key file is shared: tickets survive reloads. */
static unsigned char process_secret[32];
static pthread_once_t secret_once = PTHREAD_ONCE_INIT;
static void secret_init(void)
{
    if (RAND_bytes(process_secret, sizeof process_secret) != 1)
        abort(); /* no randomness: nothing safe can follow */
}

static int load_ticket_secret(gw_tls_ctx *x, char *err, size_t errlen)
{
    const char *f = x->conf.ticket_key_file;
    if (!f[0]) {
        pthread_once(&secret_once, secret_init);
        memcpy(x->ticket_secret, process_secret, 32);
        return 0;
    }
    FILE *fp = fopen(f, "rb");
    if (!fp) {
        snprintf(err, errlen, "%s: cannot read: %s", f, strerror(errno));
        return -1;
    }
    unsigned char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    if (n < 32) {
        snprintf(err, errlen, "%s: a ticket key file holds at least 32 bytes of secret (e.g. "
                 "openssl rand 48 > FILE)", f);
        return -1;
    }
    unsigned int l = 32;
    EVP_Digest(buf, n, x->ticket_secret, &l, EVP_sha256(), NULL);
    OPENSSL_cleanse(buf, sizeof buf);
    return 0;
}

static void ctx_free(gw_tls_ctx *x)
{
    for (int g = 0; g < x->n_groups; g++)
        SSL_CTX_free(x->groups[g].ctx);
    gw_sni_free(&x->sni);
    EVP_MD_CTX_free(x->certs_md);
    OPENSSL_cleanse(x->ticket_secret, sizeof x->ticket_secret);
    free(x);
}

gw_tls_ctx *gw_tls_ctx_new(const gw_tls_conf *conf, char *err, size_t errlen)
{
    pthread_once(&ex_once, ex_init);
    if (conf->n_certs <= 0) {
        snprintf(err, errlen, "tls.certificates: at least one certificate is required");
        return NULL;
    }
    gw_tls_ctx *x = calloc(1, sizeof *x);
    if (!x) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    atomic_init(&x->refs, 1);
    x->conf = *conf;
    if (load_ticket_secret(x, err, errlen) != 0)
        goto fail;
    if (!(x->certs_md = EVP_MD_CTX_new()) || !EVP_DigestInit_ex(x->certs_md, EVP_sha256(), NULL)) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    for (int i = 0; i < conf->n_certs; i++) {
        if (load_pair(x, i, err, errlen) != 0)
            goto fail;
        x->n_certs++;
    }
    /* A session resumes only where it was made: the session-id context is a digest of the
     * listener's certificates, so another listener (other certificates) refuses its
     * tickets and ids, while instances serving the same certificates accept each other's
     * tickets (with a shared ticket key file). */
    unsigned char sid[32];
    unsigned int sl = sizeof sid;
    EVP_DigestFinal_ex(x->certs_md, sid, &sl);
    for (int g = 0; g < x->n_groups; g++)
        SSL_CTX_set_session_id_context(x->groups[g].ctx, sid, sl);
    EVP_MD_CTX_free(x->certs_md);
    x->certs_md = NULL;
    return x;
fail:
    ctx_free(x);
    return NULL;
}

void gw_tls_ctx_ref(gw_tls_ctx *x)
{
    atomic_fetch_add_explicit(&x->refs, 1, memory_order_relaxed);
}

void gw_tls_ctx_unref(gw_tls_ctx *x)
{
    if (x && atomic_fetch_sub_explicit(&x->refs, 1, memory_order_acq_rel) == 1)
        ctx_free(x);
}

int gw_tls_ctx_cert_count(const gw_tls_ctx *x) { return x ? x->n_certs : 0; }
const gw_tls_cert_info *gw_tls_ctx_cert(const gw_tls_ctx *x, int i) { return &x->certs[i]; }
const gw_tls_conf *gw_tls_ctx_conf(const gw_tls_ctx *x) { return &x->conf; }

/* The SSL_CTX a new connection starts with (the default group's); SNI may switch it. */
SSL_CTX *gw__tls_ctx_default(const gw_tls_ctx *x)
{
    return x->groups[0].ctx;
}

/* ---- the slot ------------------------------------------------------------------------ */

void gw_tls_slot_init(gw_tls_slot *s, gw_tls_ctx *initial)
{
    pthread_mutex_init(&s->mu, NULL);
    s->cur = initial;
    atomic_init(&s->gen, 1);
}

gw_tls_ctx *gw_tls_slot_acquire(gw_tls_slot *s)
{
    pthread_mutex_lock(&s->mu);
    gw_tls_ctx *x = s->cur;
    if (x)
        gw_tls_ctx_ref(x);
    pthread_mutex_unlock(&s->mu);
    return x;
}

void gw_tls_slot_swap(gw_tls_slot *s, gw_tls_ctx *next)
{
    pthread_mutex_lock(&s->mu);
    gw_tls_ctx *old = s->cur;
    s->cur = next;
    atomic_fetch_add_explicit(&s->gen, 1, memory_order_release);
    pthread_mutex_unlock(&s->mu);
    gw_tls_ctx_unref(old);
}

void gw_tls_slot_destroy(gw_tls_slot *s)
{
    gw_tls_ctx_unref(s->cur);
    s->cur = NULL;
    pthread_mutex_destroy(&s->mu);
}

const char *gw_tls_event_name(enum gw_tls_event ev)
{
    static const char *const names[GW_TLS__EVENTS] = {
        [GW_TLS_HANDSHAKE] = "handshake", [GW_TLS_RESUMED] = "resumed",
        [GW_TLS_ERR_TIMEOUT] = "timeout", [GW_TLS_ERR_EOF] = "eof",
        [GW_TLS_ERR_VERSION] = "protocol_version", [GW_TLS_ERR_CIPHER] = "no_shared_cipher",
        [GW_TLS_ERR_ALPN] = "no_application_protocol", [GW_TLS_ERR_NOT_TLS] = "not_tls",
        [GW_TLS_ERR_ALERT] = "alert_received", [GW_TLS_ERR_HANDSHAKE] = "handshake_failed",
        [GW_TLS_ERR_RECORD] = "bad_record",
    };
    return (unsigned)ev < GW_TLS__EVENTS && names[ev] ? names[ev] : "unknown";
}
