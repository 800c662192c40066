/* deadline.c — see deadline.h. */
#include "http/deadline.h"

void gw_deadline_set(gw_deadline *d, uv_timer_t *t, uv_timer_cb cb, uint64_t ms)
{
    if (!ms) {
        d->at = 0;
        return;
    }
    d->at = uv_now(t->loop) + ms;
    if (d->armed_at && d->armed_at <= d->at)
        return; /* the timer wakes up first and finds the later deadline */
    d->armed_at = d->at;
    uv_timer_start(t, cb, ms, 0);
}

int gw_deadline_expired(gw_deadline *d, uv_timer_t *t, uv_timer_cb cb)
{
    d->armed_at = 0;
    if (!d->at)
        return 0;
    uint64_t now = uv_now(t->loop);
    if (now < d->at) {
        d->armed_at = d->at;
        uv_timer_start(t, cb, d->at - now, 0);
        return 0;
    }
    d->at = 0;
    return 1;
}

/* ---- timeout lists ------------------------------------------------------------------- */

static void timeouts_on_timer(uv_timer_t *h);

static void timeouts_arm(gw_timeouts *ts, uint64_t at)
{
    ts->armed_at = at;
    uint64_t now = uv_now(ts->timer.loop);
    uv_timer_start(&ts->timer, timeouts_on_timer, at > now ? at - now : 0, 0);
}

void gw_timeouts_init(gw_timeouts *ts, uv_loop_t *loop, void (*on_expire)(gw_timeout *t))
{
    uv_timer_init(loop, &ts->timer);
    ts->timer.data = ts;
    for (int i = 0; i < GW_TIMEOUT_KINDS; i++)
        gw_queue_init(&ts->lists[i]);
    ts->armed_at = 0;
    ts->on_expire = on_expire;
}

void gw_timeouts_close(gw_timeouts *ts, uv_close_cb cb)
{
    uv_timer_stop(&ts->timer);
    ts->armed_at = 0;
    if (!uv_is_closing((uv_handle_t *)&ts->timer))
        uv_close((uv_handle_t *)&ts->timer, cb);
}

void gw_timeout_set(gw_timeouts *ts, gw_timeout *t, unsigned kind, uint64_t ms)
{
    gw_queue_remove(&t->node);
    if (!ms) {
        t->at = 0;
        return;
    }
    t->at = uv_now(ts->timer.loop) + ms;
    /* the tail, unless a deadline of another value was put in this list (a caller that
     * mixes values): walk back to keep the list sorted */
    gw_queue *h = &ts->lists[kind], *q = h->prev;
    while (q != h && GW_QUEUE_DATA(q, gw_timeout, node)->at > t->at)
        q = q->prev;
    gw_queue_insert_head(q, &t->node); /* after q */
    if (!ts->armed_at || t->at < ts->armed_at)
        timeouts_arm(ts, t->at);
}

static void timeouts_on_timer(uv_timer_t *h)
{
    gw_timeouts *ts = h->data;
    ts->armed_at = 0;
    uint64_t now = uv_now(h->loop);
    for (int k = 0; k < GW_TIMEOUT_KINDS; k++) {
        gw_queue *l = &ts->lists[k];
        /* on_expire may set timeouts again: those are due later than now, at the tail */
        while (!gw_queue_empty(l)) {
            gw_timeout *t = GW_QUEUE_DATA(l->next, gw_timeout, node);
            if (t->at > now)
                break;
            gw_timeout_clear(t);
            ts->on_expire(t);
        }
    }
    uint64_t next = 0;
    for (int k = 0; k < GW_TIMEOUT_KINDS; k++) {
        gw_queue *l = &ts->lists[k];
        if (gw_queue_empty(l))
            continue;
        uint64_t at = GW_QUEUE_DATA(l->next, gw_timeout, node)->at;
        if (!next || at < next)
            next = at;
    }
    /* on_expire may have armed the timer already, for something earlier */
    if (next && (!ts->armed_at || next < ts->armed_at))
        timeouts_arm(ts, next);
}
