/* cache_redis.c — the Redis store: one hiredis async connection on the worker's loop
 * (shipped libuv adapter), its connection state machine, command deadlines and the
 * reconnect backoff.
 *
 * Connection states (c->rstate, see cache_int.h): WAIT -(conn_timer)-> [RESOLVING ->]
 * CONNECTING -(PING answered)-> UP. Any failure goes back to WAIT with the next backoff
 * (100 ms doubling to 5 s; reset by a successful connection); RESOLVING and CONNECTING are
 * bounded by CMP_CACHE_CONNECT_TIMEOUT_MS. Only UP sends commands: otherwise gets fail open
 * at once. A name is resolved with uv_getaddrinfo (hiredis would block the loop in
 * getaddrinfo); hiredis gets a numeric address.
 *
 * hiredis 0.14 rules this file lives by:
 *  - every command callback runs exactly once; on teardown (ours, or hiredis's own after a
 *    read/write/connect error) with a NULL reply. A req is therefore held by both hiredis
 *    and its owner (flags HIREDIS and OWED) and freed by the side that lets go last: a
 *    timed-out get has been answered, its late reply only releases the req.
 *  - hiredis frees the context itself after an error; onConnect(ERR) or onDisconnect tells
 *    us, and we forget c->ac there. Both run outside the IN_CALLBACK guard in 0.14, so they
 *    must not free the context: they only change state and arm the retry timer.
 *  - redisAsyncFree from inside a command callback is deferred by hiredis until the
 *    callback returns, within the same call stack: the cache outlives it either way since
 *    it is freed from close callbacks, later in the loop iteration.
 *  - 0.14's libuv adapter drops poll errors (status < 0), so a refused or reset connection
 *    would go unseen until a timeout (fixed upstream by hiredis PR #624). We keep the
 *    shipped adapter's attach, data and cleanup and only route its events through
 *    cmp__uv_poll, which forwards errors the way upstream now does. The connect timeout
 *    and the command deadlines stay as the backstop (blackholed hosts, hung servers).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "composers/cache_int.h"
#include "composers/redis_glue.h"

struct cmp__resolve {
    uv_getaddrinfo_t req;
    cmp_cache *c;
    int abandoned; /* the attempt timed out or the cache closed: only free on callback */
};

static void cmp__redis_attempt(cmp_cache *c);

int cmp__redis_parse(const char *s, char *host, size_t hostsz, int *port)
{
    const char *hs = s, *he, *colon;
    unsigned long pv = 0;
    size_t i, pn;

    if (s[0] == '[') {
        hs = s + 1;
        if ((he = strchr(hs, ']')) == NULL || he[1] != ':')
            return -1;
        colon = he + 1;
    } else {
        if ((colon = strrchr(s, ':')) == NULL)
            return -1;
        he = colon;
        if (memchr(hs, ':', (size_t)(he - hs)) != NULL) /* bare IPv6: needs brackets */
            return -1;
    }
    if (he == hs || (size_t)(he - hs) >= hostsz)
        return -1;
    pn = strlen(colon + 1);
    if (pn == 0 || pn > 5)
        return -1;
    for (i = 0; i < pn; i++) {
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

static uint64_t cmp__wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- adapter fix-up -------------------------------------------------------------------- */
/* As the adapter's redisLibuvPoll, but an error (libuv stopped the handle, events 0) is
 * handed to hiredis as the events it waits for: its connect check or read/write then meets
 * the socket error and tears the context down through the usual callbacks. */
static void cmp__uv_poll(uv_poll_t *h, int status, int events)
{
    redisLibuvEvents *p = h->data;
    int ev = status < 0 ? p->events : events;

    if (p->context != NULL && (ev & UV_READABLE))
        redisAsyncHandleRead(p->context);
    if (p->context != NULL && (ev & UV_WRITABLE))
        redisAsyncHandleWrite(p->context);
}

static void cmp__uv_events(void *privdata, int add, int flag)
{
    redisLibuvEvents *p = privdata;

    p->events = add ? p->events | flag : p->events & ~flag;
    if (p->events)
        uv_poll_start(&p->handle, p->events, cmp__uv_poll);
    else
        uv_poll_stop(&p->handle);
}

static void cmp__uv_add_read(void *pd) { cmp__uv_events(pd, 1, UV_READABLE); }
static void cmp__uv_del_read(void *pd) { cmp__uv_events(pd, 0, UV_READABLE); }
static void cmp__uv_add_write(void *pd) { cmp__uv_events(pd, 1, UV_WRITABLE); }
static void cmp__uv_del_write(void *pd) { cmp__uv_events(pd, 0, UV_WRITABLE); }

void cmp_redis_fix_adapter(redisAsyncContext *ac)
{
    ac->ev.addRead = cmp__uv_add_read;
    ac->ev.delRead = cmp__uv_del_read;
    ac->ev.addWrite = cmp__uv_add_write;
    ac->ev.delWrite = cmp__uv_del_write;
}

/* ---- connection state machine --------------------------------------------------------- */
static void cmp__on_conn_timer(uv_timer_t *t);

static void cmp__abandon_resolve(cmp_cache *c)
{
    if (c->resolving != NULL) {
        c->resolving->abandoned = 1;
        uv_cancel((uv_req_t *)&c->resolving->req); /* best effort; the callback still runs */
        c->resolving = NULL;
    }
}

/* The connection (or the attempt) failed: forget the context, log the transition once,
 * retry after the backoff. The context is freed last, since that runs the pending callbacks
 * (owners' code) with a NULL reply and the state must already be consistent. */
static void cmp__redis_down(cmp_cache *c, const char *why)
{
    redisAsyncContext *ac = c->ac;
    uint32_t delay;

    c->ac = NULL;
    cmp__abandon_resolve(c);
    if (c->flags & CMP__F_CLOSING) {
        if (ac != NULL)
            redisAsyncFree(ac);
        return;
    }
    if (c->rstate == CMP__R_UP) {
        c->backoff_ms = CMP_CACHE_BACKOFF_MIN_MS; /* a loss: try again soon */
        c->attempts = 0;
    }
    c->rstate = CMP__R_WAIT;
    if (!c->logged_down) {
        cmp__log(c, "%s: %s; failing open, reconnecting in the background",
                 c->ever_up ? "connection lost" : "unreachable", why);
        c->logged_down = 1;
    }
    delay = c->backoff_ms + (uint32_t)(uv_hrtime() % (c->backoff_ms / 4 + 1)); /* jitter */
    c->backoff_ms = c->backoff_ms * 2 > CMP_CACHE_BACKOFF_MAX_MS ? CMP_CACHE_BACKOFF_MAX_MS
                                                                : c->backoff_ms * 2;
    uv_timer_start(&c->conn_timer, cmp__on_conn_timer, delay, 0);
    if (ac != NULL)
        redisAsyncFree(ac);
}

static void cmp__redis_up(cmp_cache *c)
{
    c->rstate = CMP__R_UP;
    uv_timer_stop(&c->conn_timer);
    c->backoff_ms = CMP_CACHE_BACKOFF_MIN_MS;
    c->last_reply = uv_now(c->loop);
    if (c->ever_up)
        c->st.reconnects++;
    if (!c->ever_up || c->logged_down)
        cmp__log(c, c->ever_up ? "connected again (attempt %d)" : "connected (attempt %d)",
                 c->attempts);
    c->ever_up = 1;
    c->logged_down = 0;
    c->attempts = 0;
}

static void cmp__on_conn_timer(uv_timer_t *t)
{
    cmp_cache *c = t->data;

    switch (c->rstate) {
    case CMP__R_WAIT:
        cmp__redis_attempt(c);
        break;
    case CMP__R_RESOLVING:
        cmp__redis_down(c, "name lookup timed out");
        break;
    case CMP__R_CONNECTING:
        cmp__redis_down(c, "connect timed out (no PING answer)");
        break;
    default:
        break;
    }
}

static void cmp__on_connect(const redisAsyncContext *ac, int status)
{
    cmp_cache *c = ac->data;
    char why[160];

    if (c->ac != ac || status == REDIS_OK)
        return; /* connected: UP waits for the PING answer */
    snprintf(why, sizeof why, "connect: %s", ac->c.errstr);
    c->ac = NULL; /* hiredis frees it when we return */
    cmp__redis_down(c, why);
}

static void cmp__on_disconnect(const redisAsyncContext *ac, int status)
{
    cmp_cache *c = ac->data;
    char why[160];

    if (c->ac != ac)
        return; /* we dropped it ourselves */
    snprintf(why, sizeof why, "%s", status == REDIS_OK ? "closed" : ac->c.errstr);
    c->ac = NULL; /* being freed by hiredis */
    cmp__redis_down(c, why);
}

static void cmp__on_ping(redisAsyncContext *ac, void *reply, void *privdata)
{
    cmp_cache *c = ac->data;
    redisReply *rep = reply;
    char why[160];

    (void)privdata;
    if (c->ac != ac || c->rstate != CMP__R_CONNECTING || rep == NULL)
        return; /* NULL: teardown, onConnect/onDisconnect (or we) handle the state */
    if (rep->type == REDIS_REPLY_ERROR) { /* -LOADING, -NOAUTH, ... */
        snprintf(why, sizeof why, "PING: %.*s", (int)rep->len, rep->str);
        cmp__redis_down(c, why);
        return;
    }
    cmp__redis_up(c);
}

/* A reply nothing asked for (a second PONG, bytes after the answer to a GET) makes hiredis
 * 0.14 abort the process: an assert in redisProcessCallbacks (found by
 * tests/fuzz/fuzz_redis_reply). The reader's object functions are wrapped so that a top-level
 * reply arriving while no callback waits is refused: the reader fails as on any protocol
 * error, hiredis closes the connection, and the cache fails open and reconnects. Error replies
 * pass: hiredis closes on an unsolicited one itself (e.g. "max number of clients"). */
static redisReplyObjectFunctions *cmp__reply_fns;
static redisReplyObjectFunctions cmp__guarded_fns;
static pthread_once_t cmp__guard_once = PTHREAD_ONCE_INIT;

static int cmp__unsolicited(const redisReadTask *t)
{
    const redisAsyncContext *ac = t->privdata;
    return t->parent == NULL && t->type != REDIS_REPLY_ERROR && ac != NULL &&
           ac->replies.head == NULL && !(ac->c.flags & (REDIS_SUBSCRIBED | REDIS_MONITORING));
}

static void *cmp__guard_string(const redisReadTask *t, char *s, size_t n)
{
    return cmp__unsolicited(t) ? NULL : cmp__reply_fns->createString(t, s, n);
}

/* hiredis 0.14 allocates an array's element table as soon as its length is read: "*888888881"
 * from a broken or hostile server asks for 7 GB (found by tests/fuzz/fuzz_redis_reply). No
 * command of the cache gets an array back; anything over this is a protocol error. */
#define CMP__MAX_REPLY_ELEMENTS 1024

static void *cmp__guard_array(const redisReadTask *t, int n)
{
    if (n > CMP__MAX_REPLY_ELEMENTS || cmp__unsolicited(t))
        return NULL;
    return cmp__reply_fns->createArray(t, n);
}

static void *cmp__guard_integer(const redisReadTask *t, long long v)
{
    return cmp__unsolicited(t) ? NULL : cmp__reply_fns->createInteger(t, v);
}

static void *cmp__guard_nil(const redisReadTask *t)
{
    return cmp__unsolicited(t) ? NULL : cmp__reply_fns->createNil(t);
}

static void cmp__guard_init(void)
{
    /* hiredis's defaults are static in hiredis.c: read them off a reader of our own */
    redisReader *r = redisReaderCreate();
    if (r == NULL)
        return;
    cmp__reply_fns = r->fn;
    redisReaderFree(r);
    cmp__guarded_fns = *cmp__reply_fns;
    cmp__guarded_fns.createString = cmp__guard_string;
    cmp__guarded_fns.createArray = cmp__guard_array;
    cmp__guarded_fns.createInteger = cmp__guard_integer;
    cmp__guarded_fns.createNil = cmp__guard_nil;
}

void cmp_redis_guard_reader(redisAsyncContext *ac)
{
    redisReader *r = ac->c.reader;
    pthread_once(&cmp__guard_once, cmp__guard_init);
    if (r == NULL || cmp__reply_fns == NULL || r->fn != cmp__reply_fns)
        return; /* not hiredis's defaults: leave it alone */
    r->fn = &cmp__guarded_fns;
    r->privdata = ac;
}

static void cmp__redis_connect_ip(cmp_cache *c, const char *ip)
{
    redisAsyncContext *ac = redisAsyncConnect(ip, c->port);
    char why[160];

    if (ac == NULL) {
        cmp__redis_down(c, "out of memory");
        return;
    }
    if (ac->err) { /* e.g. refused at once on loopback */
        snprintf(why, sizeof why, "connect: %s", ac->c.errstr);
        redisAsyncFree(ac);
        cmp__redis_down(c, why);
        return;
    }
    ac->data = c;
    cmp_redis_guard_reader(ac);
    if (redisLibuvAttach(ac, c->loop) != REDIS_OK) {
        memset(&ac->ev, 0, sizeof ac->ev); /* the adapter may have left hooks without data */
        redisAsyncFree(ac);
        cmp__redis_down(c, "cannot attach to the loop");
        return;
    }
    cmp_redis_fix_adapter(ac); /* before anything polls: see cmp__uv_poll */
    redisAsyncSetConnectCallback(ac, cmp__on_connect);
    redisAsyncSetDisconnectCallback(ac, cmp__on_disconnect);
    c->ac = ac;
    c->rstate = CMP__R_CONNECTING;
    /* queued now, written once connected: its answer proves the server serves */
    if (redisAsyncCommand(ac, cmp__on_ping, NULL, "PING") != REDIS_OK)
        cmp__redis_down(c, "cannot queue PING");
}

static void cmp__on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    cmp__resolve *r = req->data;
    cmp_cache *c = r->c;
    char ip[64] = "", why[160];

    c->dns_pending--;
    if (r->abandoned) {
        uv_freeaddrinfo(res);
        free(r);
        cmp__maybe_free(c);
        return;
    }
    c->resolving = NULL;
    free(r);
    if (status == 0 && res != NULL) {
        if (res->ai_family == AF_INET6)
            uv_ip6_name((const struct sockaddr_in6 *)res->ai_addr, ip, sizeof ip);
        else
            uv_ip4_name((const struct sockaddr_in *)res->ai_addr, ip, sizeof ip);
    }
    uv_freeaddrinfo(res);
    if (ip[0] == '\0') {
        snprintf(why, sizeof why, "name lookup: %s", status ? uv_strerror(status) : "no address");
        cmp__redis_down(c, why);
        return;
    }
    cmp__redis_connect_ip(c, ip);
}

static void cmp__redis_attempt(cmp_cache *c)
{
    struct addrinfo hints;
    cmp__resolve *r;
    char port[8];
    int rc;

    c->attempts++;
    uv_timer_start(&c->conn_timer, cmp__on_conn_timer, CMP_CACHE_CONNECT_TIMEOUT_MS, 0);
    if (c->host_numeric) {
        cmp__redis_connect_ip(c, c->host);
        return;
    }
    if ((r = calloc(1, sizeof *r)) == NULL) {
        cmp__redis_down(c, "out of memory");
        return;
    }
    r->c = c;
    r->req.data = r;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof port, "%d", c->port);
    if ((rc = uv_getaddrinfo(c->loop, &r->req, cmp__on_resolved, c->host, port, &hints)) != 0) {
        free(r);
        cmp__redis_down(c, uv_strerror(rc));
        return;
    }
    c->resolving = r;
    c->dns_pending++;
    c->rstate = CMP__R_RESOLVING;
}

void cmp__redis_start(cmp_cache *c)
{
    cmp__redis_attempt(c);
}

void cmp__redis_close(cmp_cache *c)
{
    redisAsyncContext *ac = c->ac;

    cmp__abandon_resolve(c);
    c->ac = NULL;
    c->rstate = CMP__R_CLOSED;
    if (ac != NULL)
        redisAsyncFree(ac);
}

/* ---- commands ------------------------------------------------------------------------ */
static void cmp__on_cmd_timer(uv_timer_t *t);

/* One reply (or NULL: teardown) for a GET/SET/DEL. */
static void cmp__on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    cmp__req *r = privdata;
    cmp_cache *c = r->c;
    redisReply *rep = reply;
    cmp_cache_status st = CMP_CACHE_ERROR;
    const char *v = NULL;
    size_t len = 0;
    uint64_t age = 0;

    if (rep != NULL && ac == c->ac)
        c->last_reply = uv_now(c->loop);
    if (r->flags & CMP__REQ_OWED) {
        if (rep == NULL || rep->type == REDIS_REPLY_ERROR) {
            st = CMP_CACHE_ERROR;
        } else if (r->kind != CMP__REQ_GET) {
            st = CMP_CACHE_HIT; /* "OK" / count: done */
        } else if (rep->type == REDIS_REPLY_STRING && rep->len >= CMP_CACHE_HEADER_LEN) {
            const unsigned char *p = (const unsigned char *)rep->str;
            uint64_t stored = 0, now = cmp__wall_ms();
            for (int i = 0; i < CMP_CACHE_HEADER_LEN; i++)
                stored = stored << 8 | p[i];
            st = CMP_CACHE_HIT;
            v = rep->str + CMP_CACHE_HEADER_LEN;
            len = rep->len - CMP_CACHE_HEADER_LEN;
            age = now > stored ? now - stored : 0; /* clocks of two hosts: never negative */
        } else if (rep->type == REDIS_REPLY_NIL || rep->type == REDIS_REPLY_STRING) {
            st = CMP_CACHE_MISS; /* absent, or not written by us (no header) */
        }
        cmp__finish(r, st, v, len, age);
    }
    cmp__req_release(r, CMP__REQ_HIREDIS);
}

/* Hands one command to hiredis (which formats it into its output buffer: ARGV is free after)
 * and puts R on c->inflight with its deadline. */
static int cmp__redis_queue(cmp_cache *c, cmp__req *r, int argc, const char **argv,
                            const size_t *lens)
{
    if (redisAsyncCommandArgv(c->ac, cmp__on_reply, r, argc, argv, lens) != REDIS_OK)
        return -1;
    r->flags |= CMP__REQ_OWED | CMP__REQ_HIREDIS;
    r->deadline = uv_now(c->loop) + c->timeout_ms;
    gw_queue_insert_tail(&c->inflight, &r->node);
    if (!uv_is_active((uv_handle_t *)&c->cmd_timer))
        uv_timer_start(&c->cmd_timer, cmp__on_cmd_timer, c->timeout_ms, 0);
    return 0;
}

int cmp__redis_send(cmp_cache *c, cmp__req *r, const char *key, const char *val, size_t vlen,
                    uint64_t keep_ms)
{
    char kbuf[256], px[24], *k = kbuf;
    const char *argv[5];
    size_t lens[5], klen = c->prefix_len + strlen(key);
    int argc, rc;

    if (c->rstate != CMP__R_UP || c->ac == NULL)
        return -1;
    if (klen > sizeof kbuf && (k = malloc(klen)) == NULL)
        return -1;
    if (c->prefix_len > 0)
        memcpy(k, c->prefix, c->prefix_len);
    memcpy(k + c->prefix_len, key, klen - c->prefix_len);
    argv[1] = k;
    lens[1] = klen;
    if (r->kind == CMP__REQ_SET) {
        size_t need = CMP_CACHE_HEADER_LEN + vlen;
        uint64_t now = cmp__wall_ms();
        if (need > c->scratch_cap) {
            char *p = realloc(c->scratch, need);
            if (p == NULL) {
                rc = -1;
                goto out;
            }
            c->scratch = p;
            c->scratch_cap = need;
        }
        for (int i = CMP_CACHE_HEADER_LEN - 1; i >= 0; i--, now >>= 8)
            c->scratch[i] = (char)(now & 0xff);
        if (vlen > 0)
            memcpy(c->scratch + CMP_CACHE_HEADER_LEN, val, vlen);
        argv[0] = "SET", lens[0] = 3;
        argv[2] = c->scratch, lens[2] = need;
        argv[3] = "PX", lens[3] = 2;
        lens[4] = (size_t)snprintf(px, sizeof px, "%llu", (unsigned long long)keep_ms);
        argv[4] = px;
        argc = 5;
    } else {
        argv[0] = r->kind == CMP__REQ_GET ? "GET" : "DEL";
        lens[0] = 3;
        argc = 2;
    }
    rc = cmp__redis_queue(c, r, argc, argv, lens);
out:
    if (k != kbuf)
        free(k);
    return rc;
}

int cmp__redis_send_del(cmp_cache *c, cmp__req *r, const char *const *keys, int n)
{
    const char **argv;
    size_t *lens, total = 0;
    char *buf, *at;
    int rc;

    if (c->rstate != CMP__R_UP || c->ac == NULL || n <= 0)
        return -1;
    for (int i = 0; i < n; i++)
        total += c->prefix_len + strlen(keys[i]);
    argv = malloc((size_t)(n + 1) * sizeof *argv);
    lens = malloc((size_t)(n + 1) * sizeof *lens);
    buf = malloc(total ? total : 1);
    rc = -1;
    if (argv != NULL && lens != NULL && buf != NULL) {
        argv[0] = "DEL", lens[0] = 3;
        at = buf;
        for (int i = 0; i < n; i++) {
            size_t kl = strlen(keys[i]);
            if (c->prefix_len > 0)
                memcpy(at, c->prefix, c->prefix_len);
            memcpy(at + c->prefix_len, keys[i], kl);
            argv[i + 1] = at;
            lens[i + 1] = c->prefix_len + kl;
            at += lens[i + 1];
        }
        rc = cmp__redis_queue(c, r, n + 1, argv, lens);
    }
    free(buf);
    free(lens);
    free(argv);
    return rc;
}

/* The oldest command's deadline passed: answer every expired one ERROR. When nothing at all
 * came back for timeout_ms the connection is stalled (hung server, lost peer): drop it, so
 * the next gets fail at once instead of each waiting out its timeout. A server that answers,
 * only slowly, keeps its connection. */
static void cmp__on_cmd_timer(uv_timer_t *t)
{
    cmp_cache *c = t->data;
    uint64_t now = uv_now(c->loop);
    int expired = 0;
    char why[64];

    while (!gw_queue_empty(&c->inflight)) {
        cmp__req *r = GW_QUEUE_DATA(c->inflight.next, cmp__req, node);
        if (r->deadline > now)
            break;
        expired = 1;
        cmp__finish(r, CMP_CACHE_ERROR, NULL, 0, 0); /* the late reply only releases it */
        if (c->flags & CMP__F_CLOSING)
            return;
    }
    if (expired && c->rstate == CMP__R_UP && now - c->last_reply >= c->timeout_ms) {
        snprintf(why, sizeof why, "no reply for %u ms", c->timeout_ms);
        cmp__redis_down(c, why);
        if (c->flags & CMP__F_CLOSING)
            return;
    }
    if (!gw_queue_empty(&c->inflight)) {
        cmp__req *r = GW_QUEUE_DATA(c->inflight.next, cmp__req, node);
        uv_timer_start(&c->cmd_timer, cmp__on_cmd_timer, r->deadline > now ? r->deadline - now : 0,
                       0);
    }
}
