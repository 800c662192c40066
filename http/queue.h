/* queue.h — intrusive circular doubly linked list, after libuv's src/queue.h: embed a
 * gw_queue in a struct, get back to the struct with GW_QUEUE_DATA (container-of). */
#ifndef GW_QUEUE_H
#define GW_QUEUE_H

#include <stddef.h>

typedef struct gw_queue {
    struct gw_queue *next, *prev;
} gw_queue;

#define GW_QUEUE_DATA(ptr, type, field) ((type *)((char *)(ptr) - offsetof(type, field)))

static inline void gw_queue_init(gw_queue *q) { q->next = q->prev = q; }
static inline int gw_queue_empty(const gw_queue *q) { return q->next == q; }
static inline void gw_queue_insert_tail(gw_queue *h, gw_queue *q)
{
    q->next = h;
    q->prev = h->prev;
    h->prev->next = q;
    h->prev = q;
}
static inline void gw_queue_insert_head(gw_queue *h, gw_queue *q)
{
    q->next = h->next;
    q->prev = h;
    h->next->prev = q;
    h->next = q;
}
static inline void gw_queue_remove(gw_queue *q)
{
    q->prev->next = q->next;
    q->next->prev = q->prev;
    q->next = q->prev = q;
}
#define GW_QUEUE_FOREACH_SAFE(q, n, h) for ((q) = (h)->next, (n) = (q)->next; (q) != (h); (q) = (n), (n) = (q)->next)

#endif
