/* tls_record.h — the record layer a server connection runs itself once OpenSSL has finished
 * the handshake (tls.c). OpenSSL 3.0 gives an idle connection no way to shed its SSL object
 * (7.6 KiB for the struct alone, ~13.7 KiB with the cipher contexts, session and handshake
 * leftovers, docs/performance.md), so a connection whose cipher is an AEAD this layer runs
 * (AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305; TLS 1.3 or 1.2) keeps only its keys, IVs,
 * sequence numbers and, in TLS 1.3, the traffic secrets (for KeyUpdate): ~230 bytes, and the
 * SSL is freed. Records are sealed and opened with one cipher context per AEAD, direction
 * and worker thread, keyed per record unless it still holds this connection's key.
 * TLS 1.3: RFC 8446 §5.2-5.4 (inner content type, padding), §7.2-7.3 (KeyUpdate, keys);
 * TLS 1.2: RFC 5246 §6.2.3.3, RFC 5288 (GCM: 4-byte salt + 8-byte explicit nonce), RFC 7905
 * (ChaCha20-Poly1305: IV xor sequence number). Anything else stays with OpenSSL. */
#ifndef GW_TLS_RECORD_H
#define GW_TLS_RECORD_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define GW_TLS_REC_MAX_PLAIN 16384   /* 2^14: the largest plaintext of a record */
/* The largest record body accepted: TLS 1.3's 2^14 + 256; TLS 1.2 allows 2^14 + 2048, but an
 * AEAD record over 2^14 + 24 would hold more than 2^14 bytes of plaintext (record_overflow
 * either way), and a whole record must fit the connection's 17 KiB ciphertext buffer. */
#define GW_TLS_REC_MAX_CIPHER13 (16384 + 256)
#define GW_TLS_REC_MAX_CIPHER12 (16384 + 8 + 16)
#define GW_TLS_REC_OVERHEAD (5 + 8 + 16) /* header, explicit nonce or inner type, AEAD tag */

enum { GW_TLS_CT_CCS = 20, GW_TLS_CT_ALERT = 21, GW_TLS_CT_HANDSHAKE = 22, GW_TLS_CT_APPDATA = 23 };

typedef struct gw_tls_rec_dir {
    unsigned char secret[48]; /* TLS 1.3: the current traffic secret (Hash.length bytes) */
    unsigned char key[32];
    unsigned char iv[12];     /* TLS 1.2 GCM: the 4-byte salt, then zeros */
    uint64_t seq;             /* records protected under this key so far */
    uint64_t key_id;          /* which key a thread's cipher context holds (process-unique) */
} gw_tls_rec_dir;

typedef struct gw_tls_rec {
    gw_tls_rec_dir rd, wr;    /* the client's records (read), ours (write) */
    uint8_t aead, md;         /* indexes into tls_record.c's tables */
    uint8_t tls13;            /* 1: TLS 1.3 records, 0: TLS 1.2 */
} gw_tls_rec;

/* 1 when this layer runs the cipher (OpenSSL's NID, SSL_CIPHER_get_cipher_nid) with the
 * hash (SSL_CIPHER_get_handshake_digest's NID). */
int gw_tls_rec_supported(int cipher_nid, int md_nid);
/* TLS 1.3: installs the application traffic secrets (SECRET_LEN bytes each), sequence
 * numbers starting at READ_SEQ and WRITE_SEQ. 0, or -1 (unsupported: keep OpenSSL's). */
int gw_tls_rec_init13(gw_tls_rec *r, int cipher_nid, int md_nid,
                      const unsigned char *client_secret, const unsigned char *server_secret,
                      size_t secret_len, uint64_t read_seq, uint64_t write_seq);
/* TLS 1.2: derives the keys from the master secret and the randoms (the "key expansion"
 * PRF), sequence numbers starting at READ_SEQ and WRITE_SEQ. 0 or -1. */
int gw_tls_rec_init12(gw_tls_rec *r, int cipher_nid, int md_nid, const unsigned char *master,
                      size_t master_len, const unsigned char client_random[32],
                      const unsigned char server_random[32], uint64_t read_seq,
                      uint64_t write_seq);

/* TLS 1.3: records sealed under one write key before the connection moves to the next one
 * (a KeyUpdate of its own): 2^24, as picotls, well under AES-GCM's 2^24.5 full records per
 * key (RFC 8446 §5.5). A variable so that tests can lower it. */
extern uint64_t gw_tls_rec_rekey_at;

/* One record of TYPE holding the N pieces (TOTAL bytes, at most GW_TLS_REC_MAX_PLAIN) into
 * OUT, which has room for TOTAL + GW_TLS_REC_OVERHEAD. Returns its length, or -1 (also
 * when the sequence number would wrap, RFC 8446 §5.3, or the key is cleared). */
int gw_tls_rec_seal(gw_tls_rec *r, uint8_t type, const uv_buf_t *bufs, unsigned n,
                    size_t total, char *out);
/* Why gw_tls_rec_open refused a record; each names the alert (RFC 8446 §5.2, §5.4). */
enum {
    GW_TLS_REC_BAD_MAC = -1,  /* the tag did not verify: bad_record_mac */
    GW_TLS_REC_NO_TYPE = -2,  /* TLS 1.3: an inner plaintext of zeros only: unexpected_message */
    GW_TLS_REC_OVERFLOW = -3, /* more than 2^14 bytes of plaintext (TLS 1.3: 2^14 + 1 with the
                               * type and padding): record_overflow */
};
/* Opens the whole record REC (header included, LEN bytes) in place: its plaintext is
 * rec[*plain_off .. *plain_off + *plain_len), its content type *TYPE. 0, or one of the
 * above. */
int gw_tls_rec_open(gw_tls_rec *r, char *rec, size_t len, uint8_t *type, size_t *plain_off,
                    size_t *plain_len);
/* Verifies, without changing anything, that REC (LEN bytes, at most 1,024) is a record
 * protected by D's key at sequence number SEQ. 1 or 0. */
int gw_tls_rec_check(const gw_tls_rec *r, const gw_tls_rec_dir *d, uint64_t seq,
                     const char *rec, size_t len);
/* TLS 1.3 KeyUpdate: D's secret becomes the next generation, its key and IV are derived
 * from it, its sequence number starts again at 0. 0 or -1. */
int gw_tls_rec_next_key(gw_tls_rec *r, gw_tls_rec_dir *d);
/* Forgets the keys (cleansed), and this thread's cipher contexts forget them too. */
void gw_tls_rec_clear(gw_tls_rec *r);
/* Frees this thread's cipher and digest contexts (a worker thread, at exit). */
void gw_tls_rec_thread_cleanup(void);

#endif
