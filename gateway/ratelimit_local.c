/* ratelimit_local.c — see ratelimit_local.h. Open addressing, linear probing; key 0 marks
 * an empty slot (a real hash of 0 is mapped to 1). */
#include "gateway/ratelimit_local.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct rl_entry {
    uint64_t key;
    uint64_t tat;
} rl_entry;

typedef struct rl_shard {
    pthread_mutex_t mu;
    rl_entry *e;
    uint32_t cap, n; /* cap a power of two, n < cap / 2 */
} rl_shard;

static rl_shard shards[GW_RL_LOCAL_SHARDS] = {
    [0 ... GW_RL_LOCAL_SHARDS - 1] = { .mu = PTHREAD_MUTEX_INITIALIZER }
};
static atomic_uint_fast64_t evictions;

static rl_entry *find(rl_shard *s, uint64_t key)
{
    uint32_t mask = s->cap - 1;
    for (uint32_t i = (uint32_t)(key >> 7) & mask;; i = (i + 1) & mask) {
        if (s->e[i].key == key || s->e[i].key == 0)
            return &s->e[i];
    }
}

/* Rebuilds S into NEWCAP slots, keeping keys still ahead of NOW (all when keep_all). */
static int rebuild(rl_shard *s, uint32_t newcap, uint64_t now, int keep_all)
{
    rl_entry *old = s->e;
    uint32_t oldcap = s->cap;
    rl_entry *e = calloc(newcap, sizeof *e);
    if (!e)
        return -1;
    s->e = e;
    s->cap = newcap;
    s->n = 0;
    for (uint32_t i = 0; i < oldcap; i++) {
        if (old[i].key && (keep_all || old[i].tat > now) && s->n < newcap / 2) {
            *find(s, old[i].key) = old[i];
            s->n++;
        }
    }
    free(old);
    return 0;
}

/* Room for one more key in S; 0 or -1 (out of memory: the request passes untracked). */
static int make_room(rl_shard *s, uint64_t now)
{
    if (s->e && s->n + 1 < s->cap / 2)
        return 0;
    if (!s->e)
        return rebuild(s, 64, now, 1);
    if (s->cap < GW_RL_LOCAL_SHARD_MAX * 2)
        return rebuild(s, s->cap * 2, now, 1);
    if (rebuild(s, s->cap, now, 0) != 0)
        return -1;
    if (s->n + 1 >= s->cap / 2) { /* every key still limited: start the shard over */
        atomic_fetch_add_explicit(&evictions, s->n, memory_order_relaxed);
        memset(s->e, 0, s->cap * sizeof *s->e);
        s->n = 0;
    }
    return 0;
}

void gw_rl_local_check(uint64_t key, const gw_gcra *g, uint64_t now_ns, gw_gcra_result *r)
{
    if (key == 0)
        key = 1;
    rl_shard *s = &shards[key % GW_RL_LOCAL_SHARDS];
    pthread_mutex_lock(&s->mu);
    rl_entry *e = s->e ? find(s, key) : NULL;
    if (!e || e->key == 0) {
        if (make_room(s, now_ns) != 0) {
            pthread_mutex_unlock(&s->mu);
            uint64_t tat = 0;
            gw_gcra_check(g, &tat, now_ns, r);
            return;
        }
        e = find(s, key);
        if (e->key == 0) {
            e->key = key;
            e->tat = 0;
            s->n++;
        }
    }
    gw_gcra_check(g, &e->tat, now_ns, r);
    pthread_mutex_unlock(&s->mu);
}

void gw_rl_local_reset(void)
{
    for (int i = 0; i < GW_RL_LOCAL_SHARDS; i++) {
        pthread_mutex_lock(&shards[i].mu);
        free(shards[i].e);
        shards[i].e = NULL;
        shards[i].cap = shards[i].n = 0;
        pthread_mutex_unlock(&shards[i].mu);
    }
}

uint64_t gw_rl_local_evictions(void)
{
    return atomic_load_explicit(&evictions, memory_order_relaxed);
}
