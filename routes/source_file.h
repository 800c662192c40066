// source_file.h — the routes file as a route source: watch it, re-read it when it changes,
// hand each new table (or the reason there is none) to a callback; and write a changed table
// back to it atomically.
//
// The watch is on the file's DIRECTORY (uv_fs_event), filtered by the file's name, so a
// file replaced by rename (editors, `mv`, rt_file_write_atomic, configuration management)
// is seen as well as one written in place. Events are debounced: the file is read once, the
// debounce time after the last event. Reading and parsing run on libuv's threadpool
// (uv_queue_work), never on the loop; only the callback runs on the loop. Meant for the
// main thread's loop (it serves no requests), but any loop works.
#ifndef RT_SOURCE_FILE_H
#define RT_SOURCE_FILE_H

#include <jansson.h>
#include <uv.h>

#include "routes/route_table.h"

#define RT_FILE_DEBOUNCE_MS 50

typedef struct rt_file_source rt_file_source;

// Runs on the loop's thread. T: a new valid table holding one reference, which the callee
// now owns (rt_current_publish it, or rt_table_unref it). Or T NULL and ERR saying why
// ("FILE: routes[2].upstream: unknown upstream \"x\"", "FILE: cannot read: ..."): the
// current table stays in force. Never called after rt_file_source_stop. The callback may
// call rt_file_source_stop or rt_file_source_reload.
typedef void (*rt_file_cb)(rt_table *t, const char *err, void *arg);

// Starts watching FILE on LOOP. UPSTREAMS are copied (as for rt_table_parse). DEBOUNCE_MS 0
// means RT_FILE_DEBOUNCE_MS. Does not load the file now: load it at start-up with
// rt_table_load_file, or call rt_file_source_reload. Returns 0 and *out, or a negative libuv
// error (UV_ENOENT: no such directory) with *out NULL — the handles it opened then close on
// the loop's next run.
int rt_file_source_start(uv_loop_t *loop, const char *file, const char *const *upstreams,
                         int n_upstreams, unsigned debounce_ms, rt_file_cb cb, void *arg,
                         rt_file_source **out);

// Re-reads the file now (SIGHUP, POST /admin/reload): the callback runs even when the file
// has not changed. A read in progress finishes first; then this one starts.
void rt_file_source_reload(rt_file_source *s);

// rt_file_write_atomic to the watched file, remembering what was written: the change event
// that the write itself causes does not call the callback again for the same content (the
// caller already has that table). Runs on the loop's thread and blocks it for the fsyncs.
// Returns 0, or -1 with err set.
int rt_file_source_write(rt_file_source *s, const json_t *doc, char *err, size_t errlen);

// rt_file_source_write on libuv's threadpool: DOC (the reference is taken; leave it alone
// until CB) is dumped and written there, and CB runs on the loop afterwards with STATUS 0, or
// -1 and ERR. Changes the watcher sees meanwhile are read only once the write has ended, and
// the written text counts as the source's own. CB runs even if the source is stopped
// meanwhile. Returns 0, or UV_ENOMEM / UV_ECANCELED (stopped) with CB never called.
typedef void (*rt_file_write_cb)(int status, const char *err, void *arg);
int rt_file_source_write_async(rt_file_source *s, json_t *doc, rt_file_write_cb cb, void *arg);

// Stops watching; no callback runs after this returns. Memory is freed once libuv has closed
// the handles and any read in progress has finished, so run the loop (uv_run) before closing
// it. Safe to call twice, and from the callback.
void rt_file_source_stop(rt_file_source *s);

// Writes DOC (2-space indented, keys in document order, final newline) to PATH atomically:
// a temporary file in the same directory, fsync, rename over PATH, fsync of the directory.
// Readers see the old file or the new one, never a part. Keeps PATH's permission bits (new
// file: 0644 less the umask). Returns 0, or -1 with err "PATH: cannot write: reason".
int rt_file_write_atomic(const char *path, const json_t *doc, char *err, size_t errlen);

// The history file next to a routes file (FILE.history.jsonl): one JSON object per line,
// appended. rt_file_history_tail reads the last LIMIT lines (1..) backwards from the end in
// chunks, so its cost is the tail's size, not the file's; a line may be of any length. It
// blocks on the file: call it off the loop. Returns a new array, newest first (lines that are
// not JSON objects, e.g. a torn last write, are skipped); an empty array when PATH does not
// exist; NULL with err set when it cannot be read.
json_t *rt_file_history_tail(const char *path, int limit, char *err, size_t errlen);

#endif
