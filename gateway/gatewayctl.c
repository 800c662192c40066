/* gatewayctl.c — the operator CLI (GATEWAY.md, "Operator contract").
 *
 *   routes ... / rollback ...  the admin API, over plain blocking HTTP/1.1 (one connection per
 *                              call, Connection: close, 5 s send/receive/connect timeouts),
 *                              responses parsed with llhttp, bodies with jansson.
 *   db migrate / db status     PostgreSQL directly, through libpq (blocking is fine here).
 *
 * A CLI, not the gateway: it blocks, it exits, and it frees what a long-running process would
 * have to (so valgrind stays quiet) but does not try harder than that.
 *
 * Output: results on stdout; every error on stderr as "gatewayctl: <what>: <reason>".
 * Exit codes: 0 ok, 1 the server or the database refused or failed, 2 usage error. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <libpq-fe.h>
#include <llhttp.h>

enum { CTL_OK = 0, CTL_FAIL = 1, CTL_USAGE = 2 };

#define CTL_TIMEOUT_S   5
#define CTL_MAX_WEIGHT  100000
/* pg_advisory_lock key held while migrating: "gwschema" as a big-endian int64. */
#define CTL_LOCK_KEY    "7455554578925579617"

static const char usage_text[] =
    "usage: gatewayctl [--admin URL] [--token T] COMMAND\n"
    "\n"
    "Admin API commands (Authorization: Bearer T):\n"
    "  routes list                      the route table: id, methods, path, upstream or split,\n"
    "                                   shadow, and the table version\n"
    "  routes show ID                   one route as JSON\n"
    "  routes flip ID UPSTREAM          UPSTREAM answers route ID (drops split and sticky)\n"
    "  routes split ID UP=W,UP=W        weighted split, W an integer 0..100000\n"
    "  routes shadow ID UPSTREAM        copy route ID's requests to UPSTREAM, compare answers\n"
    "  routes unshadow ID               stop shadowing route ID\n"
    "  routes history                   the audit trail of route changes\n"
    "  routes reload                    re-read the route source now\n"
    "  rollback ID                      route ID back to the legacy monolith\n"
    "  rollback --all                   every route back to the legacy monolith, one change\n"
    "\n"
    "Database commands (PostgreSQL, libpq):\n"
    "  db migrate [--to VERSION]        apply pending migrations (up to VERSION), each in its\n"
    "                                   own transaction\n"
    "  db migrate --down [--to VERSION] roll back the latest applied migration (or every\n"
    "                                   one above VERSION) with its .down.sql\n"
    "  db status                        every known migration, applied or pending\n"
    "  db options: --pg CONNINFO (default $GATEWAY_PG)\n"
    "              --dir DIR     (default $GATEWAY_SQL_DIR, else conf/sql)\n"
    "  Migration files: DIR/NNNNNN_name.up.sql and DIR/NNNNNN_name.down.sql; applied ones are\n"
    "  recorded in gateway_schema_migrations. Files must not contain BEGIN/COMMIT.\n"
    "\n"
    "Options:\n"
    "  --admin URL   admin API base URL (default $GATEWAY_ADMIN_URL, else\n"
    "                http://$GATEWAY_ADMIN_LISTEN, else http://127.0.0.1:9090)\n"
    "  --token T     admin token (default $GATEWAY_ADMIN_TOKEN)\n"
    "  -h, --help    this text\n"
    "\n"
    "Exit codes: 0 ok, 1 the server or database refused or failed, 2 usage error.\n";

/* ---- errors -------------------------------------------------------------------------------- */

/* "gatewayctl: WHAT: REASON" on stderr. Returns CTL_FAIL so callers can `return ctl_fail(..)`. */
static int ctl_fail(const char *what, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "gatewayctl: %s: ", what);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CTL_FAIL;
}

/* A usage error: the message, then the command's synopsis (when given). Returns CTL_USAGE. */
static int ctl_usage(const char *what, const char *synopsis, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "gatewayctl: %s: ", what);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    if (synopsis)
        fprintf(stderr, "usage: gatewayctl %s\n", synopsis);
    fprintf(stderr, "Try 'gatewayctl --help'.\n");
    return CTL_USAGE;
}

/* ---- a growable byte buffer ------------------------------------------------------------------ */

typedef struct ctl_buf {
    char *p;    /* NUL-terminated when non-NULL */
    size_t n;
    size_t cap;
} ctl_buf;

static int buf_add(ctl_buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

static int buf_printf(ctl_buf *b, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    if ((size_t)n < sizeof small)
        return buf_add(b, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big)
        return -1;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = buf_add(b, big, (size_t)n);
    free(big);
    return rc;
}

static const char *buf_str(const ctl_buf *b) { return b->p ? b->p : ""; }

static void buf_free(ctl_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

/* ---- the admin API: plain blocking HTTP/1.1 -------------------------------------------------- */

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

/* Accepts "http://HOST[:PORT][/PREFIX]", "HOST:PORT" and "[V6]:PORT". 0 or -1 with err set. */
static int admin_parse_url(ctl_admin *a, const char *url, char *err, size_t errlen)
{
    snprintf(a->base, sizeof a->base, "%s", url);
    const char *p = url;
    if (strncasecmp(p, "http://", 7) == 0)
        p += 7;
    else if (strstr(p, "://")) {
        snprintf(err, errlen, "only http:// is supported");
        return -1;
    }
    const char *slash = strchr(p, '/');
    size_t hostport_len = slash ? (size_t)(slash - p) : strlen(p);
    const char *host = p, *host_end, *port = NULL;
    if (*p == '[') {
        host = p + 1;
        host_end = memchr(host, ']', hostport_len);
        if (!host_end) {
            snprintf(err, errlen, "unterminated '[' in the host");
            return -1;
        }
        if (host_end + 1 < p + hostport_len) {
            if (host_end[1] != ':') {
                snprintf(err, errlen, "junk after ']'");
                return -1;
            }
            port = host_end + 2;
        }
    } else {
        host_end = memchr(p, ':', hostport_len);
        if (host_end)
            port = host_end + 1;
        else
            host_end = p + hostport_len;
    }
    size_t hl = (size_t)(host_end - host);
    if (hl == 0) { /* ":9090" — the gateway's own listen syntax allows an empty host */
        host = "127.0.0.1";
        hl = strlen(host);
    }
    if (hl >= sizeof a->host) {
        snprintf(err, errlen, "host name too long");
        return -1;
    }
    memcpy(a->host, host, hl);
    a->host[hl] = '\0';
    size_t pl = port ? (size_t)(p + hostport_len - port) : 0;
    if (port && pl == 0) {
        snprintf(err, errlen, "empty port");
        return -1;
    }
    if (!port) {
        snprintf(a->port, sizeof a->port, "80");
    } else {
        if (pl >= sizeof a->port || strspn(port, "0123456789") < pl) {
            snprintf(err, errlen, "bad port \"%.*s\"", (int)pl, port);
            return -1;
        }
        memcpy(a->port, port, pl);
        a->port[pl] = '\0';
        long v = strtol(a->port, NULL, 10);
        if (v < 1 || v > 65535) {
            snprintf(err, errlen, "bad port \"%s\"", a->port);
            return -1;
        }
    }
    const char *prefix = slash ? slash : "";
    size_t xl = strlen(prefix);
    while (xl > 0 && prefix[xl - 1] == '/')
        xl--;
    if (xl >= sizeof a->prefix || strpbrk(prefix, "?#")) {
        snprintf(err, errlen, "bad path \"%s\"", prefix);
        return -1;
    }
    memcpy(a->prefix, prefix, xl);
    a->prefix[xl] = '\0';
    return 0;
}

/* Percent-encodes S for use as one path segment (RFC 3986 unreserved characters pass). */
static int path_segment(ctl_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                    (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' || *p == '~';
        char enc[3] = { '%', hex[*p >> 4], hex[*p & 15] };
        if (plain ? buf_add(b, (const char *)p, 1) : buf_add(b, enc, 3))
            return -1;
    }
    return 0;
}

static int on_status(llhttp_t *h, const char *at, size_t n)
{
    ctl_resp *r = h->data;
    size_t have = strlen(r->reason);
    size_t room = sizeof r->reason - 1 - have;
    memcpy(r->reason + have, at, n < room ? n : room);
    r->reason[have + (n < room ? n : room)] = '\0';
    return 0;
}

static int on_body(llhttp_t *h, const char *at, size_t n)
{
    ctl_resp *r = h->data;
    if (buf_add(&r->body, at, n) != 0) {
        r->oom = 1;
        return -1;
    }
    return 0;
}

static int on_message_complete(llhttp_t *h)
{
    ctl_resp *r = h->data;
    r->status = (int)h->status_code;
    r->complete = 1;
    return HPE_PAUSED; /* one response is all we read */
}

/* Connects to the admin listener: every address getaddrinfo gives, in order, each with the
 * 5 s timeouts set before connect() (Linux applies SO_SNDTIMEO to connect). Returns the fd
 * or -1 with err set. */
static int admin_connect(const ctl_admin *a, char *err, size_t errlen)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(a->host, a->port, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "resolve %s: %s", a->host, gai_strerror(gai));
        return -1;
    }
    int fd = -1;
    snprintf(err, errlen, "connect: no address for %s", a->host);
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            snprintf(err, errlen, "socket: %s", strerror(errno));
            continue;
        }
        struct timeval tv = { .tv_sec = CTL_TIMEOUT_S };
        if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) {
            snprintf(err, errlen, "setsockopt: %s", strerror(errno));
            close(fd);
            fd = -1;
            continue;
        }
        int rc;
        do
            rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
        while (rc != 0 && errno == EINTR);
        if (rc == 0)
            break;
        if (errno == EINPROGRESS || errno == EAGAIN || errno == EWOULDBLOCK)
            snprintf(err, errlen, "connect: timed out after %d s", CTL_TIMEOUT_S);
        else
            snprintf(err, errlen, "connect: %s", strerror(errno));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static int send_all(int fd, const char *p, size_t n, char *err, size_t errlen)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                snprintf(err, errlen, "send: timed out after %d s", CTL_TIMEOUT_S);
            else
                snprintf(err, errlen, "send: %s", strerror(errno));
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One exchange: METHOD a->prefix+PATH with BODY (NULL: none). Fills *out (caller frees
 * out->body). Returns 0 when a whole response arrived (any status), -1 with err set when
 * the transport failed. */
static int http_call(const ctl_admin *a, const char *method, const char *path, const char *body,
                     ctl_resp *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    ctl_buf req = { 0 };
    int v6 = strchr(a->host, ':') != NULL;
    int bad = buf_printf(&req, "%s %s%s HTTP/1.1\r\nHost: %s%s%s:%s\r\n"
                               "User-Agent: gatewayctl\r\nAccept: application/json\r\n"
                               "Connection: close\r\n",
                         method, a->prefix, path, v6 ? "[" : "", a->host, v6 ? "]" : "", a->port);
    if (a->token && a->token[0])
        bad |= buf_printf(&req, "Authorization: Bearer %s\r\n", a->token);
    if (body)
        bad |= buf_printf(&req, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                          strlen(body), body);
    else if (strcmp(method, "GET") != 0)
        bad |= buf_printf(&req, "Content-Length: 0\r\n\r\n");
    else
        bad |= buf_printf(&req, "\r\n");
    if (bad) {
        buf_free(&req);
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    int fd = admin_connect(a, err, errlen);
    if (fd < 0) {
        buf_free(&req);
        return -1;
    }
    int rc = send_all(fd, req.p, req.n, err, errlen);
    buf_free(&req);
    if (rc != 0)
        goto done;

    llhttp_settings_t settings;
    llhttp_settings_init(&settings);
    settings.on_status = on_status;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;
    llhttp_t parser;
    llhttp_init(&parser, HTTP_RESPONSE, &settings);
    parser.data = out;

    char chunk[16384];
    rc = -1;
    for (;;) {
        ssize_t n = recv(fd, chunk, sizeof chunk, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                snprintf(err, errlen, "no response within %d s", CTL_TIMEOUT_S);
            else
                snprintf(err, errlen, "recv: %s", strerror(errno));
            break;
        }
        llhttp_errno_t e = n == 0 ? llhttp_finish(&parser)
                                  : llhttp_execute(&parser, chunk, (size_t)n);
        if (out->complete) {
            rc = 0;
            break;
        }
        if (out->oom) {
            snprintf(err, errlen, "out of memory");
            break;
        }
        if (e != HPE_OK) {
            snprintf(err, errlen, "bad response: %s", llhttp_get_error_reason(&parser));
            break;
        }
        if (n == 0) {
            snprintf(err, errlen, "connection closed before a complete response");
            break;
        }
    }
done:
    close(fd);
    if (rc != 0) {
        buf_free(&out->body);
    }
    return rc;
}

/* Calls the admin API and decodes its JSON answer. WHAT names the command for messages.
 * On 2xx with a JSON body: *out holds it (a new reference; json null for an empty body),
 * returns CTL_OK. Otherwise prints "gatewayctl: WHAT: HTTP 422 Unprocessable Entity: <the
 * server's error text>" (or the transport error) and returns CTL_FAIL. */
static int admin_json(const ctl_admin *a, const char *what, const char *method, const char *path,
                      const json_t *body, json_t **out)
{
    *out = NULL;
    char *text = NULL;
    if (body && !(text = json_dumps(body, JSON_COMPACT)))
        return ctl_fail(what, "out of memory");
    ctl_resp r;
    char err[512];
    int rc = http_call(a, method, path, text, &r, err, sizeof err);
    free(text);
    if (rc != 0)
        return ctl_fail(what, "%s %s%s: %s", method, a->base, path, err);

    json_error_t jerr;
    json_t *doc = r.body.n ? json_loadb(r.body.p, r.body.n, 0, &jerr) : json_null();
    if (r.status < 200 || r.status > 299) {
        const char *msg = NULL;
        if (doc && json_is_string(json_object_get(doc, "error")))
            msg = json_string_value(json_object_get(doc, "error"));
        char snippet[201];
        if (!msg) { /* not our JSON error: show the first line of whatever came back */
            snprintf(snippet, sizeof snippet, "%s", buf_str(&r.body));
            snippet[strcspn(snippet, "\r\n")] = '\0';
            msg = snippet[0] ? snippet : "(no body)";
        }
        const char *hint = r.status == 401 ? " (check --token or GATEWAY_ADMIN_TOKEN)" : "";
        ctl_fail(what, "HTTP %d%s%s: %s%s", r.status, r.reason[0] ? " " : "", r.reason, msg,
                 hint);
        json_decref(doc);
        buf_free(&r.body);
        return CTL_FAIL;
    }
    if (!doc) {
        ctl_fail(what, "HTTP %d but the body is not JSON: %s (line %d)", r.status, jerr.text,
                 jerr.line);
        buf_free(&r.body);
        return CTL_FAIL;
    }
    buf_free(&r.body);
    *out = doc;
    return CTL_OK;
}

/* ---- summaries of route fields ------------------------------------------------------------- */

static int is_weights(const json_t *v)
{
    if (!json_is_object(v) || json_object_size(v) == 0)
        return 0;
    const char *k;
    json_t *w;
    json_object_foreach((json_t *)v, k, w) {
        if (!json_is_integer(w))
            return 0;
    }
    return 1;
}

/* A field's value the way an operator reads it: "-" for absent/null, strings as they are,
 * a split as "legacy 90 / order-service 10", a shadow or fallback as its upstream (and
 * percent when not 100), a list of strings comma-joined, anything else as compact JSON cut
 * to 60 bytes. Appends to B. */
static void value_summary(ctl_buf *b, const json_t *v)
{
    const char *k;
    json_t *x;
    size_t i;
    if (!v || json_is_null(v)) {
        buf_add(b, "-", 1);
    } else if (json_is_string(v)) {
        buf_printf(b, "%s", json_string_value(v));
    } else if (json_is_integer(v)) {
        buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    } else if (json_is_boolean(v)) {
        buf_printf(b, "%s", json_is_true(v) ? "true" : "false");
    } else if (is_weights(v)) {
        int first = 1;
        json_object_foreach((json_t *)v, k, x) {
            buf_printf(b, "%s%s %" JSON_INTEGER_FORMAT, first ? "" : " / ", k,
                       json_integer_value(x));
            first = 0;
        }
    } else if (json_is_object(v) && json_is_string(json_object_get(v, "upstream"))) {
        buf_printf(b, "%s", json_string_value(json_object_get(v, "upstream")));
        json_t *pct = json_object_get(v, "percent");
        if (json_is_integer(pct) && json_integer_value(pct) != 100)
            buf_printf(b, " %" JSON_INTEGER_FORMAT "%%", json_integer_value(pct));
    } else if (json_is_array(v) && json_array_size(v) > 0 && json_is_string(json_array_get(v, 0))) {
        json_array_foreach(v, i, x) {
            buf_printf(b, "%s%s", i ? "," : "", json_is_string(x) ? json_string_value(x) : "?");
        }
    } else {
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
        if (s && strlen(s) > 60)
            buf_printf(b, "%.57s...", s);
        else
            buf_printf(b, "%s", s ? s : "?");
        free(s);
    }
}

/* Where requests of route R go: its split when it has one, else its upstream. */
static void route_target(ctl_buf *b, const json_t *r)
{
    const json_t *split = json_object_get(r, "split");
    value_summary(b, is_weights(split) ? split : json_object_get(r, "upstream"));
}

/* "old → new" for each field that differs between two route objects, "; "-joined. */
static void change_summary(ctl_buf *b, const json_t *old, const json_t *new)
{
    if (json_is_object(old) && json_is_object(new)) {
        int n = 0;
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)old, k, v) {
            json_t *nv = json_object_get(new, k);
            if (nv && json_equal(v, nv))
                continue;
            buf_printf(b, "%s%s: ", n++ ? "; " : "", k);
            value_summary(b, v);
            buf_printf(b, " \xe2\x86\x92 ");
            value_summary(b, nv);
        }
        json_object_foreach((json_t *)new, k, v) {
            if (json_object_get(old, k))
                continue;
            buf_printf(b, "%s%s: - \xe2\x86\x92 ", n++ ? "; " : "", k);
            value_summary(b, v);
        }
        if (n == 0)
            buf_printf(b, "no field changed");
        return;
    }
    if (json_is_object(new) && (!old || json_is_null(old))) {
        buf_printf(b, "created: ");
        route_target(b, new);
        return;
    }
    if (json_is_object(old) && (!new || json_is_null(new))) {
        buf_printf(b, "deleted (was ");
        route_target(b, old);
        buf_printf(b, ")");
        return;
    }
    value_summary(b, old);
    buf_printf(b, " \xe2\x86\x92 ");
    value_summary(b, new);
}

/* ---- a text table -------------------------------------------------------------------------- */

#define CTL_MAX_COLS 8

typedef struct ctl_table {
    int cols;
    size_t rows, cap;
    char **cells;              /* rows * cols, malloc'd strings */
    size_t width[CTL_MAX_COLS];
} ctl_table;

static int table_row(ctl_table *t, char **cells)
{
    if (t->rows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **c = realloc(t->cells, cap * (size_t)t->cols * sizeof *c);
        if (!c)
            return -1;
        t->cells = c;
        t->cap = cap;
    }
    for (int i = 0; i < t->cols; i++) {
        char *s = strdup(cells[i] ? cells[i] : "");
        if (!s) {
            for (int j = 0; j < i; j++)
                free(t->cells[t->rows * (size_t)t->cols + (size_t)j]);
            return -1;
        }
        t->cells[t->rows * (size_t)t->cols + (size_t)i] = s;
        /* width in characters: count UTF-8 lead bytes only */
        size_t w = 0;
        for (const char *p = s; *p; p++)
            w += ((unsigned char)*p & 0xC0) != 0x80;
        if (w > t->width[i])
            t->width[i] = w;
    }
    t->rows++;
    return 0;
}

static void table_print(const ctl_table *t)
{
    for (size_t r = 0; r < t->rows; r++) {
        for (int c = 0; c < t->cols; c++) {
            const char *s = t->cells[r * (size_t)t->cols + (size_t)c];
            if (c == t->cols - 1) {
                fputs(s, stdout);
                break;
            }
            size_t w = 0;
            for (const char *p = s; *p; p++)
                w += ((unsigned char)*p & 0xC0) != 0x80;
            fputs(s, stdout);
            for (size_t i = w; i < t->width[c] + 2; i++)
                fputc(' ', stdout);
        }
        fputc('\n', stdout);
    }
}

static void table_free(ctl_table *t)
{
    for (size_t i = 0; i < t->rows * (size_t)t->cols; i++)
        free(t->cells[i]);
    free(t->cells);
    t->cells = NULL;
    t->rows = t->cap = 0;
}

/* ---- routes commands ----------------------------------------------------------------------- */

static int cmd_routes_list(const ctl_admin *a)
{
    json_t *doc;
    int rc = admin_json(a, "routes list", "GET", "/admin/routes", NULL, &doc);
    if (rc != CTL_OK)
        return rc;
    json_t *routes = json_object_get(doc, "routes");
    if (!json_is_array(routes)) {
        json_decref(doc);
        return ctl_fail("routes list", "unexpected response: no \"routes\" array");
    }
    ctl_buf line = { 0 };
    buf_printf(&line, "version ");
    value_summary(&line, json_object_get(doc, "version"));
    buf_printf(&line, " (source: ");
    value_summary(&line, json_object_get(doc, "source"));
    buf_printf(&line, ", legacy upstream: ");
    value_summary(&line, json_object_get(doc, "legacy_upstream"));
    buf_printf(&line, ", %zu route%s)", json_array_size(routes),
               json_array_size(routes) == 1 ? "" : "s");
    printf("%s\n", buf_str(&line));
    buf_free(&line);

    ctl_table t = { .cols = 5 };
    char *head[] = { "ID", "METHODS", "PATH", "UPSTREAM", "SHADOW" };
    int bad = table_row(&t, head);
    size_t i;
    json_t *r;
    json_array_foreach(routes, i, r) {
        ctl_buf c[5] = { { 0 } };
        value_summary(&c[0], json_object_get(r, "id"));
        json_t *m = json_object_get(r, "methods");
        if (json_is_array(m) && json_array_size(m) > 0)
            value_summary(&c[1], m);
        else
            buf_add(&c[1], "*", 1);
        value_summary(&c[2], json_object_get(r, "path"));
        route_target(&c[3], r);
        value_summary(&c[4], json_object_get(r, "shadow"));
        char *cells[5] = { c[0].p, c[1].p, c[2].p, c[3].p, c[4].p };
        bad |= table_row(&t, cells);
        for (int k = 0; k < 5; k++)
            buf_free(&c[k]);
    }
    if (!bad)
        table_print(&t);
    table_free(&t);
    json_decref(doc);
    return bad ? ctl_fail("routes list", "out of memory") : CTL_OK;
}

static int route_path(ctl_buf *b, const char *id)
{
    return buf_printf(b, "/admin/routes/") | path_segment(b, id);
}

static int cmd_routes_show(const ctl_admin *a, const char *id)
{
    ctl_buf path = { 0 };
    if (route_path(&path, id) != 0)
        return ctl_fail("routes show", "out of memory");
    json_t *doc;
    int rc = admin_json(a, "routes show", "GET", path.p, NULL, &doc);
    buf_free(&path);
    if (rc != CTL_OK)
        return rc;
    char *s = json_dumps(doc, JSON_INDENT(2) | JSON_ENCODE_ANY);
    json_decref(doc);
    if (!s)
        return ctl_fail("routes show", "out of memory");
    printf("%s\n", s);
    free(s);
    return CTL_OK;
}

/* What a route change left behind: "orders: upstream order-service, no shadow (version 5)".
 * The answer may be the route itself, or carry it in "route"; "version" when present. */
static void print_change(const char *id, const json_t *resp)
{
    const json_t *route = json_object_get(resp, "route");
    if (!json_is_object(route))
        route = json_object_get(resp, "id") ? resp : NULL;
    json_t *version = json_object_get(resp, "version");
    ctl_buf b = { 0 };
    buf_printf(&b, "%s: ", id);
    if (route) {
        buf_printf(&b, "upstream ");
        route_target(&b, route);
        json_t *sh = json_object_get(route, "shadow");
        if (sh && !json_is_null(sh)) {
            buf_printf(&b, ", shadow ");
            value_summary(&b, sh);
        } else {
            buf_printf(&b, ", no shadow");
        }
    } else {
        buf_printf(&b, "changed");
    }
    if (json_is_integer(version))
        buf_printf(&b, " (version %" JSON_INTEGER_FORMAT ")", json_integer_value(version));
    printf("%s\n", buf_str(&b));
    buf_free(&b);
}

/* PATCH /admin/routes/ID with PATCH (a JSON merge patch), then prints the outcome. */
static int patch_route(const ctl_admin *a, const char *what, const char *id, json_t *patch)
{
    ctl_buf path = { 0 };
    if (!patch || route_path(&path, id) != 0) {
        json_decref(patch);
        buf_free(&path);
        return ctl_fail(what, "out of memory");
    }
    json_t *doc;
    int rc = admin_json(a, what, "PATCH", path.p, patch, &doc);
    json_decref(patch);
    if (rc != CTL_OK) {
        buf_free(&path);
        return rc;
    }
    /* An answer without the route (just {"version": N}): read the route back so the operator
     * sees what is in force now. Failing that read does not undo the change: still exit 0. */
    if (!json_is_object(json_object_get(doc, "route")) && !json_object_get(doc, "id")) {
        json_t *route;
        if (admin_json(a, what, "GET", path.p, NULL, &route) == CTL_OK && json_is_object(route))
            json_object_set_new(doc, "route", route);
        else
            json_decref(route);
    }
    buf_free(&path);
    print_change(id, doc);
    json_decref(doc);
    return CTL_OK;
}

/* Parses "UP=W,UP=W" into {"UP": W, ...}. Returns NULL with err naming the bad part. */
static json_t *parse_split(const char *spec, char *err, size_t errlen)
{
    json_t *w = json_object();
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (!spec[0]) {
        snprintf(err, errlen, "empty split: want UP=W,UP=W");
        goto fail;
    }
    const char *p = spec;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        if (n == 0) {
            snprintf(err, errlen, "empty part in \"%s\": want UP=W,UP=W", spec);
            goto fail;
        }
        if (!eq) {
            snprintf(err, errlen, "\"%.*s\": want UP=W (no '=')", (int)n, p);
            goto fail;
        }
        size_t nl = (size_t)(eq - p), wl = n - nl - 1;
        if (nl == 0) {
            snprintf(err, errlen, "\"%.*s\": empty upstream name", (int)n, p);
            goto fail;
        }
        char name[256];
        if (nl >= sizeof name) {
            snprintf(err, errlen, "\"%.40s...\": upstream name too long", p);
            goto fail;
        }
        memcpy(name, p, nl);
        name[nl] = '\0';
        long long weight = 0;
        int ok = wl > 0 && wl <= 6;
        for (size_t i = 0; ok && i < wl; i++) {
            char c = eq[1 + i];
            ok = c >= '0' && c <= '9';
            weight = weight * 10 + (c - '0');
        }
        if (!ok || weight > CTL_MAX_WEIGHT) {
            snprintf(err, errlen, "\"%.*s\": weight \"%.*s\" is not an integer 0..%d", (int)n, p,
                     (int)wl, eq + 1, CTL_MAX_WEIGHT);
            goto fail;
        }
        if (json_object_get(w, name)) {
            snprintf(err, errlen, "\"%.*s\": upstream \"%s\" given twice", (int)n, p, name);
            goto fail;
        }
        if (json_object_set_new(w, name, json_integer(weight)) != 0) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        if (!end)
            break;
        p = end + 1;
    }
    return w;
fail:
    json_decref(w);
    return NULL;
}

static int cmd_routes_history(const ctl_admin *a)
{
    json_t *doc;
    int rc = admin_json(a, "routes history", "GET", "/admin/routes/history", NULL, &doc);
    if (rc != CTL_OK)
        return rc;
    json_t *changes = json_object_get(doc, "changes");
    if (!json_is_array(changes)) {
        json_decref(doc);
        return ctl_fail("routes history", "unexpected response: no \"changes\" array");
    }
    if (json_array_size(changes) == 0) {
        printf("no route changes recorded\n");
        json_decref(doc);
        return CTL_OK;
    }
    ctl_table t = { .cols = 6 };
    char *head[] = { "AT", "WHO", "ACTION", "ROUTE", "VERSION", "CHANGE" };
    int bad = table_row(&t, head);
    size_t i;
    json_t *ch;
    json_array_foreach(changes, i, ch) {
        ctl_buf c[6] = { { 0 } };
        value_summary(&c[0], json_object_get(ch, "at"));
        value_summary(&c[1], json_object_get(ch, "who"));
        value_summary(&c[2], json_object_get(ch, "action"));
        json_t *rid = json_object_get(ch, "route_id");
        if (rid && !json_is_null(rid))
            value_summary(&c[3], rid);
        else
            buf_add(&c[3], "*", 1);
        value_summary(&c[4], json_object_get(ch, "version"));
        change_summary(&c[5], json_object_get(ch, "old"), json_object_get(ch, "new"));
        char *cells[6] = { c[0].p, c[1].p, c[2].p, c[3].p, c[4].p, c[5].p };
        bad |= table_row(&t, cells);
        for (int k = 0; k < 6; k++)
            buf_free(&c[k]);
    }
    if (!bad)
        table_print(&t);
    table_free(&t);
    json_decref(doc);
    return bad ? ctl_fail("routes history", "out of memory") : CTL_OK;
}

static int cmd_routes_reload(const ctl_admin *a)
{
    json_t *doc;
    int rc = admin_json(a, "routes reload", "POST", "/admin/reload", NULL, &doc);
    if (rc != CTL_OK)
        return rc;
    ctl_buf b = { 0 };
    buf_printf(&b, "reloaded: version ");
    value_summary(&b, json_object_get(doc, "version"));
    buf_printf(&b, ", ");
    value_summary(&b, json_object_get(doc, "routes"));
    buf_printf(&b, " routes");
    printf("%s\n", buf_str(&b));
    buf_free(&b);
    json_decref(doc);
    return CTL_OK;
}

static int cmd_rollback(const ctl_admin *a, const char *id)
{
    json_t *body = id ? json_pack("{s:s}", "id", id) : json_object();
    if (!body)
        return ctl_fail("rollback", "out of memory");
    json_t *doc;
    int rc = admin_json(a, "rollback", "POST", "/admin/rollback", body, &doc);
    json_decref(body);
    if (rc != CTL_OK)
        return rc;
    json_t *changed = json_object_get(doc, "changed");
    ctl_buf b = { 0 };
    if (json_is_array(changed) && json_array_size(changed) > 0) {
        buf_printf(&b, "rolled back to legacy: ");
        value_summary(&b, changed);
    } else if (json_is_array(changed)) {
        buf_printf(&b, "nothing to roll back: %s already on legacy",
                   id ? id : "every route");
    } else {
        buf_printf(&b, "rolled back to legacy: %s", id ? id : "every route");
    }
    json_t *v = json_object_get(doc, "version");
    if (json_is_integer(v))
        buf_printf(&b, " (version %" JSON_INTEGER_FORMAT ")", json_integer_value(v));
    printf("%s\n", buf_str(&b));
    buf_free(&b);
    json_decref(doc);
    return CTL_OK;
}

typedef struct ctl_sub {
    const char *name;
    int nargs;            /* operands after the subcommand name */
    const char *synopsis;
} ctl_sub;

static const ctl_sub routes_subs[] = {
    { "list", 0, "routes list" },
    { "show", 1, "routes show ID" },
    { "flip", 2, "routes flip ID UPSTREAM" },
    { "split", 2, "routes split ID UP=W,UP=W" },
    { "shadow", 2, "routes shadow ID UPSTREAM" },
    { "unshadow", 1, "routes unshadow ID" },
    { "history", 0, "routes history" },
    { "reload", 0, "routes reload" },
};

static int cmd_routes(const ctl_admin *a, int argc, char **argv)
{
    if (argc < 1)
        return ctl_usage("routes", "routes list|show|flip|split|shadow|unshadow|history|reload ...",
                         "missing subcommand");
    const ctl_sub *sub = NULL;
    for (size_t i = 0; i < sizeof routes_subs / sizeof routes_subs[0]; i++) {
        if (strcmp(argv[0], routes_subs[i].name) == 0)
            sub = &routes_subs[i];
    }
    if (!sub)
        return ctl_usage("routes", "routes list|show|flip|split|shadow|unshadow|history|reload ...",
                         "unknown subcommand \"%s\"", argv[0]);
    char what[64];
    snprintf(what, sizeof what, "routes %s", sub->name);
    if (argc - 1 != sub->nargs)
        return ctl_usage(what, sub->synopsis, argc - 1 < sub->nargs ? "missing argument"
                                                                      : "too many arguments");
    for (int i = 1; i < argc; i++) {
        if (!argv[i][0])
            return ctl_usage(what, sub->synopsis, "empty argument");
    }
    const char *id = argc > 1 ? argv[1] : NULL, *arg = argc > 2 ? argv[2] : NULL;
    if (strcmp(sub->name, "list") == 0)
        return cmd_routes_list(a);
    if (strcmp(sub->name, "show") == 0)
        return cmd_routes_show(a, id);
    if (strcmp(sub->name, "history") == 0)
        return cmd_routes_history(a);
    if (strcmp(sub->name, "reload") == 0)
        return cmd_routes_reload(a);
    if (strcmp(sub->name, "flip") == 0)
        return patch_route(a, what, id, json_pack("{s:s,s:n,s:n}", "upstream", arg, "split",
                                                  "sticky"));
    if (strcmp(sub->name, "split") == 0) {
        char err[512];
        json_t *w = parse_split(arg, err, sizeof err);
        if (!w)
            return ctl_usage(what, sub->synopsis, "%s", err);
        return patch_route(a, what, id, json_pack("{s:o}", "split", w));
    }
    if (strcmp(sub->name, "shadow") == 0)
        return patch_route(a, what, id, json_pack("{s:{s:s}}", "shadow", "upstream", arg));
    /* unshadow */
    return patch_route(a, what, id, json_pack("{s:n}", "shadow"));
}

/* ---- db: migrations ------------------------------------------------------------------------ */

typedef struct ctl_mig {
    long long version;
    char stem[320];        /* "000001_route_store": the file name without .up.sql */
    char name[256];        /* "route_store" */
    char *up, *down;       /* file paths, NULL when there is none */
    int applied;
    char applied_at[64];
} ctl_mig;

typedef struct ctl_migs {
    ctl_mig *v;
    size_t n, cap;
} ctl_migs;

static void migs_free(ctl_migs *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->v[i].up);
        free(m->v[i].down);
    }
    free(m->v);
    m->v = NULL;
    m->n = m->cap = 0;
}

static ctl_mig *migs_find(ctl_migs *m, long long version)
{
    for (size_t i = 0; i < m->n; i++) {
        if (m->v[i].version == version)
            return &m->v[i];
    }
    return NULL;
}

static ctl_mig *migs_add(ctl_migs *m, long long version)
{
    if (m->n == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        ctl_mig *v = realloc(m->v, cap * sizeof *v);
        if (!v)
            return NULL;
        m->v = v;
        m->cap = cap;
    }
    ctl_mig *x = &m->v[m->n++];
    memset(x, 0, sizeof *x);
    x->version = version;
    return x;
}

static int mig_cmp(const void *a, const void *b)
{
    long long x = ((const ctl_mig *)a)->version, y = ((const ctl_mig *)b)->version;
    return x < y ? -1 : x > y;
}

/* "NNNNNN_name.up.sql" / ".down.sql": digits (1..18), '_', a name of [A-Za-z0-9_-].
 * Returns 1 (up) or 0 (down) with *version, stem and name set, -1 when it does not match. */
static int parse_mig_name(const char *fn, long long *version, char *stem, size_t stemlen,
                          char *name, size_t namelen)
{
    size_t nd = strspn(fn, "0123456789");
    if (nd == 0 || nd > 18 || fn[nd] != '_')
        return -1;
    const char *nm = fn + nd + 1;
    size_t nl = strspn(nm, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-");
    int up;
    if (strcmp(nm + nl, ".up.sql") == 0)
        up = 1;
    else if (strcmp(nm + nl, ".down.sql") == 0)
        up = 0;
    else
        return -1;
    if (nl == 0 || nl >= namelen || nd + 1 + nl >= stemlen)
        return -1;
    *version = strtoll(fn, NULL, 10);
    memcpy(stem, fn, nd + 1 + nl);
    stem[nd + 1 + nl] = '\0';
    memcpy(name, nm, nl);
    name[nl] = '\0';
    return up;
}

/* Reads DIR's migration files into M, sorted by version. CTL_OK or CTL_FAIL (printed). */
static int scan_migrations(const char *what, const char *dir, ctl_migs *m)
{
    DIR *d = opendir(dir);
    if (!d)
        return ctl_fail(what, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    int rc = CTL_OK;
    while (rc == CTL_OK && (e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (l < 4 || strcmp(e->d_name + l - 4, ".sql") != 0)
            continue;
        long long version;
        char stem[320], name[256];
        int up = parse_mig_name(e->d_name, &version, stem, sizeof stem, name, sizeof name);
        if (up < 0) {
            rc = ctl_fail(what, "%s/%s: bad migration file name: want NNNNNN_name.up.sql or "
                          "NNNNNN_name.down.sql", dir, e->d_name);
            break;
        }
        ctl_mig *x = migs_find(m, version);
        if (x && strcmp(x->stem, stem) != 0) {
            rc = ctl_fail(what, "%s: version %lld is both %s and %s", dir, version, x->stem, stem);
            break;
        }
        if (!x && !(x = migs_add(m, version))) {
            rc = ctl_fail(what, "out of memory");
            break;
        }
        snprintf(x->stem, sizeof x->stem, "%s", stem);
        snprintf(x->name, sizeof x->name, "%s", name);
        size_t pl = strlen(dir) + 1 + l + 1;
        char *path = malloc(pl);
        if (!path) {
            rc = ctl_fail(what, "out of memory");
            break;
        }
        snprintf(path, pl, "%s/%s", dir, e->d_name);
        free(up ? x->up : x->down);
        *(up ? &x->up : &x->down) = path;
    }
    closedir(d);
    if (rc != CTL_OK)
        return rc;
    qsort(m->v, m->n, sizeof *m->v, mig_cmp);
    for (size_t i = 0; i < m->n; i++) {
        if (!m->v[i].up)
            return ctl_fail(what, "%s/%s.down.sql has no %s.up.sql", dir, m->v[i].stem,
                            m->v[i].stem);
    }
    return CTL_OK;
}

static char *read_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s", strerror(errno));
        return NULL;
    }
    ctl_buf b = { 0 };
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (buf_add(&b, chunk, n) != 0) {
            snprintf(err, errlen, "out of memory");
            fclose(f);
            buf_free(&b);
            return NULL;
        }
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        snprintf(err, errlen, "read error");
        buf_free(&b);
        return NULL;
    }
    if (!b.p && buf_add(&b, "", 0) != 0) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return b.p;
}

/* The server's message without the trailing newline libpq leaves on it. */
static const char *pg_msg(const char *s, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s", s && s[0] ? s : "unknown error");
    size_t l = strlen(out);
    while (l > 0 && (out[l - 1] == '\n' || out[l - 1] == ' '))
        out[--l] = '\0';
    return out;
}

/* Runs SQL (no parameters, any number of statements). 0 or -1 with err set. */
static int pg_exec(PGconn *c, const char *sql, char *err, size_t errlen)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY;
    if (!ok)
        pg_msg(r ? PQresultErrorMessage(r) : PQerrorMessage(c), err, errlen);
    PQclear(r);
    return ok ? 0 : -1;
}

static int pg_exec_params(PGconn *c, const char *sql, int n, const char *const *params,
                          PGresult **out, char *err, size_t errlen)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        pg_msg(r ? PQresultErrorMessage(r) : PQerrorMessage(c), err, errlen);
        PQclear(r);
        return -1;
    }
    if (out)
        *out = r;
    else
        PQclear(r);
    return 0;
}

/* Server notices: warnings and errors reach the operator, NOTICE/INFO chatter does not. */
static void notice_receiver(void *arg, const PGresult *r)
{
    const char *what = arg;
    const char *sev = PQresultErrorField(r, PG_DIAG_SEVERITY_NONLOCALIZED);
    if (sev && (strcmp(sev, "NOTICE") == 0 || strcmp(sev, "INFO") == 0 ||
                strcmp(sev, "LOG") == 0 || strncmp(sev, "DEBUG", 5) == 0))
        return;
    char msg[1024];
    fprintf(stderr, "gatewayctl: %s: server: %s\n", what,
            pg_msg(PQresultErrorMessage(r), msg, sizeof msg));
}

static PGconn *pg_connect(const char *what, const char *conninfo)
{
    PGconn *c = PQconnectdb(conninfo);
    if (!c) {
        ctl_fail(what, "connect: out of memory");
        return NULL;
    }
    if (PQstatus(c) != CONNECTION_OK) {
        char msg[1024];
        ctl_fail(what, "connect: %s", pg_msg(PQerrorMessage(c), msg, sizeof msg));
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeReceiver(c, notice_receiver, (void *)what);
    return c;
}

/* Marks M's entries applied from gateway_schema_migrations, and adds the applied versions
 * no file describes (stem "NNNNNN_name", no up/down). A missing table: nothing applied. */
static int load_applied(const char *what, PGconn *c, ctl_migs *m)
{
    char err[1024];
    PGresult *r;
    if (pg_exec_params(c, "SELECT to_regclass('gateway_schema_migrations') IS NOT NULL", 0,
                       NULL, &r, err, sizeof err) != 0)
        return ctl_fail(what, "%s", err);
    int exists = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (!exists)
        return CTL_OK;
    if (pg_exec_params(c, "SELECT version, name, to_char(applied_at AT TIME ZONE 'UTC', "
                          "'YYYY-MM-DD HH24:MI:SS') || ' UTC' "
                          "FROM gateway_schema_migrations ORDER BY version",
                       0, NULL, &r, err, sizeof err) != 0)
        return ctl_fail(what, "gateway_schema_migrations: %s", err);
    int rc = CTL_OK;
    for (int i = 0; i < PQntuples(r); i++) {
        long long v = strtoll(PQgetvalue(r, i, 0), NULL, 10);
        ctl_mig *x = migs_find(m, v);
        if (!x) {
            if (!(x = migs_add(m, v))) {
                rc = ctl_fail(what, "out of memory");
                break;
            }
            snprintf(x->name, sizeof x->name, "%s", PQgetvalue(r, i, 1));
            snprintf(x->stem, sizeof x->stem, "%06lld_%s", v, x->name);
        }
        x->applied = 1;
        snprintf(x->applied_at, sizeof x->applied_at, "%s", PQgetvalue(r, i, 2));
    }
    PQclear(r);
    qsort(m->v, m->n, sizeof *m->v, mig_cmp);
    return rc;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Applies (up) or reverts (down) one migration in its own transaction, together with its
 * bookkeeping row. CTL_OK or CTL_FAIL (printed, transaction rolled back). */
static int run_migration(const char *what, PGconn *c, const ctl_mig *x, int up)
{
    const char *path = up ? x->up : x->down;
    char err[4096];
    char *sql = read_file(path, err, sizeof err);
    if (!sql)
        return ctl_fail(what, "%s: %s", path, err);
    double t0 = now_ms();
    char version[32];
    snprintf(version, sizeof version, "%lld", x->version);
    const char *params[2] = { version, x->name };
    int rc = CTL_FAIL;
    if (pg_exec(c, "BEGIN", err, sizeof err) != 0) {
        ctl_fail(what, "BEGIN: %s", err);
        goto done;
    }
    if (pg_exec(c, sql, err, sizeof err) != 0) {
        ctl_fail(what, "%s: %s", path, err);
        goto rollback;
    }
    if (up ? pg_exec_params(c, "INSERT INTO gateway_schema_migrations (version, name) "
                               "VALUES ($1::bigint, $2)", 2, params, NULL, err, sizeof err)
           : pg_exec_params(c, "DELETE FROM gateway_schema_migrations WHERE version = $1::bigint",
                            1, params, NULL, err, sizeof err)) {
        ctl_fail(what, "%s: recording it in gateway_schema_migrations: %s", path, err);
        goto rollback;
    }
    if (pg_exec(c, "COMMIT", err, sizeof err) != 0) {
        ctl_fail(what, "%s: COMMIT: %s", path, err);
        goto rollback;
    }
    printf("%s %s (%.0f ms)\n", up ? "applied" : "rolled back", x->stem, now_ms() - t0);
    fflush(stdout);
    rc = CTL_OK;
    goto done;
rollback:
    pg_exec(c, "ROLLBACK", err, sizeof err);
done:
    free(sql);
    return rc;
}

typedef struct ctl_db_opts {
    const char *conninfo;
    const char *dir;
    long long to;          /* -1: not given */
    int down;
} ctl_db_opts;

static int db_migrate(const ctl_db_opts *o)
{
    const char *what = o->down ? "db migrate --down" : "db migrate";
    ctl_migs m = { 0 };
    int rc = scan_migrations(what, o->dir, &m);
    if (rc != CTL_OK) {
        migs_free(&m);
        return rc;
    }
    PGconn *c = pg_connect(what, o->conninfo);
    if (!c) {
        migs_free(&m);
        return CTL_FAIL;
    }
    char err[1024];
    PGresult *r = NULL;
    const char *key[1] = { CTL_LOCK_KEY };
    /* One migrator at a time: try first so a waiting operator learns why nothing happens. */
    if (pg_exec_params(c, "SELECT pg_try_advisory_lock($1::bigint)", 1, key, &r, err,
                       sizeof err) != 0) {
        rc = ctl_fail(what, "advisory lock: %s", err);
        goto out;
    }
    int got = strcmp(PQgetvalue(r, 0, 0), "t") == 0;
    PQclear(r);
    if (!got) {
        fprintf(stderr, "gatewayctl: %s: waiting for another migrator (advisory lock %s)\n",
                what, CTL_LOCK_KEY);
        if (pg_exec_params(c, "SELECT pg_advisory_lock($1::bigint)", 1, key, NULL, err,
                           sizeof err) != 0) {
            rc = ctl_fail(what, "advisory lock: %s", err);
            goto out;
        }
    }
    /* Under the lock: what is applied is now stable. */
    if (pg_exec(c, "CREATE TABLE IF NOT EXISTS gateway_schema_migrations ("
                   "version bigint PRIMARY KEY, name text NOT NULL, "
                   "applied_at timestamptz NOT NULL DEFAULT now())", err, sizeof err) != 0) {
        rc = ctl_fail(what, "creating gateway_schema_migrations: %s", err);
        goto unlock;
    }
    if ((rc = load_applied(what, c, &m)) != CTL_OK)
        goto unlock;

    int done = 0;
    if (!o->down) {
        for (size_t i = 0; i < m.n && rc == CTL_OK; i++) {
            ctl_mig *x = &m.v[i];
            if (x->applied || !x->up || (o->to >= 0 && x->version > o->to))
                continue;
            rc = run_migration(what, c, x, 1);
            done++;
        }
    } else {
        /* Check the whole plan before reverting anything: every step needs its .down.sql. */
        for (size_t i = m.n; i-- > 0;) {
            ctl_mig *x = &m.v[i];
            if (!x->applied || (o->to >= 0 && x->version <= o->to))
                continue;
            if (!x->down) {
                rc = ctl_fail(what, "%s/%s.down.sql: no such file (needed to roll back %lld)",
                              o->dir, x->stem, x->version);
                goto unlock;
            }
            if (o->to < 0)
                break;
        }
        for (size_t i = m.n; i-- > 0 && rc == CTL_OK;) {
            ctl_mig *x = &m.v[i];
            if (!x->applied || (o->to >= 0 && x->version <= o->to))
                continue;
            rc = run_migration(what, c, x, 0);
            done++;
            if (o->to < 0)
                break;
        }
    }
    if (rc == CTL_OK && done == 0)
        printf(o->down ? "nothing to roll back\n" : "nothing to migrate: up to date\n");
unlock:
    pg_exec_params(c, "SELECT pg_advisory_unlock($1::bigint)", 1, key, NULL, err, sizeof err);
out:
    PQfinish(c);
    migs_free(&m);
    return rc;
}

static int db_status(const ctl_db_opts *o)
{
    const char *what = "db status";
    ctl_migs m = { 0 };
    int rc = scan_migrations(what, o->dir, &m);
    PGconn *c = NULL;
    if (rc != CTL_OK)
        goto out;
    if (!(c = pg_connect(what, o->conninfo))) {
        rc = CTL_FAIL;
        goto out;
    }
    if ((rc = load_applied(what, c, &m)) != CTL_OK)
        goto out;
    ctl_table t = { .cols = 4 };
    char *head[] = { "VERSION", "NAME", "STATE", "APPLIED AT" };
    int bad = table_row(&t, head);
    size_t n_applied = 0, n_pending = 0;
    long long at = 0;
    for (size_t i = 0; i < m.n; i++) {
        ctl_mig *x = &m.v[i];
        char version[32];
        snprintf(version, sizeof version, "%.*s", (int)strcspn(x->stem, "_"), x->stem);
        const char *state = x->applied ? (x->up ? "applied" : "applied (no file)") : "pending";
        char *cells[4] = { version, x->name, (char *)state, x->applied ? x->applied_at : "-" };
        bad |= table_row(&t, cells);
        if (x->applied) {
            n_applied++;
            at = x->version;
        } else {
            n_pending++;
        }
    }
    if (!bad)
        table_print(&t);
    table_free(&t);
    if (bad) {
        rc = ctl_fail(what, "out of memory");
        goto out;
    }
    printf("at version %lld: %zu applied, %zu pending\n", at, n_applied, n_pending);
out:
    if (c)
        PQfinish(c);
    migs_free(&m);
    return rc;
}

static int cmd_db(int argc, char **argv)
{
    static const char syn[] = "db migrate [--to VERSION] [--down] | db status "
                              "[--pg CONNINFO] [--dir DIR]";
    if (argc < 1)
        return ctl_usage("db", syn, "missing subcommand");
    int migrate = strcmp(argv[0], "migrate") == 0;
    if (!migrate && strcmp(argv[0], "status") != 0)
        return ctl_usage("db", syn, "unknown subcommand \"%s\"", argv[0]);
    const char *what = migrate ? "db migrate" : "db status";
    ctl_db_opts o = { .conninfo = getenv("GATEWAY_PG"), .dir = getenv("GATEWAY_SQL_DIR"),
                      .to = -1 };
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *val = NULL;
        const char *eq = strchr(arg, '=');
        char opt[32];
        size_t ol = eq ? (size_t)(eq - arg) : strlen(arg);
        snprintf(opt, sizeof opt, "%.*s", (int)(ol < sizeof opt ? ol : sizeof opt - 1), arg);
        int takes = strcmp(opt, "--pg") == 0 || strcmp(opt, "--dir") == 0 ||
                    (migrate && strcmp(opt, "--to") == 0);
        if (takes) {
            if (eq)
                val = eq + 1;
            else if (i + 1 < argc)
                val = argv[++i];
            else
                return ctl_usage(what, syn, "%s needs a value", opt);
        }
        if (strcmp(opt, "--pg") == 0) {
            o.conninfo = val;
        } else if (strcmp(opt, "--dir") == 0) {
            o.dir = val;
        } else if (takes) { /* --to */
            char *end;
            errno = 0;
            long long v = strtoll(val, &end, 10);
            if (!val[0] || *end || errno || v < 0 || val[0] == '-' || val[0] == '+')
                return ctl_usage(what, syn, "--to \"%s\": want a migration version (an integer "
                                 ">= 0)", val);
            o.to = v;
        } else if (migrate && strcmp(arg, "--down") == 0) {
            o.down = 1;
        } else if (arg[0] == '-') {
            return ctl_usage(what, syn, "unknown option \"%s\"", arg);
        } else {
            return ctl_usage(what, syn, "unexpected argument \"%s\"", arg);
        }
    }
    if (!o.conninfo || !o.conninfo[0])
        return ctl_usage(what, syn, "no database: give --pg CONNINFO or set GATEWAY_PG");
    if (!o.dir || !o.dir[0])
        o.dir = "conf/sql";
    return migrate ? db_migrate(&o) : db_status(&o);
}

/* ---- main ---------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    const char *admin_url = NULL, *token = getenv("GATEWAY_ADMIN_TOKEN");
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            fputs(usage_text, stdout);
            return CTL_OK;
        }
        if (strcmp(arg, "--") == 0) {
            i++;
            break;
        }
        const char **dst = NULL;
        size_t ol = 0;
        if (strncmp(arg, "--admin", 7) == 0 && (arg[7] == '\0' || arg[7] == '=')) {
            dst = &admin_url;
            ol = 7;
        } else if (strncmp(arg, "--token", 7) == 0 && (arg[7] == '\0' || arg[7] == '=')) {
            dst = &token;
            ol = 7;
        } else {
            return ctl_usage("usage", NULL, "unknown option \"%s\"", arg);
        }
        if (arg[ol] == '=')
            *dst = arg + ol + 1;
        else if (i + 1 < argc)
            *dst = argv[++i];
        else
            return ctl_usage("usage", NULL, "%.*s needs a value", (int)ol, arg);
    }
    if (i >= argc)
        return ctl_usage("usage", NULL, "missing command");
    const char *cmd = argv[i];
    int sub_argc = argc - i - 1;
    char **sub_argv = argv + i + 1;
    for (int k = 0; k < sub_argc; k++) {
        if (strcmp(sub_argv[k], "--help") == 0 || strcmp(sub_argv[k], "-h") == 0) {
            fputs(usage_text, stdout);
            return CTL_OK;
        }
    }
    if (strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return CTL_OK;
    }
    if (strcmp(cmd, "db") == 0)
        return cmd_db(sub_argc, sub_argv);
    if (strcmp(cmd, "routes") != 0 && strcmp(cmd, "rollback") != 0)
        return ctl_usage("usage", NULL, "unknown command \"%s\"", cmd);

    /* Validate the command line before anything touches the network. */
    const char *rollback_id = NULL;
    if (strcmp(cmd, "rollback") == 0) {
        if (sub_argc != 1 || !sub_argv[0][0])
            return ctl_usage("rollback", "rollback ID | rollback --all",
                             sub_argc ? "want exactly one of ID or --all" : "missing ID or --all");
        if (strcmp(sub_argv[0], "--all") != 0) {
            if (sub_argv[0][0] == '-')
                return ctl_usage("rollback", "rollback ID | rollback --all",
                                 "unknown option \"%s\"", sub_argv[0]);
            rollback_id = sub_argv[0];
        }
    }

    char url[600];
    if (!admin_url || !admin_url[0]) {
        const char *env = getenv("GATEWAY_ADMIN_URL");
        const char *listen = getenv("GATEWAY_ADMIN_LISTEN");
        if (env && env[0])
            admin_url = env;
        else if (listen && listen[0]) {
            snprintf(url, sizeof url, "http://%s", listen);
            admin_url = url;
        } else {
            admin_url = "http://127.0.0.1:9090";
        }
    }
    ctl_admin a = { .token = token };
    char err[256];
    if (admin_parse_url(&a, admin_url, err, sizeof err) != 0)
        return ctl_usage("--admin", NULL, "\"%s\": %s", admin_url, err);

    if (strcmp(cmd, "rollback") == 0)
        return cmd_rollback(&a, rollback_id);
    return cmd_routes(&a, sub_argc, sub_argv);
}
