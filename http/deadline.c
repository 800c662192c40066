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
