/* cache_lru.c — the in-process cache used when no Redis is configured: a chained hash map
 * plus an intrusive recency list, O(1) get/set/del, bounded by a number of entries.
 * Expiry (ttl + stale window) is checked on get; the least recently used entry goes when a
 * set finds the map full.
 *
 * An entry is refcounted: one reference while it is in the map, one per get waiting for
 * delivery (gets answer on the next loop iteration), so a hit's bytes stay valid through the
 * callback even if the key is overwritten, deleted or evicted meanwhile. */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "composers/cache_int.h"

struct cmp__entry {
    cmp__entry *hnext;   /* bucket chain */
    gw_queue lru;        /* in l->list while in the map */
    uint64_t hash;
    uint64_t stored_ms;  /* loop time of the set */
    uint64_t expire_ms;  /* stored + ttl + stale: not returned from then on */
    uint32_t klen, vlen;
    uint32_t refs;
    char data[];         /* key bytes, then value bytes */
};

/* ---- SipHash-1-3 (keys may come from clients: a keyed hash keeps chains short) ---------- */
#define CMP__ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define CMP__SIPROUND                                                                  \
    do {                                                                               \
        v0 += v1; v1 = CMP__ROTL(v1, 13); v1 ^= v0; v0 = CMP__ROTL(v0, 32);            \
        v2 += v3; v3 = CMP__ROTL(v3, 16); v3 ^= v2;                                    \
        v0 += v3; v3 = CMP__ROTL(v3, 21); v3 ^= v0;                                    \
        v2 += v1; v1 = CMP__ROTL(v1, 17); v1 ^= v2; v2 = CMP__ROTL(v2, 32);            \
    } while (0)

static uint64_t cmp__siphash(uint64_t k0, uint64_t k1, const unsigned char *p, size_t n)
{
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    uint64_t b = (uint64_t)n << 56, m;
    size_t i, tail = n & 7;

    for (i = 0; i + 8 <= n; i += 8) {
        memcpy(&m, p + i, 8); /* little-endian hosts; the hash only has to be consistent */
        v3 ^= m;
        CMP__SIPROUND;
        v0 ^= m;
    }
    for (size_t j = 0; j < tail; j++)
        b |= (uint64_t)p[i + j] << (8 * j);
    v3 ^= b;
    CMP__SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    CMP__SIPROUND;
    CMP__SIPROUND;
    CMP__SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

int cmp__lru_init(cmp__lru *l, uint32_t cap)
{
    uint32_t nb = 16;
    uint64_t k[2];

    while (nb < cap && nb < (1u << 30))
        nb <<= 1;
    memset(l, 0, sizeof *l);
    l->buckets = calloc(nb, sizeof *l->buckets);
    if (l->buckets == NULL)
        return -1;
    l->mask = nb - 1;
    l->cap = cap;
    gw_queue_init(&l->list);
    /* a random key per cache; the clock and addresses if the kernel has no entropy yet */
    if (getrandom(k, sizeof k, GRND_NONBLOCK) != (ssize_t)sizeof k) {
        k[0] = uv_hrtime() ^ ((uint64_t)(uintptr_t)l << 16);
        k[1] = (uint64_t)(uintptr_t)l->buckets * 0x9e3779b97f4a7c15ULL;
    }
    l->k0 = k[0];
    l->k1 = k[1];
    return 0;
}

void cmp__entry_unref(cmp__entry *e)
{
    if (--e->refs == 0)
        free(e);
}

const char *cmp__entry_value(const cmp__entry *e, size_t *len, uint64_t *stored_ms)
{
    *len = e->vlen;
    *stored_ms = e->stored_ms;
    return e->data + e->klen;
}

/* The map slot pointing at KEY's entry (*slot NULL when absent). */
static cmp__entry **cmp__lru_slot(cmp__lru *l, const char *key, size_t klen, uint64_t h)
{
    cmp__entry **pp = &l->buckets[h & l->mask];

    for (; *pp != NULL; pp = &(*pp)->hnext) {
        cmp__entry *e = *pp;
        if (e->hash == h && e->klen == klen && memcmp(e->data, key, klen) == 0)
            break;
    }
    return pp;
}

/* Takes the entry at SLOT out of the map and drops the map's reference. */
static void cmp__lru_remove(cmp__lru *l, cmp__entry **slot)
{
    cmp__entry *e = *slot;

    *slot = e->hnext;
    e->hnext = NULL;
    gw_queue_remove(&e->lru);
    l->n--;
    cmp__entry_unref(e);
}

cmp__entry *cmp__lru_get(cmp__lru *l, const char *key, size_t klen, uint64_t now)
{
    uint64_t h = cmp__siphash(l->k0, l->k1, (const unsigned char *)key, klen);
    cmp__entry **slot = cmp__lru_slot(l, key, klen, h), *e = *slot;

    if (e == NULL)
        return NULL;
    if (now >= e->expire_ms) {
        cmp__lru_remove(l, slot);
        return NULL;
    }
    gw_queue_remove(&e->lru);
    gw_queue_insert_head(&l->list, &e->lru);
    e->refs++;
    return e;
}

int cmp__lru_set(cmp__lru *l, const char *key, size_t klen, const char *val, size_t vlen,
                 uint64_t now, uint64_t keep_ms)
{
    uint64_t h = cmp__siphash(l->k0, l->k1, (const unsigned char *)key, klen);
    cmp__entry **slot = cmp__lru_slot(l, key, klen, h), *e;

    if (*slot != NULL)
        cmp__lru_remove(l, slot); /* the slot now holds the next in chain: still valid */
    if (klen > UINT32_MAX || vlen > UINT32_MAX)
        return -1;
    e = malloc(sizeof *e + klen + vlen);
    if (e == NULL)
        return -1;
    e->hash = h;
    e->stored_ms = now;
    e->expire_ms = now + keep_ms;
    e->klen = (uint32_t)klen;
    e->vlen = (uint32_t)vlen;
    e->refs = 1;
    memcpy(e->data, key, klen);
    if (vlen > 0)
        memcpy(e->data + klen, val, vlen);
    e->hnext = l->buckets[h & l->mask];
    l->buckets[h & l->mask] = e;
    gw_queue_insert_head(&l->list, &e->lru);
    l->n++;

    if (l->n > l->cap) { /* evict the least recently used (never E: it is the head) */
        cmp__entry *old = GW_QUEUE_DATA(l->list.prev, cmp__entry, lru);
        cmp__lru_remove(l, cmp__lru_slot(l, old->data, old->klen, old->hash));
    }
    return 0;
}

void cmp__lru_del(cmp__lru *l, const char *key, size_t klen)
{
    uint64_t h = cmp__siphash(l->k0, l->k1, (const unsigned char *)key, klen);
    cmp__entry **slot = cmp__lru_slot(l, key, klen, h);

    if (*slot != NULL)
        cmp__lru_remove(l, slot);
}

/* Frees the map. Entries still pinned by a delivery live on until unpinned. */
void cmp__lru_free(cmp__lru *l)
{
    gw_queue *q, *n;

    if (l->buckets == NULL)
        return;
    GW_QUEUE_FOREACH_SAFE(q, n, &l->list) {
        cmp__entry *e = GW_QUEUE_DATA(q, cmp__entry, lru);
        gw_queue_remove(&e->lru);
        cmp__entry_unref(e);
    }
    free(l->buckets);
    l->buckets = NULL;
    l->n = 0;
}
