/* ratelimit_redis.c — see ratelimit_redis.h. Topology, connections and stalls are the shared
 * client's (composers/redis_client.c): its reply function runs exactly once per command
 * (NULL when there is no answer). A check waits in the worker's pending list until the end
 * of the loop turn; then the turn's checks go out as one script call per batch (per cluster
 * slot), so Redis runs one script, and hiredis formats one command, for many requests. A wait
 * is held by its request (OWED), the pending list (PENDING) and the batch sent (HIREDIS), and
 * freed by whichever lets go last. */
#include "gateway/ratelimit_redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "composers/redis_client.h"
#include "composers/redis_topo.h"
#include "gateway/ratelimit_local.h"
#include "http/http1.h"
#include "http/queue.h"

/* GCRA on Redis's clock (TIME), so instances with skewed clocks share one timeline, for a
 * batch: KEYS the buckets; ARGV per key its emission interval and tolerance in microseconds
 * and how many requests of this batch it decides. For each key: the requests pass in order
 * while they fit (gw_gcra_batch_passed: the same arithmetic as one call per request), the TAT
 * moves by T for each, and the key's "ahead" before them (max(TAT, now) - now) is returned,
 * from which the worker derives every request's answer (gw_gcra_batch_result). The answers
 * are one string, "ahead1 ahead2 ...": one reply object for hiredis to allocate. A key
 * expires when its bucket is full. */
static const char SCRIPT[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local out = {}\n"
    "for i = 1, #KEYS do\n"
    "  local T = tonumber(ARGV[3 * i - 2])\n"
    "  local tau = tonumber(ARGV[3 * i - 1])\n"
    "  local n = tonumber(ARGV[3 * i])\n"
    "  local tat = tonumber(redis.call('GET', KEYS[i])) or now\n"
    "  if tat < now then tat = now end\n"
    "  local ahead = tat - now\n"
    "  if ahead <= tau then\n"
    "    local k = math.min(n, math.floor((tau - ahead) / T) + 1)\n"
    "    local new = tat + k * T\n"
    "    redis.call('SET', KEYS[i], string.format('%d', new), 'PX', math.floor((new - now) / 1000) + 1)\n"
    "  end\n"
    "  out[i] = string.format('%d', ahead)\n"
    "end\n"
    "return table.concat(out, ' ')\n";

#define BATCH_MAX 128 /* requests (and so keys) per script call: 3 arguments per key */

#define RL_KEY_MAX 320
#define HEARTBEAT_MS 1000   /* each worker refreshes its instance's entry this often */
#define HEARTBEAT_TTL_MS 3000 /* an instance not heard of for this long is gone */
#define INSTANCES_KEY "gw:rl:instances"

/* The instance registry: a sorted set of members scored by Redis's clock (ms); members not
 * refreshed for ARGV[2] ms are removed; returns how many are live. One key: one slot. */
static const char HEARTBEAT[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local ttl = tonumber(ARGV[2])\n"
    "redis.call('ZADD', KEYS[1], now, ARGV[1])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)\n"
    "redis.call('PEXPIRE', KEYS[1], ttl)\n"
    "return redis.call('ZCARD', KEYS[1])\n";

enum { W_OWED = 1,    /* the request waits for this answer */
       W_HIREDIS = 2, /* a batch sent to Redis holds it */
       W_PENDING = 4  /* on rl->pending: goes out at the end of this loop turn */ };

struct gw_rl_wait {
    gw_queue node;           /* on rl->inflight while OWED */
    gw_queue pnode;          /* on rl->pending while PENDING */
    gw_rl_redis *rl;
    unsigned flags;
    uint64_t deadline;
    gw_rl_done done;
    void *arg;
    const rt_route *route;   /* valid while OWED: the caller pins the table */
    const rt_rate_limit *l;  /* the route's, or the configuration's default */
    uint64_t key;            /* the local bucket, for a fallback decision */
    uint64_t t_us, tau_us;   /* the limit as the script takes it */
    uint16_t slot;           /* cluster: its key's slot */
    size_t rkey_len;
    char rkey[RL_KEY_MAX];   /* the Redis key (read again by an EVAL retry) */
};

/* One script call: its requests in arrival order, each tied to one of its distinct keys. */
typedef struct gw_rl_batch {
    cmp_redis_cmd cmd;
    gw_rl_redis *rl;
    int retried;             /* NOSCRIPT: re-sent once as EVAL */
    uint32_t n, n_keys;
    gw_rl_wait *w[BATCH_MAX];
    uint8_t key_of[BATCH_MAX];      /* w[i]'s key */
    uint8_t key_first[BATCH_MAX];   /* a request of each key (its rkey) */
    uint16_t key_n[BATCH_MAX];      /* requests of each key */
    uint64_t key_t[BATCH_MAX], key_tau[BATCH_MAX]; /* each key's limit (the batch's own copy:
                                                     * its waits may be released first) */
} gw_rl_batch;

struct gw_rl_redis {
    uv_loop_t *loop;
    uv_timer_t cmd_timer, hb_timer;
    uv_check_t flush_check;  /* sends the pending checks after this turn's I/O */
    uv_idle_t flush_idle;    /* ... or next turn, without waiting in poll, when a check came
                              * in after the flush of this turn (from another check handle) */
    int timers_open;         /* the four handles above, until closed */
    int cluster;             /* a batch holds keys of one slot only */
    gw_queue pending;        /* PENDING waits, oldest first */
    uint32_t n_pending;
    int batches_out;         /* sent, not answered yet */
    gw_rl_batch *spare;      /* one batch kept for the next turn: no malloc per turn */
    int closing;
    cmp_redis *rc;
    char where[300];
    uint32_t timeout_ms, divisor; /* divisor: configured (0: learned) */
    uint32_t learned;             /* live instances in the registry (0: not known yet) */
    int worker_id, ever_up, logged_down;
    int refused;                  /* script calls answered with an error, this streak */
    int hb_refused;               /* the heartbeat too */
    char sha[41];
    cmp_redis_cmd hb_cmd;         /* the heartbeat, while hb_busy */
    int hb_busy;
    gw_queue inflight;       /* OWED waits, oldest first */
    gw_queue free_waits;     /* recycled waits: no malloc per request */
    uint32_t n_free;
    int n_live;              /* waits not yet freed (and the heartbeat in flight) */
    gw_rl_mode mode;
};

static void rl_log(const gw_rl_redis *rl, const char *fmt, const char *a)
{
    char msg[256];
    snprintf(msg, sizeof msg, fmt, a);
    fprintf(stderr, "gateway: ratelimit: worker %d: redis %s: %s\n", rl->worker_id, rl->where,
            msg);
}

uint32_t gw_rl_redis_divisor(const gw_rl_redis *rl)
{
    if (rl == NULL)
        return 1;
    return rl->divisor ? rl->divisor : rl->learned ? rl->learned : 1;
}

static void set_mode(gw_rl_redis *rl, gw_rl_mode m)
{
    if (rl->mode == m)
        return;
    gw_rl_workers_in_mode(rl->mode, m);
    rl->mode = m;
}

#define FREE_WAITS_MAX 256

static void maybe_free(gw_rl_redis *rl)
{
    if (!rl->closing || rl->timers_open != 0 || rl->n_live != 0)
        return;
    while (!gw_queue_empty(&rl->free_waits)) {
        gw_rl_wait *w = GW_QUEUE_DATA(rl->free_waits.next, gw_rl_wait, node);
        gw_queue_remove(&w->node);
        free(w);
    }
    free(rl->spare);
    free(rl);
}

static gw_rl_wait *wait_new(gw_rl_redis *rl)
{
    gw_rl_wait *w;
    if (!gw_queue_empty(&rl->free_waits)) {
        w = GW_QUEUE_DATA(rl->free_waits.next, gw_rl_wait, node);
        gw_queue_remove(&w->node);
        rl->n_free--;
        return w;
    }
    return malloc(sizeof *w);
}

/* W is no longer used (never sent, or released): kept for the next request. */
static void wait_recycle(gw_rl_redis *rl, gw_rl_wait *w)
{
    if (rl->n_free < FREE_WAITS_MAX && !rl->closing) {
        gw_queue_insert_head(&rl->free_waits, &w->node);
        rl->n_free++;
    } else {
        free(w);
    }
}

static void release(gw_rl_wait *w, unsigned flag)
{
    gw_rl_redis *rl = w->rl;
    w->flags &= ~flag;
    if (w->flags & (W_OWED | W_HIREDIS | W_PENDING))
        return;
    wait_recycle(rl, w);
    rl->n_live--;
    maybe_free(rl);
}

/* Answers the waiting request with R. One not sent yet is not sent at all (it must not
 * count in Redis); the caller releases OWED. */
static void finish(gw_rl_wait *w, const gw_gcra_result *r)
{
    gw_queue_remove(&w->node);
    if (w->flags & W_PENDING) {
        gw_queue_remove(&w->pnode);
        w->rl->n_pending--;
        w->flags &= ~W_PENDING;
    }
    w->flags &= ~W_OWED;
    w->done(w->arg, r);
    release(w, 0); /* a batch may still hold it: its reply lets go */
}

static void decide_fallback(gw_rl_wait *w)
{
    gw_gcra_result r;
    gw_rl_decide_hash(w->route, w->l, w->key, gw_rl_redis_divisor(w->rl), GW_RL_FALLBACK, &r);
    finish(w, &r);
}

/* An error answer to a script call (an ACL user without +evalsha or +eval, or without
 * the keys: -NOPERM; a script error): its requests are decided locally. Counted each time;
 * logged once per streak with Redis's text; while the checks' calls are refused the worker
 * counts as in fallback mode, whatever the connection's state. HEARTBEAT: the instance
 * registry's call (the divisor is then not learned). */
static void script_refused(gw_rl_redis *rl, const char *cmd, const redisReply *rep,
                           int heartbeat)
{
    char msg[256];
    int *streak = heartbeat ? &rl->hb_refused : &rl->refused;
    gw_rl_redis_errors_add(1);
    if (!heartbeat)
        set_mode(rl, GW_RL_FALLBACK);
    if (*streak)
        return;
    *streak = 1;
    snprintf(msg, sizeof msg, "%s refused: %.*s; %s rate/%u per instance", cmd,
             (int)(rep->len < 160 ? rep->len : 160), rep->str,
             heartbeat ? "instances are not counted: the fallback share stays"
                       : "decisions fall back to", gw_rl_redis_divisor(rl));
    rl_log(rl, "%s", msg);
}

/* A script call answered: the end of a refusal streak. */
static void script_answered(gw_rl_redis *rl, int heartbeat)
{
    if (heartbeat) {
        if (rl->hb_refused)
            rl_log(rl, "%s", "the instance registry answers again");
        rl->hb_refused = 0;
        return;
    }
    if (!rl->refused)
        return;
    rl->refused = 0;
    if (cmp_redis_up(rl->rc)) {
        set_mode(rl, GW_RL_SHARED);
        rl_log(rl, "%s", "the script answers again: limits are shared");
    }
}

/* ---- connection (the client's state) and the instance heartbeat ------------------------ */
static void on_state(void *arg, int up, const char *why)
{
    gw_rl_redis *rl = arg;
    if (up) {
        if (!rl->ever_up || rl->logged_down)
            rl_log(rl, "%s", rl->refused ? "connected again (its script calls were refused: "
                                           "deciding locally until one is answered)"
                             : rl->ever_up ? "connected again: limits are shared"
                                           : "connected: limits are shared");
        rl->ever_up = 1;
        rl->logged_down = 0;
        set_mode(rl, rl->refused ? GW_RL_FALLBACK : GW_RL_SHARED);
        return;
    }
    set_mode(rl, GW_RL_FALLBACK);
    if (!rl->logged_down) {
        char msg[240];
        snprintf(msg, sizeof msg, "%s: %s; limits fall back to rate/%u per instance",
                 rl->ever_up ? "connection lost" : "unreachable", why, gw_rl_redis_divisor(rl));
        rl_log(rl, "%s", msg);
        rl->logged_down = 1;
    }
}

static void on_heartbeat(void *priv, redisReply *rep)
{
    gw_rl_redis *rl = priv;
    rl->hb_busy = 0;
    rl->n_live--;
    if (rep != NULL && !rl->closing) {
        if (rep->type == REDIS_REPLY_ERROR)
            script_refused(rl, "EVAL (instance registry)", rep, 1);
        else
            script_answered(rl, 1);
    }
    if (rep != NULL && rep->type == REDIS_REPLY_INTEGER && rep->integer > 0 && !rl->closing) {
        rl->learned = rep->integer > 1024 ? 1024 : (uint32_t)rep->integer;
        gw_rl_instances_seen(gw_rl_redis_divisor(rl));
    }
    maybe_free(rl);
}

/* This process's member in the registry: host name, pid and a random tag (two containers
 * may share both). The same for every worker of the process. */
static char instance_tag[128];
static uv_once_t instance_once = UV_ONCE_INIT;

static void instance_init(void)
{
    char host[64] = "host";
    size_t n = sizeof host;
    if (uv_os_gethostname(host, &n) != 0)
        snprintf(host, sizeof host, "host");
    snprintf(instance_tag, sizeof instance_tag, "%s:%d:%08x", host, (int)getpid(),
             (unsigned)(uv_hrtime() ^ (uint64_t)time(NULL) << 20));
}

static const char *instance_id(void)
{
    uv_once(&instance_once, instance_init);
    return instance_tag;
}

static void on_hb_timer(uv_timer_t *t)
{
    gw_rl_redis *rl = t->data;
    char ttl[16];
    if (rl->hb_busy || !cmp_redis_up(rl->rc))
        return;
    snprintf(ttl, sizeof ttl, "%u", HEARTBEAT_TTL_MS);
    const char *id = instance_id();
    const char *argv[6] = { "EVAL", HEARTBEAT, "1", INSTANCES_KEY, id, ttl };
    size_t lens[6] = { 4, sizeof HEARTBEAT - 1, 1, sizeof INSTANCES_KEY - 1, strlen(id),
                       strlen(ttl) };
    if (cmp_redis_send(rl->rc, &rl->hb_cmd, INSTANCES_KEY, sizeof INSTANCES_KEY - 1, 6, argv,
                       lens, on_heartbeat, rl) == 0) {
        rl->hb_busy = 1;
        rl->n_live++;
    }
}

/* ---- checks ------------------------------------------------------------------------- */
static void on_cmd_timer(uv_timer_t *t);
static void flush(gw_rl_redis *rl);
static int send_batch(gw_rl_redis *rl, gw_rl_batch *b, int full_script);

/* The script's answer for a batch of N_KEYS keys, "A1 A2 ...", into AHEAD; 0, or -1 when it
 * is not that. */
static int parse_answer(const redisReply *rep, uint32_t n_keys, uint64_t *ahead)
{
    const char *p, *end;
    if (rep == NULL || rep->type != REDIS_REPLY_STRING || rep->len > 20 * BATCH_MAX)
        return -1;
    p = rep->str;
    end = p + rep->len;
    for (uint32_t i = 0; i < n_keys; i++) {
        uint64_t x = 0;
        int digits = 0;
        if (i > 0 && (p >= end || *p++ != ' '))
            return -1;
        for (; p < end && *p >= '0' && *p <= '9' && digits < 18; p++, digits++)
            x = x * 10 + (uint64_t)(*p - '0');
        if (digits == 0)
            return -1;
        ahead[i] = x;
    }
    return p == end ? 0 : -1;
}

static void batch_free(gw_rl_redis *rl, gw_rl_batch *b)
{
    if (rl->spare == NULL && !rl->closing)
        rl->spare = b;
    else
        free(b);
    rl->n_live--;
    maybe_free(rl);
}

static void on_reply(void *privdata, redisReply *rep)
{
    gw_rl_batch *b = privdata;
    gw_rl_redis *rl = b->rl;
    uint64_t ahead[BATCH_MAX];
    uint16_t seen[BATCH_MAX] = { 0 };
    uint32_t owed = 0;
    for (uint32_t i = 0; i < b->n; i++)
        owed += (b->w[i]->flags & W_OWED) != 0;
    if (rep && rep->type == REDIS_REPLY_ERROR && !b->retried && !rl->closing && owed > 0 &&
        strncmp(rep->str, "NOSCRIPT", 8) == 0) {
        b->retried = 1; /* the server lost the script (or never had it): EVAL loads it */
        if (send_batch(rl, b, 1) == 0)
            return; /* the new command holds the batch now */
    }
    int ok = parse_answer(rep, b->n_keys, ahead) == 0;
    if (rep != NULL && !rl->closing) {
        if (rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOSCRIPT", 8) != 0)
            script_refused(rl, b->retried ? "EVAL" : "EVALSHA", rep, 0);
        else if (ok)
            script_answered(rl, 0);
    }
    /* every request decided first, then let go: a released wait may be recycled (or freed)
     * at once, by a check a done callback starts */
    for (uint32_t i = 0; i < b->n; i++) {
        gw_rl_wait *w = b->w[i];
        uint32_t k = b->key_of[i], index = seen[k]++; /* counted even when no longer owed:
                                                        * Redis counted it */
        if (!(w->flags & W_OWED))
            continue;
        if (ok) {
            gw_gcra_result r;
            gw_gcra_batch_result(ahead[k], b->key_t[k], b->key_tau[k], b->key_n[k], index, &r);
            gw_rl_count(w->route, w->l, GW_RL_SHARED, r.allowed);
            finish(w, &r);
        } else {
            decide_fallback(w); /* an error reply or teardown: this one is decided here */
        }
    }
    for (uint32_t i = 0; i < b->n; i++)
        release(b->w[i], W_HIREDIS);
    rl->batches_out--;
    int more = !rl->closing && !gw_queue_empty(&rl->pending);
    batch_free(rl, b); /* may free RL, only when closing */
    if (more)
        flush(rl); /* what came in while this batch was out */
}

static int send_batch(gw_rl_redis *rl, gw_rl_batch *b, int full_script)
{
    const char *argv[3 + 4 * BATCH_MAX];
    size_t lens[3 + 4 * BATCH_MAX];
    char nums[BATCH_MAX][3][20];
    char nkeys[8];
    uint32_t m = b->n_keys, argc = 0;
    argv[argc] = full_script ? "EVAL" : "EVALSHA";
    lens[argc++] = full_script ? 4 : 7;
    argv[argc] = full_script ? SCRIPT : rl->sha;
    lens[argc++] = full_script ? sizeof SCRIPT - 1 : 40;
    lens[argc] = (size_t)snprintf(nkeys, sizeof nkeys, "%u", m);
    argv[argc++] = nkeys;
    for (uint32_t k = 0; k < m; k++) {
        const gw_rl_wait *f = b->w[b->key_first[k]];
        argv[argc] = f->rkey;
        lens[argc++] = f->rkey_len;
    }
    for (uint32_t k = 0; k < m; k++) {
        unsigned long long v[3] = { b->key_t[k], b->key_tau[k], b->key_n[k] };
        for (int j = 0; j < 3; j++) {
            argv[argc] = nums[k][j];
            lens[argc++] = (size_t)(gw_put_u64(nums[k][j], v[j]) - nums[k][j]);
        }
    }
    const gw_rl_wait *f0 = b->w[0]; /* in a cluster every key of the batch has its slot */
    return cmp_redis_send(rl->rc, &b->cmd, f0->rkey, f0->rkey_len, (int)argc, argv, lens,
                          on_reply, b);
}

/* Takes pending checks into B: from the oldest, those of its slot (cluster) or all, up to
 * BATCH_MAX, each tied to its key (same Redis key and limit: one key of the script). */
static void batch_fill(gw_rl_redis *rl, gw_rl_batch *b)
{
    uint16_t slot = 0;
    int first = 1;
    gw_queue *q = rl->pending.next;
    b->n = b->n_keys = 0;
    while (q != &rl->pending && b->n < BATCH_MAX) {
        gw_rl_wait *w = GW_QUEUE_DATA(q, gw_rl_wait, pnode);
        q = q->next;
        if (rl->cluster) {
            if (first)
                slot = w->slot;
            else if (w->slot != slot)
                continue;
        }
        first = 0;
        uint32_t k = 0;
        for (; k < b->n_keys; k++) {
            const gw_rl_wait *f = b->w[b->key_first[k]];
            if (f->rkey_len == w->rkey_len && b->key_t[k] == w->t_us &&
                b->key_tau[k] == w->tau_us && memcmp(f->rkey, w->rkey, w->rkey_len) == 0)
                break;
        }
        if (k == b->n_keys) {
            b->key_first[k] = (uint8_t)b->n;
            b->key_n[k] = 0;
            b->key_t[k] = w->t_us;
            b->key_tau[k] = w->tau_us;
            b->n_keys++;
        }
        b->key_n[k]++;
        b->key_of[b->n] = (uint8_t)k;
        b->w[b->n++] = w;
        gw_queue_remove(&w->pnode);
        w->rl->n_pending--;
        w->flags &= ~W_PENDING;
        w->flags |= W_HIREDIS;
    }
}

/* The end of a loop turn: the pending checks go out, one script call per batch. A batch the
 * client cannot send (not up; cluster: its node is down) is decided locally. */
static void flush(gw_rl_redis *rl)
{
    uv_check_stop(&rl->flush_check);
    uv_idle_stop(&rl->flush_idle);
    /* one batch out at a time (one server; a cluster's nodes are not held up by each
     * other): checks that come in while it is out wait for its answer and go together,
     * so batches grow with the load and Redis is woken once per round trip, not per turn */
    while (!gw_queue_empty(&rl->pending) &&
           (rl->cluster || rl->batches_out == 0 || rl->n_pending >= BATCH_MAX)) {
        gw_rl_batch *b = rl->spare;
        rl->spare = NULL;
        if (b == NULL && (b = malloc(sizeof *b)) == NULL) {
            /* out of memory: the oldest check is decided here (the loop goes on: each
             * turn decides one, or sends a batch when memory is back) */
            gw_rl_wait *w = GW_QUEUE_DATA(rl->pending.next, gw_rl_wait, pnode);
            decide_fallback(w);
            continue;
        }
        b->rl = rl;
        b->retried = 0;
        rl->n_live++;
        batch_fill(rl, b);
        if (send_batch(rl, b, 0) == 0) {
            rl->batches_out++;
            continue;
        }
        for (uint32_t i = 0; i < b->n; i++) { /* decided here, in arrival order */
            gw_rl_wait *w = b->w[i];
            if (w->flags & W_OWED)
                decide_fallback(w);
            release(w, W_HIREDIS);
        }
        batch_free(rl, b);
    }
}

static void on_flush_check(uv_check_t *h)
{
    flush(h->data);
}

static void on_flush_idle(uv_idle_t *h)
{
    flush(h->data);
}

/* The Redis key of REQ's bucket: gw:rl:ROUTE:CLASS:VALUE (a long value is hashed). One key
 * per limit and client: in a cluster each lands on its own slot, spreading the load. Put
 * together without printf: it runs for every request of a limited route. */
static size_t redis_key(const rt_route *route, const rt_rate_limit *l, const gw_request *req,
                        uint64_t hash, char *out)
{
    static const char *const cls[] = { "ip:", "h:", "route:" };
    static const char hex[] = "0123456789abcdef";
    char h[17];
    gw_slice v = gw_rl_key_value(l, req), id = { route->id, strlen(route->id) };
    h[0] = '#';
    for (int i = 0; i < 16; i++)
        h[1 + i] = hex[(hash >> (60 - 4 * i)) & 15];
    if (id.n + v.n > 200) {
        /* a long value: "#" and the hash of all of it in 16 hex digits; with a long route id
         * too the whole key is "gw:rl:#HASH" (the hash covers route, class and value): a key
         * is never cut, so two clients never share a bucket because it was */
        v = (gw_slice){ h, 17 };
        if (id.n + 17 > 200) {
            memcpy(out, "gw:rl:", 6);
            memcpy(out + 6, h, 17);
            out[23] = '\0';
            return 23;
        }
    }
    const char *parts[] = { "gw:rl:", id.p, ":", cls[l->key], v.p };
    size_t lens[] = { 6, id.n, 1, strlen(cls[l->key]), v.n };
    size_t n = 0;
    for (int i = 0; i < 5; i++) {
        size_t k = lens[i] < RL_KEY_MAX - 1 - n ? lens[i] : RL_KEY_MAX - 1 - n;
        memcpy(out + n, parts[i], k);
        n += k;
    }
    out[n] = '\0';
    return n;
}

int gw_rl_redis_check(gw_rl_redis *rl, const rt_route *route, const rt_rate_limit *l,
                      const gw_request *req, gw_rl_done done, void *arg, gw_rl_wait **wait,
                      gw_gcra_result *now)
{
    uint64_t key = gw_rl_key_hash(route, l, req);
    /* not connected: decided at once (cluster: a key whose node is down is decided when
     * its batch cannot go out, at the end of this turn) */
    gw_rl_wait *w = rl->rc != NULL && cmp_redis_up(rl->rc) ? wait_new(rl) : NULL;
    if (!w) {
        gw_rl_decide_hash(route, l, key, gw_rl_redis_divisor(rl), GW_RL_FALLBACK, now);
        return 1;
    }
    w->rl = rl;
    w->flags = W_OWED | W_PENDING;
    w->done = done;
    w->arg = arg;
    w->route = route;
    w->l = l;
    w->key = key;
    w->t_us = l->per_ms * 1000ull / l->rate;
    if (w->t_us == 0)
        w->t_us = 1; /* finer than 1 µs per request (over a million per second per key) */
    w->tau_us = w->t_us * (l->burst - 1);
    w->rkey_len = redis_key(route, l, req, key, w->rkey);
    w->slot = rl->cluster ? cmp_redis_key_slot(w->rkey, w->rkey_len) : 0;
    rl->n_live++;
    w->deadline = uv_now(rl->loop) + rl->timeout_ms;
    gw_queue_insert_tail(&rl->inflight, &w->node);
    gw_queue_insert_tail(&rl->pending, &w->pnode);
    rl->n_pending++;
    if (!uv_is_active((uv_handle_t *)&rl->flush_check)) {
        uv_check_start(&rl->flush_check, on_flush_check);
        uv_idle_start(&rl->flush_idle, on_flush_idle);
    }
    if (!uv_is_active((uv_handle_t *)&rl->cmd_timer))
        uv_timer_start(&rl->cmd_timer, on_cmd_timer, rl->timeout_ms, 0);
    *wait = w;
    return 0;
}

void gw_rl_redis_cancel(gw_rl_wait *w)
{
    if (!(w->flags & W_OWED))
        return;
    gw_queue_remove(&w->node);
    if (w->flags & W_PENDING) { /* not sent: it never counts in Redis */
        gw_queue_remove(&w->pnode);
        w->rl->n_pending--;
        w->flags &= ~W_PENDING;
    }
    release(w, W_OWED);
}

/* The oldest check's deadline passed: decide the late ones locally (a connection that
 * answers nothing at all is dropped by the client, which makes new checks decided at once
 * until it is back). */
static void on_cmd_timer(uv_timer_t *t)
{
    gw_rl_redis *rl = t->data;
    uint64_t now = uv_now(rl->loop);
    while (!gw_queue_empty(&rl->inflight)) {
        gw_rl_wait *w = GW_QUEUE_DATA(rl->inflight.next, gw_rl_wait, node);
        if (w->deadline > now)
            break;
        decide_fallback(w); /* the late reply only releases it */
    }
    if (!gw_queue_empty(&rl->inflight)) {
        gw_rl_wait *w = GW_QUEUE_DATA(rl->inflight.next, gw_rl_wait, node);
        uv_timer_start(&rl->cmd_timer, on_cmd_timer, w->deadline > now ? w->deadline - now : 0,
                       0);
    }
}

/* ---- life ----------------------------------------------------------------------------- */
gw_rl_redis *gw_rl_redis_new(uv_loop_t *loop, const cmp_redis_conf *conf, uint32_t divisor,
                             uint32_t timeout_ms, int worker_id)
{
    unsigned char md[SHA_DIGEST_LENGTH];
    char who[48];
    gw_rl_redis *rl = calloc(1, sizeof *rl);
    if (!rl)
        return NULL;
    rl->loop = loop;
    rl->divisor = divisor;
    rl->timeout_ms = timeout_ms ? timeout_ms : 50;
    rl->worker_id = worker_id;
    rl->mode = GW_RL__MODES;
    cmp_redis_conf_describe(conf, rl->where, sizeof rl->where);
    /* EVALSHA needs no SCRIPT LOAD first: the sha is the script's; NOSCRIPT -> EVAL */
    SHA1((const unsigned char *)SCRIPT, sizeof SCRIPT - 1, md);
    for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
        snprintf(rl->sha + 2 * i, 3, "%02x", md[i]);
    gw_queue_init(&rl->inflight);
    gw_queue_init(&rl->pending);
    gw_queue_init(&rl->free_waits);
    rl->cluster = conf->kind == CMP_REDIS_CLUSTER;
    snprintf(who, sizeof who, "ratelimit: worker %d", worker_id);
    set_mode(rl, GW_RL_FALLBACK); /* until the client is up */
    if ((rl->rc = cmp_redis_new(loop, conf, rl->timeout_ms, who, on_state, rl)) == NULL) {
        set_mode(rl, GW_RL__MODES);
        free(rl);
        return NULL;
    }
    uv_timer_init(loop, &rl->cmd_timer);
    uv_timer_init(loop, &rl->hb_timer);
    uv_check_init(loop, &rl->flush_check);
    uv_idle_init(loop, &rl->flush_idle);
    rl->cmd_timer.data = rl->hb_timer.data = rl;
    rl->flush_check.data = rl->flush_idle.data = rl;
    rl->timers_open = 4;
    /* the first beat soon after connecting, then every HEARTBEAT_MS */
    uv_timer_start(&rl->hb_timer, on_hb_timer, 50, HEARTBEAT_MS);
    gw_rl_instances_seen(gw_rl_redis_divisor(rl));
    return rl;
}

static void on_timer_closed(uv_handle_t *h)
{
    gw_rl_redis *rl = h->data;
    rl->timers_open--;
    maybe_free(rl);
}

void gw_rl_redis_close(gw_rl_redis *rl)
{
    if (!rl || rl->closing)
        return;
    rl->closing = 1;
    /* requests still waiting get a local answer before the connection goes */
    while (!gw_queue_empty(&rl->inflight))
        decide_fallback(GW_QUEUE_DATA(rl->inflight.next, gw_rl_wait, node));
    set_mode(rl, GW_RL__MODES);
    cmp_redis_close(rl->rc); /* held commands get their NULL replies: only released now */
    rl->rc = NULL;
    uv_close((uv_handle_t *)&rl->cmd_timer, on_timer_closed);
    uv_close((uv_handle_t *)&rl->hb_timer, on_timer_closed);
    uv_close((uv_handle_t *)&rl->flush_check, on_timer_closed);
    uv_close((uv_handle_t *)&rl->flush_idle, on_timer_closed);
}
