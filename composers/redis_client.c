/* redis_client.c — see redis_client.h.
 *
 * A node is one server we talk to: SINGLE has one (nodes[0]); SENTINEL has the master in
 * nodes[0] (no address until a sentinel named it) and the sentinels in nodes[1..]; CLUSTER
 * has the seeds first, then every node a slot map or a redirection named. Nodes are never
 * freed before the client, so a hiredis callback can always reach its node (ac->data).
 *
 * Node states: DOWN (ac NULL; retry_at: when to connect again, 0: only when asked) ->
 * [RESOLVING (uv_getaddrinfo) ->] CONNECTING (ac set, the hello command in flight:
 * PING, ROLE, or the sentinel query) -> UP (hello answered). connect_by bounds RESOLVING and
 * CONNECTING. Everything timed (connect deadlines, stalls, retries, sentinel rounds, map
 * refreshes) is driven by one repeating tick timer, which stops when nothing needs watching.
 *
 * hiredis 0.14 rules this file lives by:
 *  - every command callback runs exactly once; on teardown (ours, or hiredis's own after a
 *    read/write/connect error) with a NULL reply, before onDisconnect;
 *  - hiredis frees the context itself after an error; onConnect(ERR) or onDisconnect tells
 *    us and we forget n->ac there;
 *  - redisAsyncFree from inside a callback of the same context is deferred until the
 *    callback returns (within the same call stack).
 */
#include "composers/redis_client.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>

#include "composers/redis_glue.h"
#include "composers/redis_topo.h"

typedef enum { N_DOWN, N_RESOLVING, N_CONNECTING, N_UP } nstate;
typedef enum {
    ROLE_DATA,     /* serves commands: hello PING */
    ROLE_MASTER,   /* SENTINEL's master: hello ROLE, must say "master" */
    ROLE_SENTINEL, /* asked for the master: hello is the query itself */
} nrole;

#define NO_NODE 0xff
#define DISCOVER_BACKOFF_MAX_MS 500 /* a failover takes seconds: be there soon after */

/* A name lookup. A node has at most one out (uv_cancel cannot stop a getaddrinfo already
 * running on the threadpool, so a new one per retry would pile up behind a slow DNS): one
 * abandoned by a timeout is taken up again by the next attempt, and the node is not reused
 * for another address until it called back. */
typedef struct rc_resolve {
    uv_getaddrinfo_t req;
    struct cmp_redis *rc;   /* read first on callback: the client outlives every lookup */
    struct cmp__rnode *n;
    char host[CMP_REDIS_HOST_MAX]; /* what is looked up: N's address may change meanwhile */
    int port;
    int abandoned; /* the attempt timed out or the client closed: only free on callback */
} rc_resolve;

typedef struct cmp__rnode {
    cmp_redis *rc;
    char host[CMP_REDIS_HOST_MAX];
    int port, numeric, idx;
    nrole role;
    nstate state;
    redisAsyncContext *ac;
    rc_resolve *lookup;  /* the one lookup out (RESOLVING, or abandoned), else NULL */
    uint64_t connect_by; /* RESOLVING/CONNECTING: give up at */
    uint64_t retry_at;   /* DOWN: connect again at (0: only when asked) */
    uint32_t backoff_ms;
    uint32_t pending;    /* commands hiredis holds for us on ac */
    uint64_t active_at;  /* last reply, or when the oldest outstanding command went out */
    int ever_up, logged_down, in_map, want_slots;
} rnode;

struct cmp_redis {
    uv_loop_t *loop;
    cmp_redis_conf conf;
    uint32_t stall_ms;
    uint64_t tick_due;  /* when the tick timer fires (while active) */
    char who[64];
    cmp_redis_state_fn state_fn;
    void *state_arg;
    uv_timer_t tick;
    int tick_open, closing, dns_pending, up;
    uint64_t reconnects;
    rnode *nodes[CMP_REDIS_MAX_NODES];
    int n_nodes;
    /* SENTINEL */
    int sentinel_next, sentinel_tried; /* round robin; asked in this round */
    rnode *asking;                     /* the sentinel being asked */
    uint64_t discover_at;              /* ask again at (0: not scheduled) */
    uint32_t discover_backoff;
    /* CLUSTER */
    uint8_t *slots;                    /* node index per slot, NO_NODE when none */
    int map_known, map_whole, seed_next;
    rnode *refreshing;                 /* the node asked CLUSTER SLOTS */
    uint64_t refresh_at;               /* refresh at (0: not scheduled) */
    int seeds_tried;                   /* seeds connected since the last map (or pause) */
    uint32_t refresh_backoff;          /* the pause after a round of seeds without a map */
};

static void node_connect(rnode *n);
static void node_fail(rnode *n, const char *why);
static void rc_arm(cmp_redis *rc);
static void on_tick(uv_timer_t *t);
static void rc_update(cmp_redis *rc, const char *why);
static void discover(cmp_redis *rc);
static void refresh(cmp_redis *rc);

/* ---- configuration ------------------------------------------------------------------- */
const char *cmp_redis_conf_error(const cmp_redis_conf *conf)
{
    char host[CMP_REDIS_HOST_MAX];
    int port;
    if (conf->kind == CMP_REDIS_NONE)
        return NULL;
    if (conf->n < 1 || conf->n > CMP_REDIS_MAX_ADDRS ||
        (conf->kind == CMP_REDIS_SINGLE && conf->n != 1))
        return "wrong number of addresses";
    for (int i = 0; i < conf->n; i++)
        if (cmp_redis_parse_addr(conf->addr[i], strnlen(conf->addr[i], CMP_REDIS_ADDR_MAX), host,
                                 sizeof host, &port) != 0)
            return "invalid address (want \"host:port\" or \"[ipv6]:port\")";
    if (conf->kind == CMP_REDIS_SENTINEL && conf->master_name[0] == '\0')
        return "a master name is needed with sentinels";
    if ((conf->auth.username[0] && !conf->auth.password[0]) ||
        (conf->sentinel_auth.username[0] && !conf->sentinel_auth.password[0]))
        return "a user name needs a password";
    return NULL;
}

int cmp_redis_conf_single(cmp_redis_conf *conf, const char *hostport)
{
    memset(conf, 0, sizeof *conf);
    size_t n = strlen(hostport);
    if (n >= CMP_REDIS_ADDR_MAX)
        return -1;
    memcpy(conf->addr[0], hostport, n + 1);
    conf->kind = CMP_REDIS_SINGLE;
    conf->n = 1;
    if (cmp_redis_conf_error(conf) != NULL) {
        memset(conf, 0, sizeof *conf);
        return -1;
    }
    return 0;
}

void cmp_redis_conf_describe(const cmp_redis_conf *conf, char *out, size_t n)
{
    size_t at = 0;
    int w;
    switch (conf->kind) {
    case CMP_REDIS_SINGLE:
        snprintf(out, n, "%s", conf->addr[0]);
        return;
    case CMP_REDIS_SENTINEL:
        w = snprintf(out, n, "sentinel master %s via ", conf->master_name);
        break;
    case CMP_REDIS_CLUSTER:
        w = snprintf(out, n, "cluster via ");
        break;
    default:
        snprintf(out, n, "none");
        return;
    }
    at = w < 0 ? 0 : (size_t)w;
    for (int i = 0; i < conf->n && at < n; i++) {
        w = snprintf(out + at, n - at, "%s%s", i ? "," : "", conf->addr[i]);
        at += w < 0 ? 0 : (size_t)w;
    }
}

/* ---- helpers ------------------------------------------------------------------------ */
static void node_log(const rnode *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void node_log(const rnode *n, const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "gateway: %s: redis %s%s%s:%d: %s\n", n->rc->who,
            n->role == ROLE_SENTINEL ? "sentinel " : "", strchr(n->host, ':') ? "[" : "",
            n->host, n->port, msg);
}

static uint32_t next_backoff(uint32_t *b, uint32_t max)
{
    uint32_t delay = *b + (uint32_t)(uv_hrtime() % (*b / 4 + 1)); /* jitter */
    *b = *b * 2 > max ? max : *b * 2;
    return delay;
}

static void set_addr(rnode *n, const char *host, int port)
{
    struct in6_addr a6;
    snprintf(n->host, sizeof n->host, "%s", host);
    n->port = port;
    n->numeric = uv_inet_pton(AF_INET, host, &a6) == 0 || uv_inet_pton(AF_INET6, host, &a6) == 0;
}

/* A CLUSTER node slot to give another address when the table is full: nodes come back on
 * new addresses (containers, failovers), and a cap on every address ever seen would leave
 * slots without a node for good. Only a node nothing refers to: not a seed, not in the map
 * (no slot names it), not asked for the map, down with no connection and no lookup out (its
 * callbacks would reach a node that now means another address). */
static rnode *node_reusable(cmp_redis *rc)
{
    for (int i = rc->conf.n; i < rc->n_nodes; i++) {
        rnode *c = rc->nodes[i];
        if (c->role == ROLE_DATA && !c->in_map && rc->refreshing != c && c->state == N_DOWN &&
            c->ac == NULL && c->lookup == NULL)
            return c;
    }
    return NULL;
}

static rnode *node_add(cmp_redis *rc, const char *host, int port, nrole role)
{
    rnode *n;
    if (rc->n_nodes >= CMP_REDIS_MAX_NODES) {
        if (rc->conf.kind != CMP_REDIS_CLUSTER || (n = node_reusable(rc)) == NULL)
            return NULL;
        int idx = n->idx;
        memset(n, 0, sizeof *n);
        n->idx = idx;
    } else {
        if ((n = calloc(1, sizeof *n)) == NULL)
            return NULL;
        n->idx = rc->n_nodes;
        rc->nodes[rc->n_nodes++] = n;
    }
    n->rc = rc;
    n->role = role;
    n->backoff_ms = CMP_REDIS_BACKOFF_MIN_MS;
    set_addr(n, host, port);
    return n;
}

static rnode *node_find(cmp_redis *rc, const char *host, int port)
{
    for (int i = 0; i < rc->n_nodes; i++)
        if (rc->nodes[i]->role == ROLE_DATA && rc->nodes[i]->port == port &&
            strcmp(rc->nodes[i]->host, host) == 0)
            return rc->nodes[i];
    return NULL;
}

/* A command went out on N: the first outstanding one starts the stall watch. */
static void node_sent(rnode *n)
{
    cmp_redis *rc = n->rc;
    if (n->pending++ > 0)
        return;
    n->active_at = uv_now(rc->loop);
    if (!uv_is_active((uv_handle_t *)&rc->tick) || rc->tick_due > n->active_at + rc->stall_ms) {
        rc->tick_due = n->active_at + rc->stall_ms;
        uv_timer_start(&rc->tick, on_tick, rc->stall_ms, 0);
    }
}

/* A callback of a command on N ran (REPLY NULL: teardown). */
static void node_answered(rnode *n, const redisAsyncContext *ac, const void *reply)
{
    if (n->ac != ac)
        return; /* an old connection's teardown */
    if (n->pending > 0)
        n->pending--;
    if (reply != NULL)
        n->active_at = uv_now(n->rc->loop);
}

/* RC without the credentials it holds, then freed. */
static void rc_free(cmp_redis *rc)
{
    for (int i = 0; i < rc->n_nodes; i++)
        free(rc->nodes[i]);
    free(rc->slots);
    explicit_bzero(&rc->conf, sizeof rc->conf);
    free(rc);
}

static void maybe_free(cmp_redis *rc)
{
    if (!rc->closing || rc->tick_open || rc->dns_pending)
        return;
    rc_free(rc);
}

/* ---- node life ----------------------------------------------------------------------- */
/* N stops waiting for its lookup; the lookup stays N's until it calls back. */
static void abandon_resolve(rnode *n)
{
    if (n->lookup != NULL && !n->lookup->abandoned) {
        n->lookup->abandoned = 1;
        uv_cancel((uv_req_t *)&n->lookup->req); /* best effort; the callback still runs */
    }
}

/* Closes N's connection without reacting (a sentinel that answered, a master that moved,
 * the client closing). Its commands get their NULL replies. */
static void node_drop(rnode *n)
{
    redisAsyncContext *ac = n->ac;
    n->ac = NULL;
    abandon_resolve(n);
    n->state = N_DOWN;
    n->pending = 0;
    n->retry_at = 0;
    if (ac != NULL)
        redisAsyncFree(ac);
}

static void node_up(rnode *n)
{
    cmp_redis *rc = n->rc;
    n->state = N_UP;
    n->backoff_ms = CMP_REDIS_BACKOFF_MIN_MS;
    n->active_at = uv_now(rc->loop);
    if (n->role != ROLE_SENTINEL) {
        if (n->ever_up)
            rc->reconnects++;
        if (rc->conf.kind != CMP_REDIS_SINGLE && (!n->ever_up || n->logged_down))
            node_log(n, "%s", n->role == ROLE_MASTER ? "connected to the master"
                                                     : n->ever_up ? "connected again"
                                                                  : "connected");
        n->ever_up = 1;
        n->logged_down = 0;
    }
    if (n->role == ROLE_MASTER)
        rc->discover_backoff = CMP_REDIS_BACKOFF_MIN_MS;
    rc_update(rc, NULL);
}

/* N's connection or attempt failed: forget it, react as its role wants, tell the owner,
 * and free the context last: that runs the owners' callbacks (NULL replies), and the state
 * must already be consistent. */
static void node_fail(rnode *n, const char *why)
{
    cmp_redis *rc = n->rc;
    redisAsyncContext *ac = n->ac;
    int was_up = n->state == N_UP;
    uint64_t now = uv_now(rc->loop);

    n->ac = NULL;
    abandon_resolve(n);
    n->state = N_DOWN;
    n->pending = 0;
    n->retry_at = 0;
    if (rc->closing) {
        if (ac != NULL)
            redisAsyncFree(ac);
        return;
    }
    if (was_up)
        n->backoff_ms = CMP_REDIS_BACKOFF_MIN_MS; /* a loss: try again soon */
    /* once per streak. One server: its owner logs the loss (the client's state changed);
     * the failed attempts are logged here, else a server never reached (a wrong password,
     * nothing listening) would leave no line at all */
    if ((rc->conf.kind != CMP_REDIS_SINGLE || !was_up) && !n->logged_down) {
        node_log(n, "%s: %s", was_up ? "connection lost" : "unreachable", why);
        n->logged_down = 1;
    }
    switch (n->role) {
    case ROLE_DATA:
        if (rc->conf.kind == CMP_REDIS_SINGLE || n->in_map)
            n->retry_at = now + next_backoff(&n->backoff_ms, CMP_REDIS_BACKOFF_MAX_MS);
        if (rc->refreshing == n) /* the node asked for the map: ask another at once */
            rc->refreshing = NULL;
        if (rc->conf.kind == CMP_REDIS_CLUSTER && rc->refresh_at == 0)
            rc->refresh_at = now + (n->in_map ? CMP_REDIS_REFRESH_MS : 0);
        break;
    case ROLE_MASTER: /* ask the sentinels again: at once after a loss, else after a pause */
        rc->discover_at = now + (was_up ? 0 : next_backoff(&rc->discover_backoff,
                                                           DISCOVER_BACKOFF_MAX_MS));
        break;
    case ROLE_SENTINEL:
        if (rc->asking == n) {
            rc->asking = NULL;
            rc->discover_at = now; /* the next sentinel, on the next tick */
        }
        break;
    }
    rc_arm(rc);
    rc_update(rc, why);
    if (ac != NULL)
        redisAsyncFree(ac);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    rnode *n = ac->data;
    char why[160];
    if (n->ac != ac || status == REDIS_OK)
        return; /* connected: UP waits for the hello answer */
    snprintf(why, sizeof why, "connect: %s", ac->c.errstr);
    n->ac = NULL; /* hiredis frees it when we return */
    node_fail(n, why);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    rnode *n = ac->data;
    char why[160];
    if (n->ac != ac)
        return; /* we dropped it ourselves */
    snprintf(why, sizeof why, "%s", status == REDIS_OK ? "closed" : ac->c.errstr);
    n->ac = NULL;
    node_fail(n, why);
}

static void sentinel_answered(cmp_redis *rc, rnode *s, const char *host, int port);
static void on_slots(redisAsyncContext *ac, void *reply, void *privdata);

/* The answer to the hello command: the node serves (or, for a sentinel, names the master). */
static void on_hello(redisAsyncContext *ac, void *reply, void *privdata)
{
    rnode *n = ac->data;
    redisReply *rep = reply;
    char why[200], host[CMP_REDIS_HOST_MAX];
    int port, rc;

    (void)privdata;
    node_answered(n, ac, reply);
    if (n->ac != ac || n->state != N_CONNECTING || rep == NULL)
        return; /* NULL: teardown, onConnect/onDisconnect (or we) handle the state */
    if (rep->type == REDIS_REPLY_ERROR) { /* -LOADING, -NOAUTH, ... */
        snprintf(why, sizeof why, "%s: %.*s", n->role == ROLE_SENTINEL ? "SENTINEL" : "hello",
                 (int)rep->len, rep->str);
        node_fail(n, why);
        return;
    }
    switch (n->role) {
    case ROLE_DATA:
        node_up(n);
        break;
    case ROLE_MASTER:
        if ((rc = cmp_redis_parse_role(rep)) == 1) {
            node_up(n);
        } else {
            node_fail(n, rc == 0 ? "not the master (ROLE says so): failover under way?"
                                 : "unexpected ROLE reply");
        }
        break;
    case ROLE_SENTINEL:
        rc = cmp_redis_parse_master_addr(rep, host, sizeof host, &port);
        if (rc == 0) {
            sentinel_answered(n->rc, n, host, port);
        } else {
            snprintf(why, sizeof why, "%s", rc == 1 ? "does not know the master name"
                                                     : "unexpected reply to get-master-addr");
            node_fail(n, why);
        }
        break;
    }
}

/* The answer to AUTH, which goes before the hello command: an error (-WRONGPASS, -ERR when
 * the server has no password) fails the attempt; the hello's answer makes the node UP. */
static void on_auth(redisAsyncContext *ac, void *reply, void *privdata)
{
    rnode *n = ac->data;
    redisReply *rep = reply;
    const char *pass = n->role == ROLE_SENTINEL ? n->rc->conf.sentinel_auth.password
                                                : n->rc->conf.auth.password;
    char why[200];

    (void)privdata;
    node_answered(n, ac, reply);
    if (n->ac != ac || n->state != N_CONNECTING || rep == NULL ||
        rep->type != REDIS_REPLY_ERROR)
        return;
    /* Redis never echoes the password; should some server or proxy do so, it goes no
     * further: masked in the whole text, before it is cut to fit */
    const char *hint = " (AUTH with a user name needs Redis 6 or later: leave out \"username\")";
    size_t hl = strlen(hint);
    memcpy(why, "AUTH: ", 6);
    cmp_redis_masked(rep->str, rep->len, pass, why + 6, sizeof why - 6 - hl);
    /* Redis 5 knows AUTH password only */
    if (rep->len >= 29 && strncmp(rep->str, "ERR wrong number of arguments", 29) == 0 &&
        (n->role == ROLE_SENTINEL ? n->rc->conf.sentinel_auth : n->rc->conf.auth).username[0])
        memcpy(why + strlen(why), hint, hl + 1);
    node_fail(n, why); /* frees AC: the hello's callback gets NULL */
}

/* Queues AUTH [user] password on AC when N's role has a password. 0, or -1 (not queued). */
static int queue_auth(rnode *n, redisAsyncContext *ac)
{
    const cmp_redis_auth *a = n->role == ROLE_SENTINEL ? &n->rc->conf.sentinel_auth
                                                       : &n->rc->conf.auth;
    const char *argv[3] = { "AUTH", a->username, a->password };
    size_t lens[3] = { 4, strlen(a->username), strlen(a->password) };
    int user = a->username[0] != '\0';

    if (a->password[0] == '\0')
        return 0;
    if (!user) {
        argv[1] = a->password;
        lens[1] = lens[2];
    }
    if (redisAsyncCommandArgv(ac, on_auth, NULL, 2 + user, argv, lens) != REDIS_OK)
        return -1;
    node_sent(n);
    return 0;
}

static void connect_ip(rnode *n, const char *ip)
{
    cmp_redis *rc = n->rc;
    redisAsyncContext *ac = redisAsyncConnect(ip, n->port);
    char why[160];
    int q;

    if (ac == NULL) {
        node_fail(n, "out of memory");
        return;
    }
    if (ac->err) { /* e.g. refused at once on loopback */
        snprintf(why, sizeof why, "connect: %s", ac->c.errstr);
        redisAsyncFree(ac);
        node_fail(n, why);
        return;
    }
    ac->data = n;
    cmp_redis_guard_reader(ac);
    if (redisLibuvAttach(ac, rc->loop) != REDIS_OK) {
        memset(&ac->ev, 0, sizeof ac->ev); /* the adapter may have left hooks without data */
        redisAsyncFree(ac);
        node_fail(n, "cannot attach to the loop");
        return;
    }
    cmp_redis_fix_adapter(ac); /* before anything polls */
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    n->ac = ac;
    n->state = N_CONNECTING;
    rc_arm(rc); /* connect_by */
    /* queued now, written once connected, AUTH first: its answer proves the server serves */
    if (queue_auth(n, ac) != 0) {
        node_fail(n, "cannot queue AUTH");
        return;
    }
    if (n->role == ROLE_SENTINEL)
        q = redisAsyncCommand(ac, on_hello, NULL, "SENTINEL get-master-addr-by-name %s",
                              rc->conf.master_name);
    else
        q = redisAsyncCommand(ac, on_hello, NULL, n->role == ROLE_MASTER ? "ROLE" : "PING");
    if (q != REDIS_OK) {
        node_fail(n, "cannot queue the first command");
        return;
    }
    node_sent(n);
    if (n->want_slots && rc->refreshing == n) {
        n->want_slots = 0;
        if (redisAsyncCommand(ac, on_slots, NULL, "CLUSTER SLOTS") == REDIS_OK)
            node_sent(n);
        else
            rc->refreshing = NULL;
    }
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    rc_resolve *r = req->data;
    cmp_redis *rc = r->rc;
    rnode *n = r->n;
    char ip[64] = "", why[160];

    rc->dns_pending--;
    n->lookup = NULL; /* N is still allocated: nodes are freed after the last lookup */
    if (r->abandoned) {
        uv_freeaddrinfo(res);
        free(r);
        maybe_free(rc);
        return;
    }
    if (status == UV_EAI_CANCELED || r->port != n->port || strcmp(r->host, n->host) != 0) {
        /* taken up again after uv_cancel stopped it, or N's address changed meanwhile
         * (a sentinel named another master): the answer is of no use, ask afresh */
        uv_freeaddrinfo(res);
        free(r);
        n->state = N_DOWN;
        node_connect(n);
        return;
    }
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
        node_fail(n, why);
        return;
    }
    connect_ip(n, ip);
}

/* Starts connecting N (when DOWN). */
static void node_connect(rnode *n)
{
    cmp_redis *rc = n->rc;
    struct addrinfo hints;
    char port[8];
    rc_resolve *r;
    int err;

    if (n->state != N_DOWN || rc->closing || n->host[0] == '\0')
        return;
    n->retry_at = 0;
    n->connect_by = uv_now(rc->loop) + CMP_REDIS_CONNECT_TIMEOUT_MS;
    if (n->numeric) {
        connect_ip(n, n->host);
        return;
    }
    if (n->lookup != NULL) { /* the lookup a timeout abandoned still runs: wait for it */
        n->lookup->abandoned = 0;
        n->state = N_RESOLVING;
        rc_arm(rc);
        return;
    }
    if ((r = calloc(1, sizeof *r)) == NULL) {
        node_fail(n, "out of memory");
        return;
    }
    r->rc = rc;
    r->n = n;
    snprintf(r->host, sizeof r->host, "%s", n->host);
    r->port = n->port;
    r->req.data = r;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof port, "%d", n->port);
    if ((err = uv_getaddrinfo(rc->loop, &r->req, on_resolved, n->host, port, &hints)) != 0) {
        free(r);
        node_fail(n, uv_strerror(err));
        return;
    }
    n->lookup = r;
    rc->dns_pending++;
    n->state = N_RESOLVING;
    rc_arm(rc); /* after the state change: the deadline counts from RESOLVING on */
}

/* ---- topology: state, sentinel, cluster map ---------------------------------------- */
static int compute_up(const cmp_redis *rc)
{
    if (rc->conf.kind != CMP_REDIS_CLUSTER)
        return rc->nodes[0]->state == N_UP;
    if (!rc->map_known || !rc->map_whole)
        return 0;
    for (int i = 0; i < rc->n_nodes; i++)
        if (rc->nodes[i]->in_map && rc->nodes[i]->state != N_UP)
            return 0;
    return 1;
}

/* Tells the owner when usability changed. A cluster not whole refreshes its map. */
static void rc_update(cmp_redis *rc, const char *why)
{
    int up = compute_up(rc);
    if (rc->conf.kind == CMP_REDIS_CLUSTER && !up && rc->refresh_at == 0 &&
        rc->refreshing == NULL) {
        rc->refresh_at = uv_now(rc->loop) + CMP_REDIS_REFRESH_MS;
        rc_arm(rc);
    }
    if (up == rc->up || rc->closing)
        return;
    rc->up = up;
    if (rc->state_fn != NULL)
        rc->state_fn(rc->state_arg, up, why ? why : up ? "up" : "down");
}

static void discover(cmp_redis *rc)
{
    uint64_t now = uv_now(rc->loop);
    int ns = rc->conf.n;

    rc->discover_at = 0;
    if (rc->asking != NULL || rc->nodes[0]->state != N_DOWN)
        return;
    if (rc->sentinel_tried >= ns) { /* a round without an answer: pause */
        rc->sentinel_tried = 0;
        rc->discover_at = now + next_backoff(&rc->discover_backoff, DISCOVER_BACKOFF_MAX_MS);
        rc_arm(rc);
        return;
    }
    rnode *s = rc->nodes[1 + rc->sentinel_next];
    rc->sentinel_next = (rc->sentinel_next + 1) % ns;
    rc->sentinel_tried++;
    rc->asking = s;
    node_drop(s);
    node_connect(s); /* a failure sets discover_at: the next sentinel */
}

/* Sentinel S named the master: connect to it (ROLE confirms it). */
static void sentinel_answered(cmp_redis *rc, rnode *s, const char *host, int port)
{
    rnode *m = rc->nodes[0];
    rc->asking = NULL;
    rc->sentinel_tried = 0;
    s->logged_down = 0;
    node_drop(s); /* one question per connection: freed when this callback returns */
    if (m->port != port || strcmp(m->host, host) != 0) {
        if (m->host[0] != '\0')
            node_log(m, "the master is now %s:%d (sentinel %s:%d)", host, port, s->host, s->port);
        node_drop(m);
        set_addr(m, host, port);
        m->logged_down = 0;
    }
    node_connect(m);
}

/* Asks a node for CLUSTER SLOTS: a connected one of the map, else the next seed. */
static void refresh(cmp_redis *rc)
{
    rnode *n = NULL;
    rc->refresh_at = 0;
    if (rc->refreshing != NULL)
        return;
    for (int i = 0; i < rc->n_nodes && n == NULL; i++) {
        rnode *c = rc->nodes[(rc->seed_next + i) % rc->n_nodes];
        if (c->state == N_UP && c->ac != NULL)
            n = c;
    }
    if (n != NULL) {
        rc->seed_next = (n->idx + 1) % rc->n_nodes;
        if (redisAsyncCommand(n->ac, on_slots, NULL, "CLUSTER SLOTS") == REDIS_OK) {
            node_sent(n);
            rc->refreshing = n;
            return;
        }
    }
    /* nothing connected: a seed (connecting queues the question behind its PING). A round
     * over the seeds without a map pauses, 100 ms doubling to 5 s, as the sentinels' rounds
     * do: a seed that fails once connected (a wrong password, -LOADING) fails
     * asynchronously, and asking the next one at once would reconnect in a tight loop */
    for (int i = 0; i < rc->conf.n; i++) {
        if (rc->seeds_tried >= rc->conf.n) {
            rc->seeds_tried = 0;
            rc->refresh_at = uv_now(rc->loop) + next_backoff(&rc->refresh_backoff,
                                                             CMP_REDIS_BACKOFF_MAX_MS);
            rc_arm(rc);
            return;
        }
        n = rc->nodes[rc->seed_next % rc->conf.n];
        rc->seed_next = (rc->seed_next + 1) % rc->conf.n;
        if (n->state == N_DOWN) {
            rc->seeds_tried++;
            rc->refreshing = n;
            n->want_slots = 1;
            node_connect(n);
            if (rc->refreshing == n)
                return;
        }
    }
    /* every seed busy connecting or failing at once: later */
    rc->refresh_at = uv_now(rc->loop) + CMP_REDIS_REFRESH_MS;
    rc_arm(rc);
}

static void apply_map(cmp_redis *rc, const cmp_redis_range *r, int k)
{
    uint32_t covered = 0;
    int masters = 0;
    memset(rc->slots, NO_NODE, CMP_REDIS_SLOTS);
    for (int i = 0; i < rc->n_nodes; i++)
        rc->nodes[i]->in_map = 0;
    for (int i = 0; i < k; i++) { /* first the known nodes: a full table reuses no node */
        rnode *n = node_find(rc, r[i].host, r[i].port); /* of this map for another range */
        if (n != NULL)
            n->in_map = 1;
    }
    for (int i = 0; i < k; i++) {
        rnode *n = node_find(rc, r[i].host, r[i].port);
        if (n == NULL && (n = node_add(rc, r[i].host, r[i].port, ROLE_DATA)) == NULL)
            continue; /* too many nodes in use: those slots stay without one */
        n->in_map = 1;
        memset(rc->slots + r[i].start, n->idx, (size_t)r[i].end - r[i].start + 1);
    }
    for (int i = 0; i < rc->n_nodes; i++)
        masters += rc->nodes[i]->in_map;
    for (int s = 0; s < CMP_REDIS_SLOTS; s++)
        covered += rc->slots[s] != NO_NODE;
    if (!rc->map_known || covered != CMP_REDIS_SLOTS || !rc->map_whole)
        fprintf(stderr, "gateway: %s: redis cluster: slot map: %d masters, %u of %d slots%s\n",
                rc->who, masters, covered, CMP_REDIS_SLOTS,
                covered == CMP_REDIS_SLOTS ? "" : " (commands for the others are not sent)");
    rc->map_known = 1;
    rc->map_whole = covered == CMP_REDIS_SLOTS;
    rc->seeds_tried = 0;
    rc->refresh_backoff = CMP_REDIS_BACKOFF_MIN_MS;
    uint64_t now = uv_now(rc->loop);
    for (int i = 0; i < rc->n_nodes; i++) {
        rnode *n = rc->nodes[i];
        if (n->in_map && n->state == N_DOWN && (n->retry_at == 0 || n->retry_at <= now))
            node_connect(n);
    }
}

static void on_slots(redisAsyncContext *ac, void *reply, void *privdata)
{
    rnode *n = ac->data;
    cmp_redis *rc = n->rc;
    redisReply *rep = reply;
    cmp_redis_range *r;
    int k = -1;

    (void)privdata;
    node_answered(n, ac, reply);
    if (rc->refreshing != n || rc->closing)
        return;
    rc->refreshing = NULL;
    if (rep != NULL && rep->type == REDIS_REPLY_ARRAY &&
        (r = malloc(sizeof *r * (rep->elements ? rep->elements : 1))) != NULL) {
        k = cmp_redis_parse_slots(rep, n->host, r, (int)rep->elements);
        if (k > 0)
            apply_map(rc, r, k);
        free(r);
    }
    if (k <= 0) {
        node_log(n, "CLUSTER SLOTS: %s", rep == NULL ? "no reply"
                                         : rep->type == REDIS_REPLY_ERROR ? rep->str
                                                                          : "unexpected reply");
        /* no map yet (not a cluster, a user without +cluster|slots): the seeds' pause */
        rc->refresh_at = uv_now(rc->loop) + (rc->map_known ? CMP_REDIS_REFRESH_MS
                                                           : next_backoff(&rc->refresh_backoff,
                                                                          CMP_REDIS_BACKOFF_MAX_MS));
        rc_arm(rc);
    }
    rc_update(rc, "the slot map has holes or a master is down");
}

/* ---- the tick: deadlines, stalls, retries, rounds ---------------------------------- */
static void on_tick(uv_timer_t *t)
{
    cmp_redis *rc = t->data;
    uint64_t now = uv_now(rc->loop);
    char why[64];

    for (int i = 0; i < rc->n_nodes && !rc->closing; i++) {
        rnode *n = rc->nodes[i];
        if ((n->state == N_RESOLVING || n->state == N_CONNECTING) && now >= n->connect_by) {
            node_fail(n, n->state == N_RESOLVING ? "name lookup timed out"
                                                 : "connect timed out (no first answer)");
        } else if (n->state == N_UP && n->pending > 0 && now - n->active_at >= rc->stall_ms) {
            snprintf(why, sizeof why, "no reply for %u ms", rc->stall_ms);
            node_fail(n, why);
        } else if (n->state == N_DOWN && n->retry_at != 0 && now >= n->retry_at) {
            node_connect(n);
        }
    }
    if (rc->closing)
        return;
    if (rc->discover_at != 0 && now >= rc->discover_at)
        discover(rc);
    if (rc->refresh_at != 0 && now >= rc->refresh_at)
        refresh(rc);
    rc_arm(rc);
}

/* (Re)starts the tick for the earliest thing to watch: a connect deadline, a stall, a
 * retry, a sentinel round, a map refresh; stops it when there is none. */
static void rc_arm(cmp_redis *rc)
{
    uint64_t due = UINT64_MAX, now;
    if (rc->closing)
        return;
    for (int i = 0; i < rc->n_nodes; i++) {
        const rnode *n = rc->nodes[i];
        uint64_t t = n->state == N_RESOLVING || n->state == N_CONNECTING ? n->connect_by
                     : n->state == N_UP && n->pending > 0                 ? n->active_at + rc->stall_ms
                     : n->state == N_DOWN && n->retry_at                  ? n->retry_at
                                                                          : UINT64_MAX;
        due = t < due ? t : due;
    }
    if (rc->discover_at != 0 && rc->discover_at < due)
        due = rc->discover_at;
    if (rc->refresh_at != 0 && rc->refresh_at < due)
        due = rc->refresh_at;
    if (due == UINT64_MAX) {
        uv_timer_stop(&rc->tick);
        return;
    }
    now = uv_now(rc->loop);
    rc->tick_due = due > now ? due : now;
    uv_timer_start(&rc->tick, on_tick, rc->tick_due - now, 0);
}

/* ---- commands ------------------------------------------------------------------------ */
static void on_plain(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)privdata;
    node_answered(ac->data, ac, reply); /* ASKING's +OK */
}

static void on_cmd_reply(redisAsyncContext *ac, void *reply, void *privdata);

/* Re-sends CMD (CLUSTER: its kept buffer) to N, with ASKING first when ASK. */
static int resend(rnode *n, cmp_redis_cmd *cmd, int ask)
{
    if (n->ac == NULL || cmd->buf == NULL || n->pending + 2 > CMP_REDIS_MAX_PENDING)
        return -1;
    if (ask) {
        if (redisAsyncCommand(n->ac, on_plain, NULL, "ASKING") != REDIS_OK)
            return -1;
        node_sent(n);
    }
    if (redisAsyncFormattedCommand(n->ac, on_cmd_reply, cmd, cmd->buf, cmd->len) != REDIS_OK)
        return -1;
    node_sent(n);
    cmd->node = n;
    cmd->redirects++;
    return 0;
}

/* A -MOVED/-ASK for CMD: 0 when it went to the node named, -1 when it cannot. */
static int follow(cmp_redis *rc, rnode *from, cmp_redis_cmd *cmd, const redisReply *rep)
{
    char host[CMP_REDIS_HOST_MAX];
    uint16_t slot;
    int port, kind;
    rnode *to;

    kind = cmp_redis_parse_redirect(rep->str, rep->len, &slot, host, sizeof host, &port);
    if (kind <= 0 || cmd->redirects >= CMP_REDIS_MAX_REDIRECTS)
        return -1;
    if (host[0] == '\0')
        snprintf(host, sizeof host, "%s", from->host);
    if ((to = node_find(rc, host, port)) == NULL &&
        (to = node_add(rc, host, port, ROLE_DATA)) == NULL)
        return -1;
    if (kind == CMP_REDIS_MOVED) { /* this slot now; the whole map soon (on_cmd_reply) */
        rc->slots[slot] = (uint8_t)to->idx;
        to->in_map = 1;
    }
    if (to->state == N_DOWN)
        node_connect(to); /* commands queue behind its PING */
    return resend(to, cmd, kind == CMP_REDIS_ASK);
}

static void on_cmd_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    cmp_redis_cmd *cmd = privdata;
    rnode *n = ac->data;
    cmp_redis *rc = n->rc;
    redisReply *rep = reply;

    node_answered(n, ac, reply);
    if (rep != NULL && rep->type == REDIS_REPLY_ERROR && !rc->closing) {
        if (rc->conf.kind == CMP_REDIS_CLUSTER) {
            /* a MOVED, followed or not (malformed, too many redirections, no room for the
             * node): re-read the map soon (a reshard or a failover moves more than a slot) */
            if (strncmp(rep->str, "MOVED ", 6) == 0 && rc->refresh_at == 0) {
                rc->refresh_at = uv_now(rc->loop);
                rc_arm(rc);
            }
            if (follow(rc, n, cmd, rep) == 0)
                return; /* the node named holds CMD now */
            if ((strncmp(rep->str, "CLUSTERDOWN", 11) == 0 ||
                 strncmp(rep->str, "TRYAGAIN", 8) == 0) && rc->refresh_at == 0) {
                rc->refresh_at = uv_now(rc->loop) + CMP_REDIS_REFRESH_MS;
                rc_arm(rc);
            }
        } else if (rc->conf.kind == CMP_REDIS_SENTINEL && n->ac == ac &&
                   strstr(rep->str, "READONLY") != NULL) { /* also inside a script's error */
            node_fail(n, "READONLY: the master became a replica"); /* ask the sentinels */
        }
    }
    cmp_redis_reply_fn fn = cmd->fn;
    void *priv = cmd->priv;
    free(cmd->buf);
    cmd->buf = NULL;
    fn(priv, rep); /* last: the owner may free CMD, send it again or close the client */
}

/* RESP's multi-bulk form of ARGV: its length, and the bytes into OUT (of that length). The
 * formatting is done here rather than by redisAsyncCommandArgv, which builds it in a fresh
 * heap string for every command: a stack buffer does for the rate limiter's EVALSHA. */
static size_t resp_len(int argc, const size_t *lens)
{
    size_t n = 1 + 20 + 2;
    for (int i = 0; i < argc; i++)
        n += 1 + 20 + 2 + lens[i] + 2;
    return n; /* an upper bound: 20 digits per length */
}

static char *put_len(char *o, char c, size_t v)
{
    char d[24];
    int k = 0;
    *o++ = c;
    do
        d[k++] = (char)('0' + v % 10);
    while ((v /= 10) > 0);
    while (k > 0)
        *o++ = d[--k];
    *o++ = '\r';
    *o++ = '\n';
    return o;
}

static size_t resp_write(char *out, int argc, const char **argv, const size_t *lens)
{
    char *o = put_len(out, '*', (size_t)argc);
    for (int i = 0; i < argc; i++) {
        o = put_len(o, '$', lens[i]);
        memcpy(o, argv[i], lens[i]);
        o += lens[i];
        *o++ = '\r';
        *o++ = '\n';
    }
    return (size_t)(o - out);
}

int cmp_redis_send(cmp_redis *rc, cmp_redis_cmd *cmd, const char *key, size_t klen, int argc,
                   const char **argv, const size_t *lens, cmp_redis_reply_fn fn, void *priv)
{
    char stack[1024], *buf = stack;
    size_t len, cap;
    rnode *n;
    int keep, rv = -1;

    if (rc->closing)
        return -1;
    keep = rc->conf.kind == CMP_REDIS_CLUSTER; /* kept for a redirection */
    if (keep) {
        uint8_t i = rc->slots[cmp_redis_key_slot(key, klen)];
        n = i == NO_NODE ? NULL : rc->nodes[i];
    } else {
        n = rc->nodes[0];
    }
    /* a slow but alive server answers within the stall time yet falls behind: past the
     * cap, refuse at once (the caller fails open) rather than queue without bound */
    if (n == NULL || n->state != N_UP || n->ac == NULL || n->pending >= CMP_REDIS_MAX_PENDING)
        return -1;
    /* + 1: hiredis 0.14 reads the byte after the last argument (its formatter's output is
     * NUL-terminated) when it looks for the command name: give it that NUL */
    cap = resp_len(argc, lens) + 1;
    if ((keep || cap > sizeof stack) && (buf = malloc(cap)) == NULL)
        return -1;
    len = resp_write(buf, argc, argv, lens);
    buf[len] = '\0';
    cmd->rc = rc;
    cmd->fn = fn;
    cmd->priv = priv;
    cmd->node = n;
    cmd->redirects = 0;
    cmd->buf = keep ? buf : NULL;
    cmd->len = len;
    if (redisAsyncFormattedCommand(n->ac, on_cmd_reply, cmd, buf, len) == REDIS_OK) {
        node_sent(n);
        rv = 0;
    } else {
        cmd->buf = NULL;
    }
    if (buf != stack && (rv != 0 || !keep))
        free(buf);
    return rv;
}

/* ---- life ----------------------------------------------------------------------------- */
int cmp_redis_up(const cmp_redis *rc)
{
    return rc != NULL && !rc->closing && rc->up;
}

uint64_t cmp_redis_reconnects(const cmp_redis *rc)
{
    return rc ? rc->reconnects : 0;
}

cmp_redis *cmp_redis_new(uv_loop_t *loop, const cmp_redis_conf *conf, uint32_t stall_ms,
                         const char *who, cmp_redis_state_fn state, void *arg)
{
    cmp_redis *rc;
    char host[CMP_REDIS_HOST_MAX];
    int port;

    if (conf->kind == CMP_REDIS_NONE || cmp_redis_conf_error(conf) != NULL ||
        (rc = calloc(1, sizeof *rc)) == NULL)
        return NULL;
    rc->loop = loop;
    rc->conf = *conf;
    rc->stall_ms = stall_ms ? stall_ms : 1000;
    snprintf(rc->who, sizeof rc->who, "%s", who ? who : "redis");
    rc->state_fn = state;
    rc->state_arg = arg;
    rc->discover_backoff = rc->refresh_backoff = CMP_REDIS_BACKOFF_MIN_MS;
    if (conf->kind == CMP_REDIS_SENTINEL && node_add(rc, "", 0, ROLE_MASTER) == NULL)
        goto fail;
    for (int i = 0; i < conf->n; i++) {
        cmp_redis_parse_addr(conf->addr[i], strlen(conf->addr[i]), host, sizeof host, &port);
        if (node_add(rc, host, port, conf->kind == CMP_REDIS_SENTINEL ? ROLE_SENTINEL
                                                                      : ROLE_DATA) == NULL)
            goto fail;
    }
    if (conf->kind == CMP_REDIS_CLUSTER) {
        if ((rc->slots = malloc(CMP_REDIS_SLOTS)) == NULL)
            goto fail;
        memset(rc->slots, NO_NODE, CMP_REDIS_SLOTS);
    }
    uv_timer_init(loop, &rc->tick);
    rc->tick.data = rc;
    rc->tick_open = 1;
    switch (conf->kind) {
    case CMP_REDIS_SINGLE:
        node_connect(rc->nodes[0]);
        break;
    case CMP_REDIS_SENTINEL:
        discover(rc);
        break;
    default:
        refresh(rc);
        break;
    }
    return rc;
fail:
    rc_free(rc);
    return NULL;
}

static void on_tick_closed(uv_handle_t *h)
{
    cmp_redis *rc = h->data;
    rc->tick_open = 0;
    maybe_free(rc);
}

void cmp_redis_close(cmp_redis *rc)
{
    if (rc == NULL || rc->closing)
        return;
    rc->closing = 1;
    rc->up = 0;
    for (int i = 0; i < rc->n_nodes; i++)
        node_drop(rc->nodes[i]);
    uv_close((uv_handle_t *)&rc->tick, on_tick_closed);
}
