/* policy.c — per-request cutover decisions (see policy.h). Runs on the request path: no
 * allocation, a few comparisons per call. */
#include <string.h>

#include "routes/matcher.h"
#include "routes/parse.h"
#include "routes/policy.h"

#define SAFE_METHODS (RT_M_GET | RT_M_HEAD | RT_M_OPTIONS)

uint64_t rt__hash64(const char *p, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    /* murmur3's fmix64: FNV alone leaves the high bits poorly mixed for short keys. */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

int rt_route_pick(const rt_route *r, gw_slice sticky_value, uint64_t random)
{
    if (r->n_split == 0 || r->split_total == 0)
        return r->upstream_index;
    /* The weights tile [0, total): a point in it names a side. The modulo bias of a 64-bit
     * value over a total of at most a few million is below 1e-12. */
    uint64_t x = sticky_value.n > 0 ? rt__hash64(sticky_value.p, sticky_value.n) : random;
    x %= r->split_total;
    for (int i = 0; i < r->n_split; i++) {
        if (x < r->split[i].weight)
            return r->split[i].upstream_index;
        x -= r->split[i].weight;
    }
    return r->split[r->n_split - 1].upstream_index; /* not reached: the weights sum to total */
}

const char *rt_route_sticky_header(const rt_route *r)
{
    return r->sticky_header;
}

const char *rt_route_sticky_cookie(const rt_route *r)
{
    return r->sticky_cookie;
}

const char *rt_route_override_header(const rt_route *r)
{
    return r->override_header;
}

static int names(gw_slice value, const char *upstream)
{
    return upstream && gw_slice_eq(value, upstream);
}

int rt_route_override(const rt_route *r, gw_slice value)
{
    if (!r->override_header || value.n == 0)
        return -1;
    if (names(value, r->upstream))
        return r->upstream_index;
    for (int i = 0; i < r->n_split; i++) {
        if (names(value, r->split[i].upstream))
            return r->split[i].upstream_index;
    }
    if (names(value, r->shadow.upstream))
        return r->shadow.upstream_index;
    if (names(value, r->fallback.upstream))
        return r->fallback.upstream_index;
    return -1;
}

static unsigned method_bit(gw_slice method)
{
    return 1u << rt__method_index(method);
}

int rt_route_shadow(const rt_route *r, gw_slice method, uint64_t random)
{
    if (r->shadow.upstream_index < 0 || !(r->shadow.methods & method_bit(method)))
        return -1;
    if (random % 100 >= (uint64_t)r->shadow.percent)
        return -1;
    return r->shadow.upstream_index;
}

int rt_route_fallback(const rt_route *r, gw_slice method, int status_or_neg_err)
{
    if (r->fallback.upstream_index < 0 || !(SAFE_METHODS & method_bit(method)))
        return -1;
    unsigned cond = 0;
    if (status_or_neg_err < 0)
        cond = RT_FB_CONNECT;
    else if (status_or_neg_err == 404)
        cond = RT_FB_404;
    else if (status_or_neg_err >= 500 && status_or_neg_err <= 599)
        cond = RT_FB_5XX;
    return (r->fallback.on & cond) ? r->fallback.upstream_index : -1;
}

static gw_slice trim(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    return (gw_slice){ p, (size_t)(e - p) };
}

gw_slice rt_cookie_value(gw_slice cookie_header, const char *name)
{
    const char *p = cookie_header.p, *end = p + cookie_header.n;
    while (p && p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        const char *pair_end = semi ? semi : end;
        const char *eq = memchr(p, '=', (size_t)(pair_end - p));
        if (eq && gw_slice_eq(trim(p, eq), name)) {
            gw_slice v = trim(eq + 1, pair_end);
            if (v.n >= 2 && v.p[0] == '"' && v.p[v.n - 1] == '"')
                v = (gw_slice){ v.p + 1, v.n - 2 };
            return v;
        }
        p = semi ? semi + 1 : NULL;
    }
    return (gw_slice){ NULL, 0 };
}
