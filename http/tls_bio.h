/* tls_bio.h — the memory BIO both TLS sides use (tls.c for clients, upstream_tls.c for
 * upstreams): OpenSSL never touches a socket; it reads ciphertext from an input window the
 * owner fills from libuv, and writes records into an output buffer the owner flushes right
 * after the OpenSSL call that produced them. */
#ifndef GW_TLS_BIO_H
#define GW_TLS_BIO_H

#include <openssl/bio.h>
#include <openssl/err.h>
#include <stddef.h>
#include <stdint.h>

/* Records OpenSSL wrote and not yet handed to the socket (grown on demand). */
typedef struct gw_tls_buf {
    char *p;
    size_t len, cap;
} gw_tls_buf;

/* What a BIO reads from and writes to; owned by the connection, not by the BIO. */
typedef struct gw_tls_io {
    char *in;                /* ciphertext read and not yet taken by OpenSSL, or NULL */
    uint32_t in_len, in_off;
    gw_tls_buf *out;         /* where records go */
} gw_tls_io;

/* A BIO over IO (which must outlive it); NULL when out of memory. */
BIO *gw_tls_bio_new(gw_tls_io *io);

/* Room for MORE bytes after b->len (grown by doubling). 0, or -1: out of memory. */
int gw_tls_buf_reserve(gw_tls_buf *b, size_t more);
/* Gives the buffer's memory back. */
void gw_tls_buf_free(gw_tls_buf *b);

/* Empties this thread's OpenSSL error queue, around an SSL_read or SSL_write: SSL_get_error
 * is only right with an empty queue before the call, and a failed call may leave entries.
 * ERR_clear_error walks every slot of the queue (~800 instructions in OpenSSL 3.0): four to
 * six calls per TLS keep-alive request were an eighth of its instructions; looking first
 * costs a tenth of that, and the queue is almost always empty. */
static inline void gw_tls_err_clear(void)
{
    if (ERR_peek_error() != 0)
        ERR_clear_error();
}

#endif
