/* cache_value.c — stored values of the user cache (see cache_value.h). */
#include "composers/cache_value.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "composers/cache_policy.h"

/* Decimal digits only, the whole slice, at most MAX; -1 otherwise. */
static int number(const char *p, size_t n, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (n == 0 || n > 20)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        unsigned d = (unsigned)(p[i] - '0');
        if (v > max / 10 || (v == max / 10 && d > max % 10))
            return -1; /* (max - d) / 10 would wrap for a max below 9 */
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* Splits the first line into at most 5 fields separated by single spaces. */
static int fields(const char *p, size_t n, const char *f[5], size_t fn[5])
{
    int k = 0;
    size_t start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && p[i] != ' ')
            continue;
        if (k == 5 || i == start)
            return -1; /* too many, or an empty field (two spaces, leading/trailing space) */
        f[k] = p + start;
        fn[k++] = i - start;
        start = i + 1;
    }
    return k;
}

int cmp_value_parse(const char *v, size_t n, cmp_value *out)
{
    memset(out, 0, sizeof *out);
    const char *nl = v ? memchr(v, '\n', n < CMP_VALUE_HEAD_MAX ? n : CMP_VALUE_HEAD_MAX) : NULL;
    if (!nl)
        return -1;
    const char *f[5];
    size_t fn[5];
    int k = fields(v, (size_t)(nl - v), f, fn);
    uint64_t status, at, fresh = 0, hlen = 0;
    size_t rest = n - (size_t)(nl + 1 - v);
    if (k == 5 && fn[0] == 2 && memcmp(f[0], "v2", 2) == 0) {
        if (number(f[1], fn[1], 999, &status) || number(f[2], fn[2], UINT64_MAX, &at) ||
            number(f[3], fn[3], UINT32_MAX, &fresh) || number(f[4], fn[4], rest, &hlen))
            return -1;
        out->fresh_ms = (int64_t)fresh;
    } else if (k == 2) {
        if (number(f[0], fn[0], 999, &status) || number(f[1], fn[1], UINT64_MAX, &at))
            return -1;
        out->fresh_ms = -1;
    } else {
        return -1;
    }
    if (status != 200 && status != 404)
        return -1;
    const char *h = nl + 1;
    if (!cmp_headers_valid(h, (size_t)hlen) || cmp_headers_has(h, (size_t)hlen, "Set-Cookie"))
        return -1;
    out->status = (int)status;
    out->fetched_at = at;
    out->hdrs = hlen ? h : NULL;
    out->hlen = (size_t)hlen;
    out->body = h + hlen;
    out->len = rest - (size_t)hlen;
    return 0;
}

char *cmp_value_format(const cmp_value *in, size_t *len)
{
    char head[CMP_VALUE_HEAD_MAX];
    uint64_t fresh = in->fresh_ms > 0 ? (uint64_t)in->fresh_ms : 0;
    if (fresh > UINT32_MAX)
        fresh = UINT32_MAX;
    int hl = snprintf(head, sizeof head, "v2 %d %llu %llu %zu\n", in->status,
                      (unsigned long long)in->fetched_at, (unsigned long long)fresh, in->hlen);
    if (hl < 0 || (size_t)hl >= sizeof head)
        return NULL;
    char *v = malloc((size_t)hl + in->hlen + in->len + 1);
    if (!v)
        return NULL;
    memcpy(v, head, (size_t)hl);
    if (in->hlen)
        memcpy(v + hl, in->hdrs, in->hlen);
    if (in->len)
        memcpy(v + hl + in->hlen, in->body, in->len);
    *len = (size_t)hl + in->hlen + in->len;
    return v;
}
