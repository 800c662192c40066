/* cache_redis.c — the Redis store of the user cache: GET/SET/DEL through the shared client
 * (redis_client.c: one server, Sentinel or Cluster; connections, backoff, stalls), each
 * command with its deadline.
 *
 * A req is held by the client (flag HIREDIS: its reply function always runs, with NULL on
 * teardown) and by its owner (OWED) and freed by the side that lets go last: a timed-out
 * get has been answered, its late reply only releases the req.
 *
 * Cluster: a confirmed DEL of several keys (an eviction: one key per upstream) would be
 * refused with -CROSSSLOT, so it goes out as one DEL per key (parts), and the eviction is
 * confirmed when every part was. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "composers/cache_int.h"

static uint64_t cmp__wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- connection state (told by the client) ----------------------------------------- */
static void cmp__on_state(void *arg, int up, const char *why)
{
    cmp_cache *c = arg;

    if (up) {
        c->rstate = CMP__R_UP;
        if (!c->ever_up || c->logged_down)
            cmp__log(c, c->ever_up ? "connected again" : "connected");
        c->ever_up = 1;
        c->logged_down = 0;
        return;
    }
    c->rstate = CMP__R_WAIT;
    if (!c->logged_down) {
        cmp__log(c, "%s: %s; failing open, reconnecting in the background",
                 c->ever_up ? "connection lost" : "unreachable", why);
        c->logged_down = 1;
    }
}

int cmp__redis_start(cmp_cache *c, const cmp_redis_conf *conf)
{
    c->rstate = CMP__R_WAIT;
    c->rc = cmp_redis_new(c->loop, conf, c->timeout_ms, "cache", cmp__on_state, c);
    return c->rc != NULL ? 0 : -1;
}

void cmp__redis_close(cmp_cache *c)
{
    cmp_redis *rc = c->rc;

    c->rc = NULL;
    c->rstate = CMP__R_CLOSED;
    cmp_redis_close(rc); /* pending commands fire now with a NULL reply */
}

/* ---- commands ------------------------------------------------------------------------ */
static void cmp__on_cmd_timer(uv_timer_t *t);

/* Any answer of Redis to KIND (GET, SET, DEL). An error (an ACL user without +get/+set/+del
 * or without the keys: -NOPERM) is logged once per streak of that command with Redis's text:
 * the cache then fails open on a connection that looks healthy, and
 * gateway_cache_requests_total{result="error"} alone would not say why. */
static void cmp__answered(cmp_cache *c, int kind, const redisReply *rep)
{
    static const char *const name[] = { "GET", "SET", "DEL" };
    int bit = 1 << kind;
    if (rep->type != REDIS_REPLY_ERROR) {
        if (c->logged_refused & bit)
            cmp__log(c, "%s answered again", name[kind]);
        c->logged_refused &= ~bit;
        return;
    }
    if ((c->logged_refused & bit) || (c->flags & CMP__F_CLOSING))
        return;
    c->logged_refused |= bit;
    cmp__log(c, "%s refused: %.*s; failing open", name[kind],
             (int)(rep->len < 160 ? rep->len : 160), rep->str);
}

/* One part of a split DEL answered (REP NULL: not delivered). */
static void cmp__part_done(cmp__req *part, const redisReply *rep)
{
    cmp__req *r = part->parent;

    if ((r->flags & CMP__REQ_OWED) &&
        (rep == NULL || rep->type == REDIS_REPLY_ERROR || --r->parts_left == 0))
        cmp__finish(r, rep != NULL && rep->type != REDIS_REPLY_ERROR ? CMP_CACHE_HIT
                                                                    : CMP_CACHE_ERROR,
                    NULL, 0, 0);
    if (--r->parts_held == 0)
        cmp__req_release(r, CMP__REQ_HIREDIS);
    cmp__req_release(part, CMP__REQ_HIREDIS);
}

/* One reply (or NULL: teardown) for a GET/SET/DEL. */
static void cmp__on_reply(void *privdata, redisReply *rep)
{
    cmp__req *r = privdata;
    cmp_cache_status st = CMP_CACHE_ERROR;
    const char *v = NULL;
    size_t len = 0;
    uint64_t age = 0;

    if (rep != NULL)
        cmp__answered(r->c, r->kind, rep);
    if (r->parent != NULL) {
        cmp__part_done(r, rep);
        return;
    }
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

static void cmp__watch(cmp_cache *c, cmp__req *r)
{
    r->flags |= CMP__REQ_OWED;
    r->deadline = uv_now(c->loop) + c->timeout_ms;
    gw_queue_insert_tail(&c->inflight, &r->node);
    if (!uv_is_active((uv_handle_t *)&c->cmd_timer))
        uv_timer_start(&c->cmd_timer, cmp__on_cmd_timer, c->timeout_ms, 0);
}

/* Hands one command for KEY to the client (which formats it: ARGV is free after) and puts R
 * on c->inflight with its deadline. */
static int cmp__redis_queue(cmp_cache *c, cmp__req *r, const char *key, size_t klen, int argc,
                            const char **argv, const size_t *lens)
{
    if (cmp_redis_send(c->rc, &r->cmd, key, klen, argc, argv, lens, cmp__on_reply, r) != 0)
        return -1;
    r->flags |= CMP__REQ_HIREDIS;
    cmp__watch(c, r);
    return 0;
}

/* PREFIX + KEY into BUF (or a malloc'd one when longer): the caller frees *OUT if != BUF. */
static size_t cmp__full_key(const cmp_cache *c, const char *key, char *buf, size_t bufsz,
                            char **out)
{
    size_t klen = c->prefix_len + strlen(key);
    char *k = buf;
    *out = NULL;
    if (klen > bufsz && (k = malloc(klen)) == NULL)
        return 0;
    if (c->prefix_len > 0)
        memcpy(k, c->prefix, c->prefix_len);
    memcpy(k + c->prefix_len, key, klen - c->prefix_len);
    *out = k;
    return klen;
}

int cmp__redis_send(cmp_cache *c, cmp__req *r, const char *key, const char *val, size_t vlen,
                    uint64_t keep_ms)
{
    char kbuf[256], px[24], *k;
    const char *argv[5];
    size_t lens[5], klen;
    int argc, rc;

    if (c->rc == NULL) /* the client refuses a key whose node is not up */
        return -1;
    if ((klen = cmp__full_key(c, key, kbuf, sizeof kbuf, &k)) == 0)
        return -1;
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
    rc = cmp__redis_queue(c, r, k, klen, argc, argv, lens);
out:
    if (k != kbuf)
        free(k);
    return rc;
}

/* Cluster: one DEL per key, R confirmed when all were. 0 when at least one part went out
 * (R is then answered from a reply or at its deadline, never from inside this call). */
static int cmp__redis_send_parts(cmp_cache *c, cmp__req *r, const char *const *keys, int n)
{
    int sent = 0, failed = 0;

    r->parts_left = (uint16_t)n;
    for (int i = 0; i < n; i++) {
        char kbuf[256], *k;
        size_t klen = cmp__full_key(c, keys[i], kbuf, sizeof kbuf, &k);
        cmp__req *p = klen ? cmp__req_new(c, CMP__REQ_DEL) : NULL;
        const char *argv[2] = { "DEL", k };
        size_t lens[2] = { 3, klen };
        if (p != NULL && cmp_redis_send(c->rc, &p->cmd, k, klen, 2, argv, lens, cmp__on_reply,
                                        p) == 0) {
            p->parent = r;
            p->flags |= CMP__REQ_HIREDIS;
            r->parts_held++;
            sent++;
        } else {
            if (p != NULL)
                cmp__req_release(p, 0);
            failed = 1;
        }
        if (k != NULL && k != kbuf)
            free(k);
    }
    if (sent == 0)
        return -1;
    r->flags |= CMP__REQ_HIREDIS; /* held by its parts */
    (void)failed; /* a part that could not go out never counts down: ERROR at the deadline */
    cmp__watch(c, r);
    return 0;
}

int cmp__redis_send_del(cmp_cache *c, cmp__req *r, const char *const *keys, int n)
{
    const char **argv;
    size_t *lens, total = 0;
    char *buf, *at;
    int rc;

    if (c->rc == NULL || n <= 0 || n > 65535)
        return -1;
    if (c->cluster && n > 1)
        return cmp__redis_send_parts(c, r, keys, n);
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
        rc = cmp__redis_queue(c, r, argv[1], lens[1], n + 1, argv, lens);
    }
    free(buf);
    free(lens);
    free(argv);
    return rc;
}

/* The oldest command's deadline passed: answer every expired one ERROR (a connection that
 * answers nothing at all is dropped by the client). */
static void cmp__on_cmd_timer(uv_timer_t *t)
{
    cmp_cache *c = t->data;
    uint64_t now = uv_now(c->loop);

    while (!gw_queue_empty(&c->inflight)) {
        cmp__req *r = GW_QUEUE_DATA(c->inflight.next, cmp__req, node);
        if (r->deadline > now)
            break;
        cmp__finish(r, CMP_CACHE_ERROR, NULL, 0, 0); /* the late reply only releases it */
        if (c->flags & CMP__F_CLOSING)
            return;
    }
    if (!gw_queue_empty(&c->inflight)) {
        cmp__req *r = GW_QUEUE_DATA(c->inflight.next, cmp__req, node);
        uv_timer_start(&c->cmd_timer, cmp__on_cmd_timer, r->deadline > now ? r->deadline - now : 0,
                       0);
    }
}
