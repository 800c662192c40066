/* redis_client.h — one logical Redis on a worker's loop, whatever its topology: one server,
 * a master found through Redis Sentinel, or a Redis Cluster. The user cache (cache_redis.c)
 * and the shared rate limiter (gateway/ratelimit_redis.c) send commands through it and never
 * see a connection, a master address or a slot. hiredis 0.14 async + its libuv adapter; nothing
 * blocks the loop (names are resolved with uv_getaddrinfo, hiredis gets numeric addresses).
 *
 * Topologies (cmp_redis_conf.kind):
 *  SINGLE    one connection to "host:port".
 *  SENTINEL  the sentinels are asked in turn `SENTINEL get-master-addr-by-name NAME`; the
 *            answer is connected and must say `ROLE` master before anything is sent. A
 *            failover is followed by asking the sentinels again when the master connection
 *            is lost, stalls, or answers -READONLY (a demoted master). We do not subscribe to
 *            +switch-master: a killed master is seen at once (the socket closes), a demoted
 *            one at its first write; a subscription would be one more connection per worker
 *            per sentinel and a message that can be missed, where the reconnect path is
 *            needed anyway.
 *  CLUSTER   CLUSTER SLOTS from a seed (then from any known node) gives the slot map; every
 *            master gets a connection; a command goes to the master of its key's slot
 *            (CRC16, hash tags). -MOVED updates the slot and re-sends there (and refreshes the
 *            whole map soon after); -ASK sends ASKING + the command once to the named node.
 *            At most CMP_REDIS_MAX_REDIRECTS per command. A master lost (or a map with holes)
 *            makes the map refresh every CMP_REDIS_REFRESH_MS until it is whole and every
 *            master is up again: the replica promoted by the cluster is then in the map.
 *
 * Every connection: connect + first answer (PING, ROLE, or the sentinel query) within
 * CMP_REDIS_CONNECT_TIMEOUT_MS; with a password, AUTH goes first in the same write (the
 * sentinels with sentinel_auth), and an error to it (-WRONGPASS) fails the attempt like a
 * refused connect: logged once per streak with the server's text, never the password; a lost one is re-made after a backoff (100 ms doubling to
 * 5 s, with jitter; 500 ms at most between sentinel rounds, 250 ms between cluster map
 * refreshes while a master is missing; a round over the cluster seeds without a map pauses
 * 100 ms doubling to 5 s); a connection
 * with commands outstanding and no reply for stall_ms is dropped (a hung server). Commands
 * whose node is not up, or has CMP_REDIS_MAX_PENDING outstanding (a slow server), are
 * refused at once (cmp_redis_send returns -1): the caller decides without Redis (cache:
 * fail open; rate limiter: local share). */
#ifndef CMP_REDIS_CLIENT_H
#define CMP_REDIS_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include <hiredis/hiredis.h>

#define CMP_REDIS_MAX_ADDRS 16   /* sentinels or cluster seeds in a configuration */
#define CMP_REDIS_ADDR_MAX 128   /* "host:port", NUL included */
#define CMP_REDIS_NAME_MAX 128   /* a sentinel master name, an ACL user name */
#define CMP_REDIS_PASS_MAX 1024  /* a password, NUL included */
#define CMP_REDIS_MAX_NODES 64   /* cluster nodes known at once (unused ones are reused) */
#define CMP_REDIS_MAX_REDIRECTS 5
#define CMP_REDIS_MAX_PENDING 1024 /* commands outstanding per connection: more are refused */
#define CMP_REDIS_CONNECT_TIMEOUT_MS 1000
#define CMP_REDIS_BACKOFF_MIN_MS 100
#define CMP_REDIS_BACKOFF_MAX_MS 5000
#define CMP_REDIS_REFRESH_MS 250 /* cluster map refresh while a master is missing */

typedef enum cmp_redis_kind {
    CMP_REDIS_NONE = 0,
    CMP_REDIS_SINGLE,
    CMP_REDIS_SENTINEL,
    CMP_REDIS_CLUSTER,
} cmp_redis_kind;

/* AUTH after every connect, before the connection counts as up (empty password: none). */
typedef struct cmp_redis_auth {
    char username[CMP_REDIS_NAME_MAX]; /* "": AUTH password (requirepass, or the default user) */
    char password[CMP_REDIS_PASS_MAX];
} cmp_redis_auth;

typedef struct cmp_redis_conf {
    cmp_redis_kind kind;
    int n;                                          /* addresses in addr[] */
    char addr[CMP_REDIS_MAX_ADDRS][CMP_REDIS_ADDR_MAX]; /* SINGLE: the server; SENTINEL: the
                                                       sentinels; CLUSTER: seed nodes */
    char master_name[CMP_REDIS_NAME_MAX];           /* SENTINEL */
    cmp_redis_auth auth;          /* the servers: SINGLE's, SENTINEL's master, CLUSTER's nodes */
    cmp_redis_auth sentinel_auth; /* SENTINEL: the sentinels (their own requirepass) */
} cmp_redis_conf;

/* NULL when CONF is usable, else a static reason. */
const char *cmp_redis_conf_error(const cmp_redis_conf *conf);
/* "host:port" into a SINGLE configuration; -1 when malformed (CONF then NONE). The
 * credentials are cleared too. */
int cmp_redis_conf_single(cmp_redis_conf *conf, const char *hostport);
/* For logs: "127.0.0.1:6379", "sentinel master NAME", "cluster via 127.0.0.1:7000,...".
 * Never a credential. */
void cmp_redis_conf_describe(const cmp_redis_conf *conf, char *out, size_t n);

typedef struct cmp_redis cmp_redis;
struct cmp__rnode;

/* REPLY: the answer (valid during the call only), or NULL when there will be none (the
 * connection was lost or closed, the client is closing, a redirection could not be
 * followed). An error reply is passed as is (after redirections were followed). */
typedef void (*cmp_redis_reply_fn)(void *priv, redisReply *reply);
/* The client became usable (UP 1) or not (UP 0, WHY says why). Not called while closing. */
typedef void (*cmp_redis_state_fn)(void *arg, int up, const char *why);

/* A command in flight; lives in the caller's memory (e.g. its request) from cmp_redis_send
 * until its reply function ran. Opaque. */
typedef struct cmp_redis_cmd {
    cmp_redis *rc;
    struct cmp__rnode *node; /* where it was last sent */
    cmp_redis_reply_fn fn;
    void *priv;
    char *buf;               /* CLUSTER: the formatted command, kept for a redirection */
    size_t len;
    int redirects;
} cmp_redis_cmd;

/* A client for LOOP; WHO prefixes its log lines ("cache: worker 0"). STALL_MS: see above
 * (0: 1000). Connecting starts at once. NULL when CONF is unusable or out of memory. */
cmp_redis *cmp_redis_new(uv_loop_t *loop, const cmp_redis_conf *conf, uint32_t stall_ms,
                         const char *who, cmp_redis_state_fn state, void *arg);
/* Every command still held gets its NULL reply before this returns (from inside a reply
 * function: that of the connection being answered, when it returns). The memory goes once the
 * timer closed: run the loop. Safe with NULL and twice. */
void cmp_redis_close(cmp_redis *rc);

/* 1 when commands can go out now (the node of any key is connected). */
int cmp_redis_up(const cmp_redis *rc);
/* Connections (re-)established after the first: a reconnect, a new master, a new node. */
uint64_t cmp_redis_reconnects(const cmp_redis *rc);

/* Sends ARGV (hiredis copies it: ARGV may go when this returns) for KEY (its slot picks the
 * cluster node; ignored otherwise). 0: sent, FN(PRIV, reply) follows exactly once, CMD is
 * held until then. -1: not sent (no usable connection, out of memory), FN is not called. */
int cmp_redis_send(cmp_redis *rc, cmp_redis_cmd *cmd, const char *key, size_t klen, int argc,
                   const char **argv, const size_t *lens, cmp_redis_reply_fn fn, void *priv);

#endif
