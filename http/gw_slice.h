/* gw_slice.h — a borrowed byte range {p, n}: how parsed HTTP pieces are handed around
 * without copying. A slice never owns its bytes; its lifetime is its buffer's. */
#ifndef GW_SLICE_H
#define GW_SLICE_H

#include <stddef.h>
#include <string.h>
#include <strings.h>

typedef struct gw_slice {
    const char *p;
    size_t n;
} gw_slice;

#define GW_SLICE_LIT(s) ((gw_slice){ (s), sizeof(s) - 1 })

static inline gw_slice gw_slice_of(const char *s) { return (gw_slice){ s, s ? strlen(s) : 0 }; }

static inline int gw_slice_eq(gw_slice a, const char *lit)
{
    size_t n = strlen(lit);
    return a.n == n && memcmp(a.p, lit, n) == 0;
}

/* ASCII case-insensitive comparison, as header names need. */
static inline int gw_slice_ieq(gw_slice a, const char *lit)
{
    size_t n = strlen(lit);
    return a.n == n && strncasecmp(a.p, lit, n) == 0;
}

static inline int gw_slice_ieq_slice(gw_slice a, gw_slice b)
{
    return a.n == b.n && strncasecmp(a.p, b.p, a.n) == 0;
}

#endif
