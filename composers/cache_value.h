/* cache_value.h — the user cache's stored values: the bytes kept in Redis (or the LRU) for
 * one answer, versioned so gateways of different versions can share one Redis.
 *
 *   version 2: "v2 <status> <fetched at, wall-clock us> <fresh ms> <header bytes>\n"
 *              <header lines ("Name: value\r\n", composers/cache_policy.h)> <body>
 *   version 1: "<status> <fetched at, wall-clock us>\n<body>" (older gateways; no headers,
 *              the configured ttl applies)
 *
 * Pure functions, no I/O. */
#ifndef CMP_CACHE_VALUE_H
#define CMP_CACHE_VALUE_H

#include <stddef.h>
#include <stdint.h>

#define CMP_VALUE_HEAD_MAX 64 /* the first line, newline included, is shorter */

typedef struct cmp_value {
    int status;          /* 200 or 404 */
    uint64_t fetched_at; /* wall-clock us the fetch started */
    int64_t fresh_ms;    /* how long it is fresh; -1 for version 1 (the configured ttl) */
    const char *hdrs;    /* header lines, inside the parsed bytes (NULL/0 for version 1) */
    size_t hlen;
    const char *body;    /* inside the parsed bytes */
    size_t len;
} cmp_value;

/* Parses V[0..N). Returns 0 and fills OUT (pointers into V) only for a 200 or a 404 whose
 * first line is exactly one of the two forms (no sign, no extra field) and whose header
 * block passes cmp_headers_valid and holds no Set-Cookie; else -1. The bytes may come from
 * anyone who can reach the Redis: nothing else is served. */
int cmp_value_parse(const char *v, size_t n, cmp_value *out);

/* A version 2 value of the fields of IN (its hdrs/body pointers are read), malloc'd; its
 * length in *LEN. NULL when out of memory. */
char *cmp_value_format(const cmp_value *in, size_t *len);

#endif
