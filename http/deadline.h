/* deadline.h — the lazy timer both connection sides use (client.c, upstream_conn.c), as nginx
 * does: a connection keeps its deadline; the libuv timer is only moved when the deadline
 * comes EARLIER than the wake-up already set, and a wake-up that finds the deadline moved
 * later just sleeps again. Most requests then touch no timer at all. */
#ifndef GW_DEADLINE_H
#define GW_DEADLINE_H

#include <stdint.h>
#include <uv.h>

#include "http/queue.h"

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

/* Wakes CB at once (other work for the same timer); the deadline is kept, and
 * gw_deadline_expired in CB sets the timer for it again. */
static inline void gw_deadline_wake(gw_deadline *d, uv_timer_t *t, uv_timer_cb cb)
{
    d->armed_at = uv_now(t->loop); /* no later deadline moves the timer off this wake-up */
    uv_timer_start(t, cb, 0, 0);
}

/* Call first in the timer callback CB: 1 when the deadline has passed (it is cleared then),
 * 0 when there is none or it moved later (the timer is set again for it). */
int gw_deadline_expired(gw_deadline *d, uv_timer_t *t, uv_timer_cb cb);

/* Timeout lists: many connections, one libuv timer (client.c: per server). A connection
 * keeps a gw_timeout, not a uv_timer_t (152 bytes less per idle connection). Deadlines set
 * with the same timeout value come in the order they expire, since uv_now() only grows, so
 * each kind of timeout (header, idle, body, ...) gets a FIFO list and set/clear are O(1):
 * the new deadline goes to its list's tail. The one timer is armed for the earliest head;
 * it is moved only when a new deadline comes earlier, and a wake-up that finds nothing due
 * (the head was cleared or moved) just sleeps until the next head. */
#define GW_TIMEOUT_KINDS 6

typedef struct gw_timeout {
    gw_queue node; /* in its kind's list while set; linked to itself when not */
    uint64_t at;   /* uv_now() ms when it expires; 0: none */
} gw_timeout;

typedef struct gw_timeouts gw_timeouts;
struct gw_timeouts {
    uv_timer_t timer;
    gw_queue lists[GW_TIMEOUT_KINDS]; /* each sorted by at */
    uint64_t armed_at;                /* when the timer wakes up; 0: not armed */
    void (*on_expire)(gw_timeout *t); /* t is already cleared; it may be set again */
};

void gw_timeouts_init(gw_timeouts *ts, uv_loop_t *loop, void (*on_expire)(gw_timeout *t));
/* Stops the timer and closes it (CB as for uv_close, may be NULL). Every gw_timeout must
 * have been cleared first. */
void gw_timeouts_close(gw_timeouts *ts, uv_close_cb cb);

static inline void gw_timeout_init(gw_timeout *t)
{
    gw_queue_init(&t->node);
    t->at = 0;
}

static inline void gw_timeout_clear(gw_timeout *t)
{
    gw_queue_remove(&t->node);
    t->at = 0;
}

static inline int gw_timeout_active(const gw_timeout *t)
{
    return t->at != 0;
}

/* Expires MS from now, in list KIND (< GW_TIMEOUT_KINDS); MS 0 clears it. */
void gw_timeout_set(gw_timeouts *ts, gw_timeout *t, unsigned kind, uint64_t ms);

#endif
