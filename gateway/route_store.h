/* route_store.h — the active route source as one interface for main and the admin API:
 * the routes file (watched, written back atomically, history in FILE.history.jsonl) or
 * PostgreSQL (LISTEN/NOTIFY, written in one transaction with its audit rows). Runs on the
 * main thread's loop, never on a worker's. Every new table it gets is published with
 * rt_current_publish; a table that fails validation is rejected whole, logged and counted,
 * and the running one stays. */
#ifndef GW_ROUTE_STORE_H
#define GW_ROUTE_STORE_H

#include <jansson.h>
#include <uv.h>

#include "routes/route_table.h"
#include "gateway/config.h"

typedef struct gw_route_store gw_route_store;

/* STATUS 0 with RESULT (borrowed, may be NULL), or an HTTP-ish status (422 invalid, 503
 * store unavailable, 500) with ERR. */
typedef void (*gw_store_done)(int status, const char *err, json_t *result, void *arg);

/* Loads the first table (publishes it) and starts watching. Returns 0, or -1 with err in
 * the "FILE: json.path: reason" form. */
int gw_route_store_open(gw_route_store **out, uv_loop_t *loop, const gw_config *cfg, char *err,
                        size_t errlen);
/* Loads the check-only table without starting anything (gateway --check). */
rt_table *gw_route_store_check(const gw_config *cfg, char *err, size_t errlen);
const char *gw_route_store_kind(const gw_route_store *s);
/* The PostgreSQL source (for other users of its connection: cutover plans), or NULL. */
struct rt_pg_source *gw_route_store_pg(gw_route_store *s);
/* Whether the source can store upstream definitions (the file always; PostgreSQL once
 * its schema has them). */
int gw_route_store_has_upstreams(gw_route_store *s);
/* Re-read the source now; done gets {"version":N,"routes":K} or the rejection. */
void gw_route_store_reload(gw_route_store *s, gw_store_done done, void *arg);
/* Makes NEXT (a validated table; the reference is taken) the stored table, with AUDIT (a JSON
 * array of {"who","action","route_id","old","new"}; the reference is taken), then publishes
 * it. DOC is NEXT as rt_table_to_json gives it (the reference is taken), built by the caller
 * off the loop; NULL: built here. The file is written on the threadpool; done (on the loop)
 * gets {"version":N} once the table is in force. */
void gw_route_store_apply(gw_route_store *s, rt_table *next, json_t *doc, json_t *audit,
                          gw_store_done done, void *arg);
#define GW_HISTORY_DEFAULT 100  /* changes GET /admin/routes/history gives without ?limit= */
#define GW_HISTORY_MAX 10000
/* The newest LIMIT (1..GW_HISTORY_MAX; < 1: the default) changes, newest first:
 * {"changes":[...]}. The file's tail is read on the threadpool; PostgreSQL's with LIMIT. */
void gw_route_store_history(gw_route_store *s, int limit, gw_store_done done, void *arg);
void gw_route_store_close(gw_route_store *s);

#endif
