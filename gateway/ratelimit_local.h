/* ratelimit_local.h — the in-process GCRA store: one TAT per key hash, shared by every worker
 * of the process (sharded, a short mutex per shard: no I/O, no allocation on the hot path
 * once a shard has grown). Bounded: a full shard first drops keys whose TAT is in the past
 * (their limit is whole again, forgetting them changes nothing), then, if still full, the
 * oldest half of what is left is not tracked — counted in gw_rl_local_evictions. */
#ifndef GW_RATELIMIT_LOCAL_H
#define GW_RATELIMIT_LOCAL_H

#include <stdint.h>

#include "gateway/gcra.h"

#define GW_RL_LOCAL_SHARDS 64
#define GW_RL_LOCAL_SHARD_MAX 16384 /* keys per shard: ~1M keys per process */

/* Decides a request of key KEY (a hash: see gw_rl_key_hash) at NOW_NS under G. */
void gw_rl_local_check(uint64_t key, const gw_gcra *g, uint64_t now_ns, gw_gcra_result *r);
/* Forgets every key (tests, and a shutdown leaves nothing allocated). */
void gw_rl_local_reset(void);
uint64_t gw_rl_local_evictions(void);

#endif
