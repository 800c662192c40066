/* tls_sni.c — see tls_sni.h. A linear scan: a listener has a handful of certificates, each
 * with a handful of names, and the lookup runs once per handshake. */
#include "http/tls_sni.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http/gw_errors.h"

static int dns_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' ||
           ch == '_';
}

int gw_sni_add(gw_sni_table *t, const char *name, int group)
{
    int wildcard = strncmp(name, "*.", 2) == 0;
    const char *n = wildcard ? name + 1 : name; /* ".example.com" for a wildcard */
    size_t len = strlen(n);
    if (len == 0 || len > GW_SNI_NAME_MAX || (wildcard && len < 3))
        return GW_EINVAL;
    char low[GW_SNI_NAME_MAX + 1];
    for (size_t i = 0; i < len; i++) {
        char ch = n[i];
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        if (!dns_char(ch))
            return GW_EINVAL;
        low[i] = ch;
    }
    low[len] = '\0';
    if (low[len - 1] == '.')
        low[--len] = '\0';
    for (int i = 0; i < t->n; i++)
        if (t->e[i].wildcard == wildcard && strcmp(t->e[i].name, low) == 0)
            return 0; /* the first certificate with this name keeps it */
    if (t->n == t->cap) {
        int cap = t->cap ? t->cap * 2 : 8;
        gw_sni_entry *e = realloc(t->e, (size_t)cap * sizeof *e);
        if (!e)
            return GW_ENOMEM;
        t->e = e;
        t->cap = cap;
    }
    gw_sni_entry *e = &t->e[t->n++];
    memcpy(e->name, low, len + 1);
    e->wildcard = (unsigned char)wildcard;
    e->group = group;
    return 0;
}

int gw_sni_lookup(const gw_sni_table *t, const char *host, size_t n)
{
    if (!host || n == 0)
        return -1;
    if (host[n - 1] == '.')
        n--;
    if (n == 0 || n > GW_SNI_NAME_MAX)
        return -1;
    for (int i = 0; i < t->n; i++)
        if (!t->e[i].wildcard && strlen(t->e[i].name) == n && strncasecmp(t->e[i].name, host, n) == 0)
            return t->e[i].group;
    /* a wildcard stands for exactly the first label, which must not be empty */
    const char *dot = memchr(host, '.', n);
    if (!dot || dot == host)
        return -1;
    size_t rest = n - (size_t)(dot - host); /* ".example.com" */
    for (int i = 0; i < t->n; i++)
        if (t->e[i].wildcard && strlen(t->e[i].name) == rest &&
            strncasecmp(t->e[i].name, dot, rest) == 0)
            return t->e[i].group;
    return -1;
}

void gw_sni_free(gw_sni_table *t)
{
    free(t->e);
    t->e = NULL;
    t->n = t->cap = 0;
}
