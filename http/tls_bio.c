/* tls_bio.c — see tls_bio.h. */
#include "http/tls_bio.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static int bio_read(BIO *b, char *out, int outl)
{
    gw_tls_io *io = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    uint32_t avail = io->in_len - io->in_off;
    if (avail == 0 || outl <= 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    uint32_t n = avail < (uint32_t)outl ? avail : (uint32_t)outl;
    memcpy(out, io->in + io->in_off, n);
    io->in_off += n;
    return (int)n;
}

static int bio_write(BIO *b, const char *in, int inl)
{
    gw_tls_io *io = BIO_get_data(b);
    gw_tls_buf *w = io->out;
    BIO_clear_retry_flags(b);
    if (inl <= 0)
        return 0;
    if (gw_tls_buf_reserve(w, (size_t)inl) < 0)
        return -1;
    memcpy(w->p + w->len, in, (size_t)inl);
    w->len += (size_t)inl;
    return inl;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static int bio_destroy(BIO *b)
{
    (void)b;
    return 1;
}

static void bio_init(void)
{
    bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "gw-wire");
    BIO_meth_set_read(bio_method, bio_read);
    BIO_meth_set_write(bio_method, bio_write);
    BIO_meth_set_ctrl(bio_method, bio_ctrl);
    BIO_meth_set_create(bio_method, bio_create);
    BIO_meth_set_destroy(bio_method, bio_destroy);
}

BIO *gw_tls_bio_new(gw_tls_io *io)
{
    pthread_once(&bio_once, bio_init);
    BIO *b = bio_method ? BIO_new(bio_method) : NULL;
    if (b)
        BIO_set_data(b, io);
    return b;
}

int gw_tls_buf_reserve(gw_tls_buf *w, size_t more)
{
    size_t need = w->len + more;
    if (need <= w->cap)
        return 0;
    size_t cap = w->cap ? w->cap : 32768;
    while (cap < need)
        cap *= 2;
    char *p = realloc(w->p, cap);
    if (!p)
        return -1;
    w->p = p;
    w->cap = cap;
    return 0;
}

void gw_tls_buf_free(gw_tls_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}
