/* tls_record.h — the TLS 1.3 record layer a server connection runs itself once OpenSSL has
 * finished the handshake (tls.c). OpenSSL 3.0 gives an idle connection no way to shed its
 * SSL object (7.6 KiB for the struct alone, ~14 KiB with the cipher contexts, session and
 * handshake leftovers, docs/performance.md), so a TLS 1.3 connection whose suite is one of
 * the three AEADs below keeps only its traffic secrets, keys, IVs and sequence numbers
 * (~230 bytes) and the SSL is freed. Records are sealed and opened with one cipher context
 * per suite, direction and worker thread, keyed per record unless it still holds this
 * connection's key (RFC 8446 §5.2-5.3: AEAD, per-record nonce = IV xor sequence number;
 * §7.2: KeyUpdate). Everything else (TLS 1.2, CCM suites) stays with OpenSSL. */
#ifndef GW_TLS_RECORD_H
#define GW_TLS_RECORD_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define GW_TLS13_MAX_PLAIN 16384            /* 2^14: the largest plaintext of a record */
#define GW_TLS13_MAX_CIPHER (16384 + 256)   /* 2^14 + 256: the largest ciphertext */
#define GW_TLS13_OVERHEAD (5 + 1 + 16)      /* header, inner content type, AEAD tag */

enum { GW_TLS13_CT_ALERT = 21, GW_TLS13_CT_HANDSHAKE = 22, GW_TLS13_CT_APPDATA = 23 };

typedef struct gw_tls13_dir {
    unsigned char secret[48]; /* the current traffic secret (Hash.length bytes) */
    unsigned char key[32];
    unsigned char iv[12];
    uint64_t seq;             /* records protected under this key so far */
    uint64_t key_id;          /* which key a thread's cipher context holds (process-unique) */
} gw_tls13_dir;

typedef struct gw_tls13 {
    gw_tls13_dir rd, wr;      /* the client's records (read), ours (write) */
    uint8_t suite;            /* index into tls_record.c's suite table */
} gw_tls13;

/* Installs the traffic secrets for SUITE_ID (the IANA value: 0x1301, 0x1302 or 0x1303) of
 * SECRET_LEN bytes each, the sequence numbers starting at READ_SEQ and WRITE_SEQ. 0, or -1
 * for a suite this layer does not run (the caller keeps OpenSSL's record layer). */
int gw_tls13_init(gw_tls13 *r, unsigned suite_id, const unsigned char *client_secret,
                  const unsigned char *server_secret, size_t secret_len, uint64_t read_seq,
                  uint64_t write_seq);
/* 1 when SUITE_ID is one this layer runs. */
int gw_tls13_suite_supported(unsigned suite_id);

/* One record of TYPE holding the N pieces (TOTAL bytes, at most GW_TLS13_MAX_PLAIN) into
 * OUT, which has room for TOTAL + GW_TLS13_OVERHEAD. Returns its length, or -1. */
int gw_tls13_seal(gw_tls13 *r, uint8_t type, const uv_buf_t *bufs, unsigned n, size_t total,
                  char *out);
/* Opens the whole record REC (header included, LEN bytes) in place: its plaintext is
 * rec[5 .. 5 + *plain_len), its inner content type *TYPE. 0, or -1 (bad_record_mac: the
 * tag did not verify, or no non-zero content type). */
int gw_tls13_open(gw_tls13 *r, char *rec, size_t len, uint8_t *type, size_t *plain_len);
/* Verifies, without changing anything, that REC (LEN bytes) is a record protected by D's
 * key at sequence number SEQ (copies it: LEN at most 1,024). 1 or 0. */
int gw_tls13_check(const gw_tls13 *r, const gw_tls13_dir *d, uint64_t seq, const char *rec,
                   size_t len);
/* KeyUpdate (RFC 8446 §7.2): D's secret becomes the next generation, its key and IV are
 * derived from it, its sequence number starts again at 0. 0 or -1. */
int gw_tls13_next_key(gw_tls13 *r, gw_tls13_dir *d);
/* Forgets the keys (cleansed). */
void gw_tls13_clear(gw_tls13 *r);
/* Frees this thread's cipher contexts (a worker thread, at exit). */
void gw_tls13_thread_cleanup(void);

#endif
