/* tls_sni.h — the SNI name table of a certificate snapshot: which certificate group serves a
 * server name. Exact names first, then a wildcard ("*.example.com" covers exactly one more
 * label: a.example.com, not a.b.example.com nor example.com), then the caller's default.
 * Pure (no OpenSSL): unit-tested in tests/unit/http/test_tls_sni.c. */
#ifndef GW_TLS_SNI_H
#define GW_TLS_SNI_H

#include <stddef.h>

#define GW_SNI_NAME_MAX 253

typedef struct gw_sni_entry {
    char name[GW_SNI_NAME_MAX + 1]; /* lower case; a wildcard is kept without its "*" */
    unsigned char wildcard;
    int group;
} gw_sni_entry;

typedef struct gw_sni_table {
    gw_sni_entry *e;
    int n, cap;
} gw_sni_table;

/* Adds NAME (a DNS name, or "*.suffix") for GROUP; a name already present keeps the group
 * it had first (the certificate listed first wins). 0, or <0 (GW_EINVAL: not a valid DNS
 * name; GW_ENOMEM). */
int gw_sni_add(gw_sni_table *t, const char *name, int group);
/* The group for HOST (N bytes, case-insensitive, a trailing dot ignored), or -1. */
int gw_sni_lookup(const gw_sni_table *t, const char *host, size_t n);
void gw_sni_free(gw_sni_table *t);

#endif
