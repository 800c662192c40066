/* redis_topo.c — see redis_topo.h. */
#include "composers/redis_topo.h"

#include <string.h>

int cmp_redis_parse_addr(const char *s, size_t n, char *host, size_t hostsz, int *port)
{
    const char *end = s + n, *hs = s, *he, *colon;
    unsigned long pv = 0;

    if (n > 0 && s[0] == '[') {
        hs = s + 1;
        if ((he = memchr(hs, ']', (size_t)(end - hs))) == NULL || he + 1 >= end || he[1] != ':')
            return -1;
        colon = he + 1;
    } else {
        colon = NULL;
        for (const char *p = s; p < end; p++)
            if (*p == ':')
                colon = p;
        if (colon == NULL)
            return -1;
        he = colon;
        if (memchr(hs, ':', (size_t)(he - hs)) != NULL) /* bare IPv6: needs brackets */
            return -1;
    }
    if (he == hs || (size_t)(he - hs) >= hostsz)
        return -1;
    size_t pn = (size_t)(end - colon - 1);
    if (pn == 0 || pn > 5)
        return -1;
    for (size_t i = 0; i < pn; i++) {
        if (colon[1 + i] < '0' || colon[1 + i] > '9')
            return -1;
        pv = pv * 10 + (unsigned long)(colon[1 + i] - '0');
    }
    if (pv == 0 || pv > 65535)
        return -1;
    memcpy(host, hs, (size_t)(he - hs));
    host[he - hs] = '\0';
    *port = (int)pv;
    return 0;
}

/* CRC16-CCITT four bits at a time: the table is the checksum of each nibble. */
uint16_t cmp_redis_crc16(const char *p, size_t n)
{
    static const uint16_t t[16] = { 0x0000, 0x1021, 0x2042, 0x3063, 0x4084, 0x50a5,
                                    0x60c6, 0x70e7, 0x8108, 0x9129, 0xa14a, 0xb16b,
                                    0xc18c, 0xd1ad, 0xe1ce, 0xf1ef };
    uint16_t crc = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned b = (unsigned char)p[i];
        crc = (uint16_t)((crc << 4) ^ t[((crc >> 12) ^ (b >> 4)) & 0xf]);
        crc = (uint16_t)((crc << 4) ^ t[((crc >> 12) ^ b) & 0xf]);
    }
    return crc;
}

uint16_t cmp_redis_key_slot(const char *key, size_t n)
{
    const char *open = memchr(key, '{', n);
    if (open != NULL) {
        const char *from = open + 1;
        const char *close = memchr(from, '}', n - (size_t)(from - key));
        if (close != NULL && close > from) /* "{}" is no tag: the whole key counts */
            return cmp_redis_crc16(from, (size_t)(close - from)) & (CMP_REDIS_SLOTS - 1);
    }
    return cmp_redis_crc16(key, n) & (CMP_REDIS_SLOTS - 1);
}

int cmp_redis_parse_redirect(const char *err, size_t n, uint16_t *slot, char *host,
                             size_t hostsz, int *port)
{
    int kind;
    size_t i;
    unsigned long s = 0;

    if (n >= 6 && memcmp(err, "MOVED ", 6) == 0)
        kind = CMP_REDIS_MOVED, i = 6;
    else if (n >= 4 && memcmp(err, "ASK ", 4) == 0)
        kind = CMP_REDIS_ASK, i = 4;
    else
        return CMP_REDIS_NOT_REDIRECT;
    size_t digits = 0;
    for (; i < n && err[i] >= '0' && err[i] <= '9' && digits < 6; i++, digits++)
        s = s * 10 + (unsigned long)(err[i] - '0');
    if (digits == 0 || s >= CMP_REDIS_SLOTS || i >= n || err[i] != ' ')
        return -1;
    i++;
    if (i < n && err[i] == '[') { /* "[v6]:port" */
        if (cmp_redis_parse_addr(err + i, n - i, host, hostsz, port) != 0)
            return -1;
    } else { /* the port follows the last ':': "host:port", "::1:7000" (Redis does not
                bracket IPv6 here), ":7000" (no host: the node that answered) */
        const char *colon = NULL;
        for (size_t j = i; j < n; j++)
            if (err[j] == ':')
                colon = err + j;
        if (colon == NULL || (size_t)(colon - (err + i)) >= hostsz)
            return -1;
        size_t hl = (size_t)(colon - (err + i)), pd = 0;
        unsigned long pv = 0;
        for (i += hl + 1; i < n && err[i] >= '0' && err[i] <= '9' && pd < 6; i++, pd++)
            pv = pv * 10 + (unsigned long)(err[i] - '0');
        if (pd == 0 || i != n || pv == 0 || pv > 65535)
            return -1;
        memcpy(host, colon - hl, hl);
        host[hl] = '\0';
        *port = (int)pv;
    }
    *slot = (uint16_t)s;
    return kind;
}

static int str_el(const redisReply *e)
{
    return e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS;
}

int cmp_redis_parse_slots(const redisReply *r, const char *asked_host, cmp_redis_range *out,
                          int max)
{
    int n = 0;
    if (r == NULL || r->type != REDIS_REPLY_ARRAY)
        return -1;
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER)
            return -1;
        long long s = e->element[0]->integer, t = e->element[1]->integer;
        const redisReply *m = e->element[2];
        if (s < 0 || t >= CMP_REDIS_SLOTS || s > t || m->type != REDIS_REPLY_ARRAY ||
            m->elements < 2 || !str_el(m->element[0]) ||
            m->element[1]->type != REDIS_REPLY_INTEGER || m->element[1]->integer <= 0 ||
            m->element[1]->integer > 65535 || n >= max)
            return -1;
        cmp_redis_range *o = &out[n++];
        const char *h = m->element[0]->str;
        size_t hl = m->element[0]->len;
        if (hl == 0 || (hl == 1 && h[0] == '?')) { /* unknown: the node we asked */
            h = asked_host;
            hl = strlen(asked_host);
        }
        if (hl >= sizeof o->host)
            return -1;
        memcpy(o->host, h, hl);
        o->host[hl] = '\0';
        o->start = (uint16_t)s;
        o->end = (uint16_t)t;
        o->port = (int)m->element[1]->integer;
    }
    return n;
}

int cmp_redis_parse_master_addr(const redisReply *r, char *host, size_t hostsz, int *port)
{
    if (r == NULL)
        return -1;
    if (r->type == REDIS_REPLY_NIL)
        return 1;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || !str_el(r->element[0]) ||
        !str_el(r->element[1]) || r->element[0]->len == 0 || r->element[0]->len >= hostsz)
        return -1;
    const redisReply *p = r->element[1];
    unsigned long pv = 0;
    if (p->len == 0 || p->len > 5)
        return -1;
    for (size_t i = 0; i < p->len; i++) {
        if (p->str[i] < '0' || p->str[i] > '9')
            return -1;
        pv = pv * 10 + (unsigned long)(p->str[i] - '0');
    }
    if (pv == 0 || pv > 65535)
        return -1;
    memcpy(host, r->element[0]->str, r->element[0]->len);
    host[r->element[0]->len] = '\0';
    *port = (int)pv;
    return 0;
}

int cmp_redis_parse_role(const redisReply *r)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 1 || !str_el(r->element[0]))
        return -1;
    const redisReply *e = r->element[0];
    return e->len == 6 && memcmp(e->str, "master", 6) == 0 ? 1 : 0;
}

size_t cmp_redis_masked(const char *s, size_t n, const char *secret, char *out, size_t outsz)
{
    size_t k = secret != NULL ? strlen(secret) : 0, o = 0, i = 0;
    if (outsz == 0)
        return 0;
    while (i < n && o + 1 < outsz) {
        size_t m = k == 0 ? 0 : n - i < k ? n - i : k; /* all of it, or what is left of S */
        if (m > 0 && memcmp(s + i, secret, m) == 0) {
            for (size_t j = 0; j < m && o + 1 < outsz; j++)
                out[o++] = '*';
            i += m;
            continue;
        }
        unsigned char c = (unsigned char)s[i++];
        out[o++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    out[o] = '\0';
    return o;
}
