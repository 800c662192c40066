/* ctl_util.c — gatewayctl: error reporting and a growable buffer. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <llhttp.h>

#include "ctl/ctl.h"

/* ---- errors -------------------------------------------------------------------------------- */

/* "gatewayctl: WHAT: REASON" on stderr. Returns CTL_FAIL so callers can `return ctl_fail(..)`. */
int ctl_fail(const char *what, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "gatewayctl: %s: ", what);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CTL_FAIL;
}

/* A usage error: the message, then the command's synopsis (when given). Returns CTL_USAGE. */
int ctl_usage(const char *what, const char *synopsis, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "gatewayctl: %s: ", what);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    if (synopsis)
        fprintf(stderr, "usage: gatewayctl %s\n", synopsis);
    fprintf(stderr, "Try 'gatewayctl --help'.\n");
    return CTL_USAGE;
}

/* ---- a growable byte buffer ------------------------------------------------------------------ */


int ctl_buf_add(ctl_buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

int ctl_buf_printf(ctl_buf *b, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    if ((size_t)n < sizeof small)
        return ctl_buf_add(b, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big)
        return -1;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = ctl_buf_add(b, big, (size_t)n);
    free(big);
    return rc;
}

const char *ctl_buf_str(const ctl_buf *b) { return b->p ? b->p : ""; }

void ctl_buf_free(ctl_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

/* ---- a text table -------------------------------------------------------------------------- */



int ctl_table_row(ctl_table *t, char **cells)
{
    if (t->rows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **c = realloc(t->cells, cap * (size_t)t->cols * sizeof *c);
        if (!c)
            return -1;
        t->cells = c;
        t->cap = cap;
    }
    for (int i = 0; i < t->cols; i++) {
        char *s = strdup(cells[i] ? cells[i] : "");
        if (!s) {
            for (int j = 0; j < i; j++)
                free(t->cells[t->rows * (size_t)t->cols + (size_t)j]);
            return -1;
        }
        t->cells[t->rows * (size_t)t->cols + (size_t)i] = s;
        /* width in characters: count UTF-8 lead bytes only */
        size_t w = 0;
        for (const char *p = s; *p; p++)
            w += ((unsigned char)*p & 0xC0) != 0x80;
        if (w > t->width[i])
            t->width[i] = w;
    }
    t->rows++;
    return 0;
}

void ctl_table_print(const ctl_table *t)
{
    for (size_t r = 0; r < t->rows; r++) {
        for (int c = 0; c < t->cols; c++) {
            const char *s = t->cells[r * (size_t)t->cols + (size_t)c];
            if (c == t->cols - 1) {
                fputs(s, stdout);
                break;
            }
            size_t w = 0;
            for (const char *p = s; *p; p++)
                w += ((unsigned char)*p & 0xC0) != 0x80;
            fputs(s, stdout);
            for (size_t i = w; i < t->width[c] + 2; i++)
                fputc(' ', stdout);
        }
        fputc('\n', stdout);
    }
}

void ctl_table_free(ctl_table *t)
{
    for (size_t i = 0; i < t->rows * (size_t)t->cols; i++)
        free(t->cells[i]);
    free(t->cells);
    t->cells = NULL;
    t->rows = t->cap = 0;
}
