/* fuzz_cache_value.c — what the user cache reads back from Redis (composers/cache_value.h)
 * and the header rules applied to it and to upstream answers (composers/cache_policy.h).
 * Anyone who can write to the Redis controls these bytes.
 *
 * Invariants: a value cmp_value_parse accepts is a 200 or a 404 whose header block and
 * body lie inside the input and add up to it, whose header block passes cmp_headers_valid
 * (only kept names, no CR/LF inside a line) and holds no Set-Cookie; written again with
 * cmp_value_format it parses back to the same fields. cmp_cache_policy_parse, the fresh
 * time and cmp_headers_without take any bytes (as a header block) without reading outside
 * them; the copy without Set-Cookie is never longer and has no Set-Cookie line. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "composers/cache_policy.h"
#include "composers/cache_value.h"

static void fail(const char *why)
{
    fprintf(stderr, "fuzz_cache_value: %s\n", why);
    __builtin_trap();
}

static void check_value(const char *v, size_t n)
{
    cmp_value a, b;
    if (cmp_value_parse(v, n, &a) != 0)
        return;
    if (a.status != 200 && a.status != 404)
        fail("a status other than 200/404 accepted");
    if (a.body < v || a.body + a.len != v + n)
        fail("the body is not the end of the input");
    if (a.hlen && (a.hdrs < v || a.hdrs + a.hlen != a.body))
        fail("the header block is not just before the body");
    if (!cmp_headers_valid(a.hdrs, a.hlen) || cmp_headers_has(a.hdrs, a.hlen, "Set-Cookie"))
        fail("an invalid header block accepted");
    size_t m;
    char *w = cmp_value_format(&a, &m);
    if (!w)
        return; /* out of memory */
    if (cmp_value_parse(w, m, &b) != 0)
        fail("a formatted value does not parse");
    if (b.status != a.status || b.fetched_at != a.fetched_at || b.hlen != a.hlen ||
        b.len != a.len || (a.fresh_ms >= 0 && b.fresh_ms != a.fresh_ms) ||
        (a.hlen && memcmp(a.hdrs, b.hdrs, a.hlen) != 0) ||
        (a.len && memcmp(a.body, b.body, a.len) != 0))
        fail("format/parse round trip changed the value");
    free(w);
}

static void check_headers(const char *h, size_t n)
{
    cmp_cache_policy p;
    cmp_cache_policy_parse(h, n, &p);
    uint32_t ttl = cmp_cache_policy_ttl(&p, 60000, 1764800000);
    if (ttl > 60000)
        fail("the fresh time exceeds the route's ttl");
    if (ttl && (p.no_store || p.private_ || p.set_cookie))
        fail("an unstorable answer has a fresh time");
    char *out = malloc(n ? n : 1);
    if (!out)
        return;
    size_t w = cmp_headers_without(h, n, "Set-Cookie", out);
    if (w > n)
        fail("the copy without Set-Cookie is longer");
    if (cmp_headers_has(out, w, "Set-Cookie"))
        fail("Set-Cookie left in the copy");
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* exact-size copies so ASan sees any read past the end */
    char *v = malloc(size ? size : 1);
    if (!v)
        return 0;
    memcpy(v, data, size);
    check_value(v, size);
    check_headers(v, size);
    free(v);
    return 0;
}
