/* ratelimit_redis.c — see ratelimit_redis.h. hiredis 0.14 rules as in composers/
 * cache_redis.c: every command callback runs exactly once (NULL reply on teardown), so a
 * wait is held by hiredis and by its request (flags HIREDIS and OWED) and freed by whichever
 * lets go last; onConnect(ERR)/onDisconnect mean hiredis frees the context itself. */
#include "gateway/ratelimit_redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "composers/cache.h" /* connect timeout and backoff bounds, shared with the cache */
#include "composers/redis_glue.h"
#include "gateway/ratelimit_local.h"
#include "http/queue.h"

/* GCRA on Redis's clock (TIME), so instances with skewed clocks share one timeline.
 * KEYS[1] the bucket; ARGV emission interval and tolerance in microseconds. Returns
 * {allowed, remaining, retry_after_us, reset_us}. The key expires when the bucket is full. */
static const char SCRIPT[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local T = tonumber(ARGV[1])\n"
    "local tau = tonumber(ARGV[2])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1])) or now\n"
    "if tat < now then tat = now end\n"
    "local ahead = tat - now\n"
    "if ahead > tau then return {0, 0, ahead - tau, ahead} end\n"
    "local new = tat + T\n"
    "redis.call('SET', KEYS[1], string.format('%d', new), 'PX', math.floor((new - now) / 1000) + 1)\n"
    "return {1, math.floor((tau - ahead) / T), 0, ahead + T}\n";

enum rstate { R_WAIT, R_RESOLVING, R_CONNECTING, R_UP, R_CLOSED };
static const char *const rstate_name[] = { "wait", "resolving", "connecting", "up", "closed" };
enum { W_OWED = 1,    /* the request waits for this answer */
       W_HIREDIS = 2  /* hiredis holds it as a command's privdata */ };

#define RL_KEY_MAX 320

struct gw_rl_wait {
    gw_queue node;           /* on rl->inflight while OWED */
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

typedef struct rl_resolve {
    uv_getaddrinfo_t req;
    gw_rl_redis *rl;
    int abandoned;
} rl_resolve;

struct gw_rl_redis {
    uv_loop_t *loop;
    uv_timer_t conn_timer, cmd_timer;
    int timers_open;
    int closing;
    redisAsyncContext *ac;
    enum rstate rstate;
    char host[256];
    int port, host_numeric;
    rl_resolve *resolving;
    int dns_pending;
    uint32_t backoff_ms, timeout_ms, divisor;
    int worker_id, ever_up, logged_down;
    char sha[48];
    uint64_t last_reply;
    gw_queue inflight;       /* OWED waits, oldest first */
    int n_live;              /* waits not yet freed */
    gw_rl_mode mode;
};

static void rl_attempt(gw_rl_redis *rl);

static void rl_log(const gw_rl_redis *rl, const char *fmt, const char *a)
{
    char msg[256];
    snprintf(msg, sizeof msg, fmt, a);
    fprintf(stderr, "gateway: ratelimit: worker %d: redis %s:%d: %s\n", rl->worker_id, rl->host,
            rl->port, msg);
}

static void set_mode(gw_rl_redis *rl, gw_rl_mode m)
{
    if (rl->mode == m)
        return;
    gw_rl_workers_in_mode(rl->mode, m);
    rl->mode = m;
}

static void maybe_free(gw_rl_redis *rl)
{
    if (rl->closing && rl->timers_open == 0 && rl->n_live == 0 && rl->dns_pending == 0)
        free(rl);
}

static void release(gw_rl_wait *w, unsigned flag)
{
    gw_rl_redis *rl = w->rl;
    w->flags &= ~flag;
    if (w->flags & (W_OWED | W_HIREDIS))
        return;
    free(w);
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
    gw_rl_decide_hash(w->route, w->l, w->key, w->rl->divisor, GW_RL_FALLBACK, &r);
    finish(w, &r);
}

/* ---- connection --------------------------------------------------------------------- */
static void on_conn_timer(uv_timer_t *t);

static void rl_down(gw_rl_redis *rl, const char *why)
{
    redisAsyncContext *ac = rl->ac;
    rl->ac = NULL;
    if (rl->resolving) {
        rl->resolving->abandoned = 1;
        uv_cancel((uv_req_t *)&rl->resolving->req);
        rl->resolving = NULL;
    }
    if (rl->closing) {
        if (ac)
            redisAsyncFree(ac);
        return;
    }
    if (rl->rstate == R_UP)
        rl->backoff_ms = CMP_CACHE_BACKOFF_MIN_MS;
    rl->rstate = R_WAIT;
    set_mode(rl, GW_RL_FALLBACK);
    if (!rl->logged_down) {
        char msg[200];
        snprintf(msg, sizeof msg, "%s: %s; limits fall back to rate/%u per instance",
                 rl->ever_up ? "connection lost" : "unreachable", why, rl->divisor);
        rl_log(rl, "%s", msg);
        rl->logged_down = 1;
    }
    uint32_t delay = rl->backoff_ms + (uint32_t)(uv_hrtime() % (rl->backoff_ms / 4 + 1));
    rl->backoff_ms = rl->backoff_ms * 2 > CMP_CACHE_BACKOFF_MAX_MS ? CMP_CACHE_BACKOFF_MAX_MS
                                                                 : rl->backoff_ms * 2;
    uv_timer_start(&rl->conn_timer, on_conn_timer, delay, 0);
    /* last: this runs the pending callbacks (NULL replies), and the state is consistent */
    if (ac)
        redisAsyncFree(ac);
    /* what still waits for an answer that will never come is decided here, now */
    while (!gw_queue_empty(&rl->inflight))
        decide_fallback(GW_QUEUE_DATA(rl->inflight.next, gw_rl_wait, node));
}

static void on_conn_timer(uv_timer_t *t)
{
    gw_rl_redis *rl = t->data;
    if (rl->rstate == R_WAIT)
        rl_attempt(rl);
    else if (rl->rstate == R_RESOLVING || rl->rstate == R_CONNECTING)
        rl_down(rl, rl->rstate == R_RESOLVING ? "name lookup timed out"
                                              : "connect timed out (no SCRIPT LOAD answer)");
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    gw_rl_redis *rl = ac->data;
    char why[160];
    if (rl->ac != ac || status == REDIS_OK)
        return;
    snprintf(why, sizeof why, "connect: %s", ac->c.errstr);
    rl->ac = NULL; /* hiredis frees it */
    rl_down(rl, why);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    gw_rl_redis *rl = ac->data;
    char why[160];
    if (rl->ac != ac)
        return;
    snprintf(why, sizeof why, "%s", status == REDIS_OK ? "closed" : ac->c.errstr);
    rl->ac = NULL;
    rl_down(rl, why);
}

/* SCRIPT LOAD answered with the script's sha: the server serves, limits are shared. */
static void on_script_loaded(redisAsyncContext *ac, void *reply, void *privdata)
{
    gw_rl_redis *rl = ac->data;
    redisReply *rep = reply;
    (void)privdata;
    if (rl->ac != ac || rl->rstate != R_CONNECTING || rep == NULL)
        return;
    if (rep->type != REDIS_REPLY_STRING || rep->len >= sizeof rl->sha) {
        char why[160];
        snprintf(why, sizeof why, "SCRIPT LOAD: %.*s", rep->str ? (int)rep->len : 0,
                 rep->str ? rep->str : "unexpected reply");
        rl_down(rl, why);
        return;
    }
    memcpy(rl->sha, rep->str, rep->len);
    rl->sha[rep->len] = '\0';
    rl->rstate = R_UP;
    uv_timer_stop(&rl->conn_timer);
    rl->backoff_ms = CMP_CACHE_BACKOFF_MIN_MS;
    rl->last_reply = uv_now(rl->loop);
    if (!rl->ever_up || rl->logged_down)
        rl_log(rl, "%s: limits are shared", rl->ever_up ? "connected again" : "connected");
    rl->ever_up = 1;
    rl->logged_down = 0;
    set_mode(rl, GW_RL_SHARED);
}

static void connect_ip(gw_rl_redis *rl, const char *ip)
{
    char why[160];
    redisAsyncContext *ac = redisAsyncConnect(ip, rl->port);
    if (!ac) {
        rl_down(rl, "out of memory");
        return;
    }
    if (ac->err) {
        snprintf(why, sizeof why, "connect: %s", ac->c.errstr);
        redisAsyncFree(ac);
        rl_down(rl, why);
        return;
    }
    ac->data = rl;
    cmp_redis_guard_reader(ac);
    if (redisLibuvAttach(ac, rl->loop) != REDIS_OK) {
        memset(&ac->ev, 0, sizeof ac->ev);
        redisAsyncFree(ac);
        rl_down(rl, "cannot attach to the loop");
        return;
    }
    cmp_redis_fix_adapter(ac);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    rl->ac = ac;
    rl->rstate = R_CONNECTING;
    if (redisAsyncCommand(ac, on_script_loaded, NULL, "SCRIPT LOAD %s", SCRIPT) != REDIS_OK)
        rl_down(rl, "cannot queue SCRIPT LOAD");
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    rl_resolve *r = req->data;
    gw_rl_redis *rl = r->rl;
    char ip[64] = "";
    rl->dns_pending--;
    if (r->abandoned) {
        uv_freeaddrinfo(res);
        free(r);
        maybe_free(rl);
        return;
    }
    rl->resolving = NULL;
    free(r);
    if (status == 0 && res) {
        if (res->ai_family == AF_INET6)
            uv_ip6_name((const struct sockaddr_in6 *)res->ai_addr, ip, sizeof ip);
        else
            uv_ip4_name((const struct sockaddr_in *)res->ai_addr, ip, sizeof ip);
    }
    uv_freeaddrinfo(res);
    if (!ip[0]) {
        rl_down(rl, status ? uv_strerror(status) : "name lookup: no address");
        return;
    }
    connect_ip(rl, ip);
}

static void rl_attempt(gw_rl_redis *rl)
{
    uv_timer_start(&rl->conn_timer, on_conn_timer, CMP_CACHE_CONNECT_TIMEOUT_MS, 0);
    if (rl->host_numeric) {
        connect_ip(rl, rl->host);
        return;
    }
    rl_resolve *r = calloc(1, sizeof *r);
    if (!r) {
        rl_down(rl, "out of memory");
        return;
    }
    struct addrinfo hints;
    char port[8];
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof port, "%d", rl->port);
    r->rl = rl;
    r->req.data = r;
    int rc = uv_getaddrinfo(rl->loop, &r->req, on_resolved, rl->host, port, &hints);
    if (rc != 0) {
        free(r);
        rl_down(rl, uv_strerror(rc));
        return;
    }
    rl->resolving = r;
    rl->dns_pending++;
    rl->rstate = R_RESOLVING;
}

/* ---- checks ------------------------------------------------------------------------- */
static void on_cmd_timer(uv_timer_t *t);
static int send_check(gw_rl_redis *rl, gw_rl_wait *w, int full_script);

static int reply_int(const redisReply *a, size_t i, long long *out)
{
    if (a->element[i]->type != REDIS_REPLY_INTEGER)
        return -1;
    *out = a->element[i]->integer;
    return 0;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    gw_rl_wait *w = privdata;
    gw_rl_redis *rl = w->rl;
    redisReply *rep = reply;
    if (rep && ac == rl->ac)
        rl->last_reply = uv_now(rl->loop);
    if (w->flags & W_OWED) {
        long long v[4];
        if (rep && rep->type == REDIS_REPLY_ERROR && !w->retried && ac == rl->ac &&
            rl->rstate == R_UP && strncmp(rep->str, "NOSCRIPT", 8) == 0) {
            w->retried = 1; /* the server lost the script: EVAL loads it again */
            if (send_check(rl, w, 1) == 0)
                return; /* the new command holds W now */
        }
        if (rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 4 &&
            reply_int(rep, 0, &v[0]) == 0 && reply_int(rep, 1, &v[1]) == 0 &&
            reply_int(rep, 2, &v[2]) == 0 && reply_int(rep, 3, &v[3]) == 0) {
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
    snprintf(t_us, sizeof t_us, "%llu", (unsigned long long)T);
    snprintf(tau_us, sizeof tau_us, "%llu", (unsigned long long)(T * (l->burst - 1)));
    const char *argv[6] = { full_script ? "EVAL" : "EVALSHA", full_script ? SCRIPT : rl->sha,
                            "1", w->rkey, t_us, tau_us };
    size_t lens[6] = { strlen(argv[0]), strlen(argv[1]), 1, w->rkey_len, strlen(t_us),
                       strlen(tau_us) };
    if (redisAsyncCommandArgv(rl->ac, on_reply, w, 6, argv, lens) != REDIS_OK)
        return -1;
    w->flags |= W_HIREDIS;
    return 0;
}

/* The Redis key of REQ's bucket: gw:rl:ROUTE:CLASS:VALUE (a long value is hashed). */
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
    gw_rl_wait *w = rl->rstate == R_UP && rl->ac ? malloc(sizeof *w) : NULL;
    if (!w) {
        gw_rl_decide_hash(route, l, key, rl->divisor, GW_RL_FALLBACK, now);
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
    if (send_check(rl, w, 0) != 0) {
        free(w);
        gw_rl_decide_hash(route, l, key, rl->divisor, GW_RL_FALLBACK, now);
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

/* The oldest check's deadline passed: decide the late ones locally. When nothing at all
 * came back for timeout_ms, the connection is stalled: drop it (new checks are decided at
 * once until it is back) rather than make every request wait out the timeout. */
static void on_cmd_timer(uv_timer_t *t)
{
    gw_rl_redis *rl = t->data;
    uint64_t now = uv_now(rl->loop);
    int expired = 0;
    while (!gw_queue_empty(&rl->inflight)) {
        gw_rl_wait *w = GW_QUEUE_DATA(rl->inflight.next, gw_rl_wait, node);
        if (w->deadline > now)
            break;
        expired = 1;
        decide_fallback(w); /* the late reply only releases it */
    }
    if (expired && rl->rstate == R_UP && now - rl->last_reply >= rl->timeout_ms) {
        char why[64];
        snprintf(why, sizeof why, "no reply for %u ms", rl->timeout_ms);
        rl_down(rl, why);
    }
    if (!gw_queue_empty(&rl->inflight)) {
        gw_rl_wait *w = GW_QUEUE_DATA(rl->inflight.next, gw_rl_wait, node);
        uv_timer_start(&rl->cmd_timer, on_cmd_timer, w->deadline > now ? w->deadline - now : 0,
                       0);
    }
}

/* ---- life ----------------------------------------------------------------------------- */
gw_rl_redis *gw_rl_redis_new(uv_loop_t *loop, const char *hostport, uint32_t divisor,
                             uint32_t timeout_ms, int worker_id)
{
    gw_rl_redis *rl = calloc(1, sizeof *rl);
    if (!rl)
        return NULL;
    if (cmp__redis_parse(hostport, rl->host, sizeof rl->host, &rl->port) != 0) {
        free(rl);
        return NULL;
    }
    struct in6_addr a6;
    rl->host_numeric = uv_inet_pton(AF_INET, rl->host, &a6) == 0 ||
                       uv_inet_pton(AF_INET6, rl->host, &a6) == 0;
    rl->loop = loop;
    rl->divisor = divisor ? divisor : 1;
    rl->timeout_ms = timeout_ms ? timeout_ms : 50;
    rl->worker_id = worker_id;
    rl->backoff_ms = CMP_CACHE_BACKOFF_MIN_MS;
    rl->mode = GW_RL__MODES;
    gw_queue_init(&rl->inflight);
    uv_timer_init(loop, &rl->conn_timer);
    uv_timer_init(loop, &rl->cmd_timer);
    rl->conn_timer.data = rl->cmd_timer.data = rl;
    rl->timers_open = 2;
    set_mode(rl, GW_RL_FALLBACK); /* until the script is loaded */
    rl_attempt(rl);
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
    (void)rstate_name;
    /* requests still waiting get a local answer before the connection goes */
    while (!gw_queue_empty(&rl->inflight))
        decide_fallback(GW_QUEUE_DATA(rl->inflight.next, gw_rl_wait, node));
    set_mode(rl, GW_RL__MODES);
    rl->rstate = R_CLOSED;
    rl_down(rl, "closing");
    uv_close((uv_handle_t *)&rl->conn_timer, on_timer_closed);
    uv_close((uv_handle_t *)&rl->cmd_timer, on_timer_closed);
}
