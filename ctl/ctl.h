/* ctl.h — gatewayctl's pieces: errors and buffers (ctl_util.c), the admin API client
 * (ctl_http.c), the routes and rollback commands (ctl_routes.c), cutover plans
 * (ctl_cutover.c), the database migrations (ctl_db.c); main and usage in gatewayctl.c. A CLI: blocking I/O is fine here. */
#ifndef GW_CTL_H
#define GW_CTL_H

#include <jansson.h>
#include <stddef.h>

enum { CTL_OK = 0, CTL_FAIL = 1, CTL_USAGE = 2 };

#define CTL_TIMEOUT_S   5
#define CTL_MAX_WEIGHT  100000
#define CTL_MAX_COLS    8
/* pg_advisory_lock key held while migrating: "gwschema" as a big-endian int64. */
#define CTL_LOCK_KEY    "7455554578925579617"

typedef struct ctl_buf {
    char *p;    /* NUL-terminated when non-NULL */
    size_t n;
    size_t cap;
} ctl_buf;

typedef struct ctl_admin {
    char host[256];      /* without IPv6 brackets */
    char port[8];
    char prefix[512];    /* path prefix from the URL, no trailing '/' ("" for none) */
    char base[800];      /* the URL as given, for messages */
    const char *token;   /* "" or NULL: no Authorization header */
} ctl_admin;

typedef struct ctl_resp {
    int status;
    char reason[64];
    ctl_buf body;
    int complete;        /* on_message_complete ran */
    int oom;
} ctl_resp;

int ctl_fail(const char *what, const char *fmt, ...);
int ctl_usage(const char *what, const char *synopsis, const char *fmt, ...);
int ctl_buf_add(ctl_buf *b, const char *s, size_t n);
int ctl_buf_printf(ctl_buf *b, const char *fmt, ...);
void ctl_buf_free(ctl_buf *b);
const char *ctl_buf_str(const ctl_buf *b);
int ctl_admin_parse_url(ctl_admin *a, const char *url, char *err, size_t errlen);
int ctl_admin_json(const ctl_admin *a, const char *what, const char *method, const char *path,
                      const json_t *body, json_t **out);
int ctl_http_call(const ctl_admin *a, const char *method, const char *path, const char *body,
                     ctl_resp *out, char *err, size_t errlen);
int ctl_path_segment(ctl_buf *b, const char *s);
int ctl_cmd_routes(const ctl_admin *a, int argc, char **argv);
int ctl_cmd_rollback(const ctl_admin *a, const char *id);
int ctl_cmd_certs(const ctl_admin *a, int argc, char **argv); /* ctl_certs.c */
int ctl_cmd_db(int argc, char **argv);
int ctl_cmd_cutover(const ctl_admin *a, int argc, char **argv);
int ctl_cmd_upstreams(const ctl_admin *a, int argc, char **argv); /* ctl_upstreams.c */
typedef struct ctl_table {
    int cols;
    size_t rows, cap;
    char **cells;              /* rows * cols, malloc'd strings */
    size_t width[CTL_MAX_COLS];
} ctl_table;

int ctl_table_row(ctl_table *t, char **cells);
void ctl_table_print(const ctl_table *t);
void ctl_table_free(ctl_table *t);

#endif
