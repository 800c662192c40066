/* ctl_http.c — gatewayctl: the admin API over plain blocking HTTP/1.1. */
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

#include "ctl/ctl.h"

/* ---- the admin API: plain blocking HTTP/1.1 -------------------------------------------------- */



/* Accepts "http://HOST[:PORT][/PREFIX]", "HOST:PORT" and "[V6]:PORT". 0 or -1 with err set. */
int ctl_admin_parse_url(ctl_admin *a, const char *url, char *err, size_t errlen)
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
int ctl_path_segment(ctl_buf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        int plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                    (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' || *p == '~';
        char enc[3] = { '%', hex[*p >> 4], hex[*p & 15] };
        if (plain ? ctl_buf_add(b, (const char *)p, 1) : ctl_buf_add(b, enc, 3))
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
    if (ctl_buf_add(&r->body, at, n) != 0) {
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
int ctl_http_call(const ctl_admin *a, const char *method, const char *path, const char *body,
                     ctl_resp *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    ctl_buf req = { 0 };
    int v6 = strchr(a->host, ':') != NULL;
    int bad = ctl_buf_printf(&req, "%s %s%s HTTP/1.1\r\nHost: %s%s%s:%s\r\n"
                               "User-Agent: gatewayctl\r\nAccept: application/json\r\n"
                               "Connection: close\r\n",
                         method, a->prefix, path, v6 ? "[" : "", a->host, v6 ? "]" : "", a->port);
    if (a->token && a->token[0])
        bad |= ctl_buf_printf(&req, "Authorization: Bearer %s\r\n", a->token);
    if (body)
        bad |= ctl_buf_printf(&req, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                          strlen(body), body);
    else if (strcmp(method, "GET") != 0)
        bad |= ctl_buf_printf(&req, "Content-Length: 0\r\n\r\n");
    else
        bad |= ctl_buf_printf(&req, "\r\n");
    if (bad) {
        ctl_buf_free(&req);
        snprintf(err, errlen, "out of memory");
        return -1;
    }

    int fd = admin_connect(a, err, errlen);
    if (fd < 0) {
        ctl_buf_free(&req);
        return -1;
    }
    int rc = send_all(fd, req.p, req.n, err, errlen);
    ctl_buf_free(&req);
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
        ctl_buf_free(&out->body);
    }
    return rc;
}

/* Calls the admin API and decodes its JSON answer. WHAT names the command for messages.
 * On 2xx with a JSON body: *out holds it (a new reference; json null for an empty body),
 * returns CTL_OK. Otherwise prints "gatewayctl: WHAT: HTTP 422 Unprocessable Entity: <the
 * server's error text>" (or the transport error) and returns CTL_FAIL. */
int ctl_admin_json(const ctl_admin *a, const char *what, const char *method, const char *path,
                      const json_t *body, json_t **out)
{
    *out = NULL;
    char *text = NULL;
    if (body && !(text = json_dumps(body, JSON_COMPACT)))
        return ctl_fail(what, "out of memory");
    ctl_resp r;
    char err[512];
    int rc = ctl_http_call(a, method, path, text, &r, err, sizeof err);
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
            snprintf(snippet, sizeof snippet, "%s", ctl_buf_str(&r.body));
            snippet[strcspn(snippet, "\r\n")] = '\0';
            msg = snippet[0] ? snippet : "(no body)";
        }
        const char *hint = r.status == 401 ? " (check --token or GATEWAY_ADMIN_TOKEN)" : "";
        ctl_fail(what, "HTTP %d%s%s: %s%s", r.status, r.reason[0] ? " " : "", r.reason, msg,
                 hint);
        json_decref(doc);
        ctl_buf_free(&r.body);
        return CTL_FAIL;
    }
    if (!doc) {
        ctl_fail(what, "HTTP %d but the body is not JSON: %s (line %d)", r.status, jerr.text,
                 jerr.line);
        ctl_buf_free(&r.body);
        return CTL_FAIL;
    }
    ctl_buf_free(&r.body);
    *out = doc;
    return CTL_OK;
}
