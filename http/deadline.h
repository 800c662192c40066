/* deadline.h — the lazy timer both connection sides use (client.c, upstream_conn.c), as nginx
 * does: a connection keeps its deadline; the libuv timer is only moved when the deadline
 * comes EARLIER than the wake-up already set, and a wake-up that finds the deadline moved
 * later just sleeps again. Most requests then touch no timer at all. */
#ifndef GW_DEADLINE_H
#define GW_DEADLINE_H

#include <stdint.h>
#include <uv.h>

typedef struct gw_deadline {
    uint64_t at;       /* uv_now() ms when it expires; 0: none */
    uint64_t armed_at; /* when the libuv timer wakes up; 0: not armed */
} gw_deadline;

/* Expires MS from now (MS 0: no deadline). CB is the timer's callback. */
void gw_deadline_set(gw_deadline *d, uv_timer_t *t, uv_timer_cb cb, uint64_t ms);

static inline void gw_deadline_clear(gw_deadline *d)
{
    d->at = 0;
}

static inline int gw_deadline_active(const gw_deadline *d)
{
    return d->at != 0;
}

/* Call first in the timer callback CB: 1 when the deadline has passed (it is cleared then),
 * 0 when there is none or it moved later (the timer is set again for it). */
int gw_deadline_expired(gw_deadline *d, uv_timer_t *t, uv_timer_cb cb);

#endif
