/* ratelimit_redis.c — see ratelimit_redis.h. Topology, connections and stalls are the shared
 * client's (composers/redis_client.c): its reply function runs exactly once per command
 * (NULL when there is no answer), so a wait is held by the client and by its request (flags
 * HIREDIS and OWED) and freed by whichever lets go last. */
#include "gateway/ratelimit_redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "composers/redis_client.h"
#include "gateway/ratelimit_local.h"
#include "http/queue.h"

/* GCRA on Redis's clock (TIME), so instances with skewed clocks share one timeline.
 * KEYS[1] the bucket; ARGV emission interval and tolerance in microseconds. Returns
 * "allowed remaining retry_after_us reset_us" as one string: one reply object for hiredis to
 * allocate instead of an array of four (six allocations). The key expires when the bucket is
 * full. */
static const char SCRIPT[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local T = tonumber(ARGV[1])\n"
    "local tau = tonumber(ARGV[2])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1])) or now\n"
    "if tat < now then tat = now end\n"
    "local ahead = tat - now\n"
    "if ahead > tau then return string.format('0 0 %d %d', ahead - tau, ahead) end\n"
    "local new = tat + T\n"
    "redis.call('SET', KEYS[1], string.format('%d', new), 'PX', math.floor((new - now) / 1000) + 1)\n"
    "return string.format('1 %d 0 %d', math.floor((tau - ahead) / T), ahead + T)\n";

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
       W_HIREDIS = 2  /* the Redis client holds it (cmd) */ };

struct gw_rl_wait {
    gw_queue node;           /* on rl->inflight while OWED */
    cmp_redis_cmd cmd;       /* while HIREDIS */
    gw_rl_redis *rl;
    unsigned flags;
    int retried;             /* NOSCRIPT: re-sent once as EVAL */
    uint64_t deadline;
    gw_rl_done done;
    void *arg;
    const rt_route *route;   /* valid while OWED: the caller pins the table */
    const rt_rate_limit *l;  /* the route's, or the configuration's default */
    uint64_t key;            /* the local bucket, for a fallback decision */
    size_t rkey_len;
    char rkey[RL_KEY_MAX];   /* the Redis key, for an EVAL retry */
};

struct gw_rl_redis {
    uv_loop_t *loop;
    uv_timer_t cmd_timer, hb_timer;
    int timers_open;
    int closing;
    cmp_redis *rc;
    char where[300];
    uint32_t timeout_ms, divisor; /* divisor: configured (0: learned) */
    uint32_t learned;             /* live instances in the registry (0: not known yet) */
    int worker_id, ever_up, logged_down;
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
    if (w->flags & (W_OWED | W_HIREDIS))
        return;
    wait_recycle(rl, w);
    rl->n_live--;
    maybe_free(rl);
}

/* Answers the waiting request with R. */
static void finish(gw_rl_wait *w, const gw_gcra_result *r)
{
    gw_queue_remove(&w->node);
    w->flags &= ~W_OWED;
    w->done(w->arg, r);
}

static void decide_fallback(gw_rl_wait *w)
{
    gw_gcra_result r;
    gw_rl_decide_hash(w->route, w->l, w->key, gw_rl_redis_divisor(w->rl), GW_RL_FALLBACK, &r);
    finish(w, &r);
}

/* ---- connection (the client's state) and the instance heartbeat ------------------------ */
static void on_state(void *arg, int up, const char *why)
{
    gw_rl_redis *rl = arg;
    if (up) {
        if (!rl->ever_up || rl->logged_down)
            rl_log(rl, "%s: limits are shared", rl->ever_up ? "connected again" : "connected");
        rl->ever_up = 1;
        rl->logged_down = 0;
        set_mode(rl, GW_RL_SHARED);
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
static int send_check(gw_rl_redis *rl, gw_rl_wait *w, int full_script);

/* The script's "A R RETRY RESET" into V[4]; 0, or -1 when it is not that. */
static int parse_answer(const redisReply *rep, long long v[4])
{
    const char *p, *end;
    if (rep == NULL || rep->type != REDIS_REPLY_STRING || rep->len > 96)
        return -1;
    p = rep->str;
    end = p + rep->len;
    for (int i = 0; i < 4; i++) {
        long long x = 0;
        int digits = 0;
        if (i > 0 && (p >= end || *p++ != ' '))
            return -1;
        for (; p < end && *p >= '0' && *p <= '9' && digits < 18; p++, digits++)
            x = x * 10 + (*p - '0');
        if (digits == 0)
            return -1;
        v[i] = x;
    }
    return p == end ? 0 : -1;
}

static void on_reply(void *privdata, redisReply *rep)
{
    gw_rl_wait *w = privdata;
    gw_rl_redis *rl = w->rl;
    if (w->flags & W_OWED) {
        long long v[4];
        if (rep && rep->type == REDIS_REPLY_ERROR && !w->retried && !rl->closing &&
            strncmp(rep->str, "NOSCRIPT", 8) == 0) {
            w->retried = 1; /* the server lost the script (or never had it): EVAL loads it */
            if (send_check(rl, w, 1) == 0)
                return; /* the new command holds W now */
        }
        if (parse_answer(rep, v) == 0) {
            gw_gcra_result r = {
                .allowed = v[0] == 1,
                .remaining = v[1] > 0 ? (uint32_t)v[1] : 0,
                .retry_after_ns = v[2] > 0 ? (uint64_t)v[2] * 1000 : 0,
                .reset_ns = v[3] > 0 ? (uint64_t)v[3] * 1000 : 0,
            };
            gw_rl_count(w->route, w->l, GW_RL_SHARED, r.allowed);
            finish(w, &r);
        } else {
            decide_fallback(w); /* an error reply or teardown: this one is decided here */
        }
    }
    release(w, W_HIREDIS);
}

static int send_check(gw_rl_redis *rl, gw_rl_wait *w, int full_script)
{
    const rt_rate_limit *l = w->l;
    char t_us[24], tau_us[24];
    uint64_t T = l->per_ms * 1000ull / l->rate;
    if (T == 0)
        T = 1; /* finer than 1 µs per request (over a million per second per key) */
    size_t tn = (size_t)snprintf(t_us, sizeof t_us, "%llu", (unsigned long long)T);
    size_t taun = (size_t)snprintf(tau_us, sizeof tau_us, "%llu",
                                   (unsigned long long)(T * (l->burst - 1)));
    const char *argv[6] = { full_script ? "EVAL" : "EVALSHA", full_script ? SCRIPT : rl->sha,
                            "1", w->rkey, t_us, tau_us };
    size_t lens[6] = { full_script ? 4 : 7, full_script ? sizeof SCRIPT - 1 : 40, 1,
                       w->rkey_len, tn, taun };
    if (cmp_redis_send(rl->rc, &w->cmd, w->rkey, w->rkey_len, 6, argv, lens, on_reply, w) != 0)
        return -1;
    w->flags |= W_HIREDIS;
    return 0;
}

/* The Redis key of REQ's bucket: gw:rl:ROUTE:CLASS:VALUE (a long value is hashed). One key
 * per limit and client: in a cluster each lands on its own slot, spreading the load. */
static size_t redis_key(const rt_route *route, const rt_rate_limit *l, const gw_request *req,
                        uint64_t hash, char *out)
{
    static const char *const cls[] = { "ip", "h", "route" };
    char v[256];
    size_t vn = gw_rl_key_text(l, req, v, sizeof v);
    int n;
    if (vn > 200)
        n = snprintf(out, RL_KEY_MAX, "gw:rl:%s:%s:#%016llx", route->id,
                     cls[l->key], (unsigned long long)hash);
    else
        n = snprintf(out, RL_KEY_MAX, "gw:rl:%s:%s:%.*s", route->id, cls[l->key],
                     (int)vn, v);
    return n < 0 ? 0 : (size_t)n >= RL_KEY_MAX ? RL_KEY_MAX - 1 : (size_t)n;
}

int gw_rl_redis_check(gw_rl_redis *rl, const rt_route *route, const rt_rate_limit *l,
                      const gw_request *req, gw_rl_done done, void *arg, gw_rl_wait **wait,
                      gw_gcra_result *now)
{
    uint64_t key = gw_rl_key_hash(route, l, req);
    /* the client refuses at once what it cannot send (cluster: per key's node) */
    gw_rl_wait *w = rl->rc != NULL ? wait_new(rl) : NULL;
    if (!w) {
        gw_rl_decide_hash(route, l, key, gw_rl_redis_divisor(rl), GW_RL_FALLBACK, now);
        return 1;
    }
    w->rl = rl;
    w->flags = 0;
    w->retried = 0;
    w->done = done;
    w->arg = arg;
    w->route = route;
    w->l = l;
    w->key = key;
    w->rkey_len = redis_key(route, l, req, key, w->rkey);
    if (send_check(rl, w, 0) != 0) { /* not up; cluster: this key's node is down */
        wait_recycle(rl, w);
        gw_rl_decide_hash(route, l, key, gw_rl_redis_divisor(rl), GW_RL_FALLBACK, now);
        return 1;
    }
    rl->n_live++;
    w->flags |= W_OWED;
    w->deadline = uv_now(rl->loop) + rl->timeout_ms;
    gw_queue_insert_tail(&rl->inflight, &w->node);
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
    gw_queue_init(&rl->free_waits);
    snprintf(who, sizeof who, "ratelimit: worker %d", worker_id);
    set_mode(rl, GW_RL_FALLBACK); /* until the client is up */
    if ((rl->rc = cmp_redis_new(loop, conf, rl->timeout_ms, who, on_state, rl)) == NULL) {
        set_mode(rl, GW_RL__MODES);
        free(rl);
        return NULL;
    }
    uv_timer_init(loop, &rl->cmd_timer);
    uv_timer_init(loop, &rl->hb_timer);
    rl->cmd_timer.data = rl->hb_timer.data = rl;
    rl->timers_open = 2;
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
}
