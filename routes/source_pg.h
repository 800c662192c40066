// source_pg.h — PostgreSQL as a route source: load the route table from the route store
// (conf/sql/000001_route_store.up.sql), LISTEN for changes and reload, write admin changes
// back with an audit trail, and keep a cache file for starting while PostgreSQL is down.
//
// Everything runs on one libuv loop (the main thread's: it serves no requests) and never
// blocks it: libpq in non-blocking mode (PQconnectStart/PQconnectPoll, PQsendQuery*,
// PQconsumeInput/PQgetResult/PQnotifies) driven by a uv_poll_t on PQsocket. Parsing the
// loaded table and writing the cache file run on libuv's threadpool. One exception: libpq
// resolves a host NAME with a blocking getaddrinfo when it connects — give an IP address
// (host=10.0.0.5 or hostaddr=) or a socket directory (host=/run/postgresql) to avoid it.
//
// Loads: each one reads, in one statement (one snapshot), the version, the legacy_upstream
// setting and every route ordered by (position, id), builds the routes document
//   {"version": V, "legacy_upstream": "...", "routes": [...]}
// and parses it with source name "postgres". A load runs after connecting (and after every
// reconnect), on each NOTIFY gateway_routes whose version is newer than the last one loaded
// (notifications arriving during a load coalesce into at most one more load), and on
// rt_pg_source_reload.
//
// Connection loss: the table in force stays; no callback. Reconnects with exponential
// backoff, 100 ms doubling to 5 s; a connection attempt is abandoned after 5 s. Transitions
// are logged to stderr once ("postgres: connected", "postgres: connection lost: ...;
// reconnecting", "postgres: cannot connect: ...; retrying"), never per retry.
// Each session sets statement_timeout to 10 s, so a write stuck behind a lock fails.
#ifndef RT_SOURCE_PG_H
#define RT_SOURCE_PG_H

#include <jansson.h>
#include <uv.h>

#include "routes/route_table.h"
#include "routes/source_file.h" // rt_file_cb

#define RT_PG_CHANNEL "gateway_routes"
#define RT_PG_BACKOFF_MIN_MS 100
#define RT_PG_BACKOFF_MAX_MS 5000
#define RT_PG_CONNECT_TIMEOUT_MS 5000

typedef struct rt_pg_source rt_pg_source;

// STATUS 0: committed. Else a negative libuv code and ERR:
//   UV_EIO        "postgres: <server's message>"  -- rolled back, nothing changed
//   UV_ENOTCONN   "postgres: not connected"       -- never sent
//   UV_ECONNRESET "postgres: connection lost"     -- sent; committed or not, unknown
//   UV_ECANCELED  "postgres: source stopped"      -- as UV_ECONNRESET
typedef void (*rt_pg_write_cb)(int status, const char *err, void *arg);
// CHANGES: a JSON array borrowed for the duration of the call (json_incref to keep it), or
// NULL with ERR (same texts as above).
typedef void (*rt_pg_history_cb)(json_t *changes, const char *err, void *arg);

// Starts connecting to CONNINFO (a libpq connection string) on LOOP. UPSTREAMS are copied.
// CB (rt_file_cb, source_file.h) runs on the loop after every load: a new table holding one
// reference that the callee owns, its version set to the store's version; or NULL and
// "postgres: routes[3].upstream: unknown upstream \"x\"" (an invalid stored table; also
// "postgres: <server's message>" when the load query fails): the table in force stays.
// CACHE_FILE (may be NULL): after each table delivered, its document is written there
// (rt_file_write_atomic, on the threadpool), for rt_pg_source_load_cache. Returns 0 and
// *out, or UV_EINVAL / UV_ENOMEM with *out NULL. The callback never runs from inside start.
int rt_pg_source_start(uv_loop_t *loop, const char *conninfo, const char *const *upstreams,
                       int n_upstreams, const char *cache_file, rt_file_cb cb, void *arg,
                       rt_pg_source **out);

// The table last written to CACHE_FILE, for starting while PostgreSQL is down (its version
// is the store's version it was loaded at). Blocking file read: for start-up. NULL with err
// "CACHE_FILE: cannot read: ..." or a parse error naming CACHE_FILE.
rt_table *rt_pg_source_load_cache(const char *cache_file, const char *const *upstreams,
                                  int n_upstreams, char *err, size_t errlen);

// 1 once a load found gateway_upstreams (migration 000003): loads then read the routes
// source's upstream definitions from it and writes keep it equal to the document's
// "upstreams". Without it a write whose document has upstreams fails with UV_ENOSYS.
int rt_pg_source_has_upstreams(const rt_pg_source *s);
// 1 when connected and listening for changes, else 0 (for /readyz and metrics).
int rt_pg_source_connected(const rt_pg_source *s);

// Loads now (SIGHUP, POST /admin/reload): the callback runs even when nothing changed. A
// load in progress finishes first, then this one runs. While disconnected: nothing to do,
// the reconnect loads.
void rt_pg_source_reload(rt_pg_source *s);

// In ONE transaction: makes gateway_routes equal NEW_DOC's "routes" (rows upserted where
// the route or its position changed, rows of ids no longer present deleted, unchanged rows
// untouched), upserts setting legacy_upstream when NEW_DOC has one, and inserts the AUDIT
// rows (a JSON array, may be NULL or empty, of {"who", "action", "route_id", "old", "new"};
// who and action required strings) with the version the change produced. The caller
// validated NEW_DOC (rt_table_to_json of an edited table). The source's own NOTIFY then
// brings the new table to the callback, as for any other writer.
// Operations (writes, history, loads) run one after the other on the connection. Returns 0
// and DONE fires exactly once, later, never from inside this call; or returns UV_EINVAL
// (NEW_DOC without a "routes" array of objects with distinct string "id"s, malformed
// AUDIT),
// UV_ENOMEM or UV_ECANCELED (stopped), and DONE never fires. Submitted while disconnected:
// fails with UV_ENOTCONN (while a connection attempt is in progress: waits for it).
int rt_pg_source_write(rt_pg_source *s, const json_t *new_doc, const json_t *audit,
                       rt_pg_write_cb done, void *arg);

// The version the last committed write produced (what its audit rows carry): read it in
// the write's DONE with status 0, e.g. to publish the edited table at once with that version
// instead of waiting for the NOTIFY round trip. 0 before any write.
uint64_t rt_pg_source_written_version(const rt_pg_source *s);

// The last LIMIT (>= 1) audit rows, newest first, each {"seq", "at" (ISO 8601 UTC, ms:
// "2024-05-01T12:00:00.123Z"), "who", "action", "route_id", "old", "new", "version"}.
// Returns and calls back as rt_pg_source_write.
int rt_pg_source_history(rt_pg_source *s, int limit, rt_pg_history_cb done, void *arg);

// One statement SQL with up to RT_PG_QUERY_PARAMS text parameters ($1, ...), for other
// users of the store (cutover plans: their table and the advisory lock that elects the
// instance driving them), run in order with the other operations on this connection.
// DONE gets STATUS 0 with VALUE the first column of the first row (NULL: no row or SQL
// NULL; borrowed for the call), or STATUS/ERR as a write's; SESSION is rt_pg_source_session
// when it ran (session-level state, such as an advisory lock, lives as long as that
// session). Returns and calls back as rt_pg_source_write.
#define RT_PG_QUERY_PARAMS 4
typedef void (*rt_pg_query_cb)(int status, const char *err, const char *value,
                               uint64_t session, void *arg);
int rt_pg_source_query(rt_pg_source *s, const char *sql, int nparams,
                       const char *const *params, rt_pg_query_cb done, void *arg);
// The current session: 0 before the first connection, then one more per (re)connection.
uint64_t rt_pg_source_session(const rt_pg_source *s);

// Closes the connection and the handles. Pending writes and history requests fire at once
// with UV_ECANCELED; no table callback after this returns. Memory is freed once libuv has
// closed the handles and threadpool work has finished: run the loop before closing it. Safe
// to call twice, and from any callback.
void rt_pg_source_stop(rt_pg_source *s);

#endif
