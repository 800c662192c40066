/* json_check.h — is a byte string one well-formed JSON value (RFC 8259)? Without building
 * it: legs whose answers are only passed on are checked this way and spliced into the
 * composed document as they are, which saves the allocations of parsing and re-printing. */
#ifndef CMP_JSON_CHECK_H
#define CMP_JSON_CHECK_H

#include <stddef.h>

/* 1 when P[0..N) is exactly one JSON value (surrounding whitespace allowed), nested at most
 * 256 deep; else 0. */
int cmp_json_valid(const char *p, size_t n);

#endif
