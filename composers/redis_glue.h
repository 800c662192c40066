/* redis_glue.h — what every hiredis async connection of the gateway needs (redis_glue.c;
 * applied by redis_client.c to each connection it makes):
 *  - cmp_redis_fix_adapter: after redisLibuvAttach, routes the shipped 0.14 adapter's poll
 *    events through a callback that forwards poll errors (refused/reset connections are
 *    seen at once, not at a timeout);
 *  - cmp_redis_guard_reader: a top-level reply arriving while no command waits (which makes
 *    hiredis 0.14 abort the process) fails the reader instead: the connection is closed and
 *    its owner reconnects. */
#ifndef CMP_REDIS_GLUE_H
#define CMP_REDIS_GLUE_H

#include <stddef.h>

#include <hiredis/async.h>

void cmp_redis_fix_adapter(redisAsyncContext *ac);
void cmp_redis_guard_reader(redisAsyncContext *ac);

#endif
