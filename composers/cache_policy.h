/* cache_policy.h — what an upstream's answer allows the user cache to do with it, and the
 * header lines that go with a cached answer. Pure functions on "Name: value\r\n" blocks (the
 * kept headers of a one-shot exchange, or the ones stored with a cached value); no I/O.
 *
 * Kept headers (CMP_KEPT_HEADERS): what a client needs to use the answer as the upstream
 * meant it — Cache-Control, Content-Type, Content-Encoding, Content-Language, ETag,
 * Last-Modified, Expires, Location, Vary, Retry-After, WWW-Authenticate — and Set-Cookie,
 * which is passed to the client on that answer only and makes the answer unstorable. */
#ifndef CMP_CACHE_POLICY_H
#define CMP_CACHE_POLICY_H

#include <stddef.h>
#include <stdint.h>

/* NULL-terminated, for gw_oneshot_start_keep. */
extern const char *const cmp_kept_headers[];

typedef struct cmp_cache_policy {
    int no_store;    /* Cache-Control: no-store */
    int private_;    /* Cache-Control: private (with or without field names) */
    int no_cache;    /* Cache-Control: no-cache: we never revalidate, so it is max-age=0 */
    int64_t max_age; /* seconds; -1 when absent. Several (or several lines): the smallest;
                        a malformed value counts as 0 (RFC 9111 4.2.1: treat as stale) */
    int64_t s_maxage;/* the same for s-maxage, which wins over max-age (a shared cache) */
    int64_t expires; /* Expires as seconds since the epoch, -1 when absent; a value that is
                        not an HTTP-date ("0", "-1") is 0: in the past (RFC 9111 5.3).
                        Several: the earliest. Used only without max-age and s-maxage */
    int set_cookie;  /* a Set-Cookie line */
    int vary_star;   /* Vary: * (the answer varies on what a cache cannot see) */
} cmp_cache_policy;

/* Reads HEADERS[0..N): every Cache-Control line (directives case-insensitive, comma
 * separated, values token or quoted-string), Expires (IMF-fixdate, RFC 850 or asctime
 * form), Set-Cookie and Vary. */
void cmp_cache_policy_parse(const char *headers, size_t n, cmp_cache_policy *out);

/* How long a copy may be served fresh: ROUTE_TTL_MS capped by s-maxage (else max-age, else
 * Expires minus NOW_S, the wall clock in seconds) when that is lower, 0 for no-cache.
 * Returns 0 when the answer must not be stored at all (no-store, private, Set-Cookie,
 * Vary: *, or a fresh time of 0: max-age=0, an Expires not in the future). */
uint32_t cmp_cache_policy_ttl(const cmp_cache_policy *p, uint32_t route_ttl_ms, int64_t now_s);

/* 1 when HEADERS[0..N) is a well-formed block: lines "Name: value\r\n", each name one of
 * cmp_kept_headers, the value without CR, LF or NUL, at most 4096 bytes. Stored values come from a shared Redis: only a block
 * that passes is served (else the value is a miss), so nothing in Redis can inject a line. */
int cmp_headers_valid(const char *headers, size_t n);

/* 1 when HEADERS[0..N) has a line named NAME (case-insensitive). */
int cmp_headers_has(const char *headers, size_t n, const char *name);

/* Copies HEADERS[0..N) to OUT (room for N bytes) without the lines named DROP
 * (case-insensitive); returns the bytes written. */
size_t cmp_headers_without(const char *headers, size_t n, const char *drop, char *out);

#endif
