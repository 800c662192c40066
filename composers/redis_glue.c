/* redis_glue.c — see redis_glue.h: the two fixes every hiredis 0.14 async connection of the
 * gateway gets (composers/redis_client.c makes them all).
 *
 *  - 0.14's libuv adapter drops poll errors (status < 0), so a refused or reset connection
 *    would go unseen until a timeout (fixed upstream by hiredis PR #624). We keep the
 *    shipped adapter's attach, data and cleanup and only route its events through
 *    cmp__uv_poll, which forwards errors the way upstream now does. The connect timeout
 *    and the stall detection stay as the backstop (blackholed hosts, hung servers).
 *  - a reply nothing asked for makes 0.14 abort the process: see cmp_redis_guard_reader. */
#include <pthread.h>

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "composers/redis_glue.h"

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
 * from a broken or hostile server asks for 7 GB (found by tests/fuzz/fuzz_redis_reply). The
 * largest arrays asked for are CLUSTER SLOTS (one element per slot range: a cluster split into
 * more than 1024 ranges is not supported); anything over this is a protocol error. */
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
