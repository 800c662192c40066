/* edge.c — strict request-line, field-name, Host, Content-Length and chunk-line checks
 * (see edge.h). */
#include "http/edge.h"

#include <string.h>
#include <strings.h>

/* tchar (RFC 9110 §5.6.2): "!#$%&'*+-.^_`|~", DIGIT, ALPHA. */
static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static int is_alpha(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

static int is_hex(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

int gw_edge_is_token(gw_slice s)
{
    if (s.n == 0)
        return 0;
    for (size_t i = 0; i < s.n; i++)
        if (!is_tchar((unsigned char)s.p[i]))
            return 0;
    return 1;
}

/* Splits "host[:port]" at its port colon (the one after an IP-literal's ']'). */
static void split_port(gw_slice s, gw_slice *host, gw_slice *port, int *has_port)
{
    size_t i = 0;
    if (s.n && s.p[0] == '[') {
        const char *rb = memchr(s.p, ']', s.n);
        i = rb ? (size_t)(rb - s.p) + 1 : s.n;
    } else {
        const char *colon = memchr(s.p, ':', s.n);
        i = colon ? (size_t)(colon - s.p) : s.n;
    }
    *host = (gw_slice){ s.p, i < s.n ? i : s.n };
    *has_port = i < s.n && s.p[i] == ':';
    *port = *has_port ? (gw_slice){ s.p + i + 1, s.n - i - 1 } : (gw_slice){ s.p + s.n, 0 };
}

int gw_edge_host_valid(gw_slice s)
{
    if (s.n == 0)
        return 1;
    gw_slice host, port;
    int has_port;
    split_port(s, &host, &port, &has_port);
    if (host.n == 0)
        return 0;
    if (host.p[0] == '[') {
        /* IP-literal: IPv6address (or IPvFuture: hex, dots and colons cover what we accept) */
        if (host.n < 3 || host.p[host.n - 1] != ']')
            return 0;
        for (size_t i = 1; i + 1 < host.n; i++) {
            unsigned char c = (unsigned char)host.p[i];
            if (!is_hex(c) && c != ':' && c != '.')
                return 0;
        }
    } else {
        /* reg-name (and IPv4address) of unreserved characters: a sub-delim such as ',' is
         * how a Host list or an injected second host starts, so none is accepted */
        for (size_t i = 0; i < host.n; i++) {
            unsigned char c = (unsigned char)host.p[i];
            if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '.' && c != '_' && c != '~')
                return 0;
        }
    }
    if (!has_port && host.n != s.n)
        return 0; /* bytes after an IP-literal that are not a port */
    if (has_port) {
        if (port.n == 0 || port.n > 5)
            return 0;
        unsigned v = 0;
        for (size_t i = 0; i < port.n; i++) {
            if (!is_digit((unsigned char)port.p[i]))
                return 0;
            v = v * 10 + (unsigned)(port.p[i] - '0');
        }
        if (v > 65535)
            return 0;
    }
    return 1;
}

int gw_edge_host_same(gw_slice a, gw_slice b)
{
    gw_slice ha, pa, hb, pb;
    int xa, xb;
    split_port(a, &ha, &pa, &xa);
    split_port(b, &hb, &pb, &xb);
    return gw_slice_ieq_slice(ha, hb) && pa.n == pb.n && memcmp(pa.p, pb.p, pa.n) == 0;
}

int gw_edge_content_length(gw_slice s, uint64_t *out)
{
    if (s.n == 0)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < s.n; i++) {
        if (!is_digit((unsigned char)s.p[i]))
            return -1;
        unsigned d = (unsigned)(s.p[i] - '0');
        if (v > (UINT64_C(0x7fffffffffffffff) - d) / 10)
            return -1; /* more than INT64_MAX: it would wrap negative as an int64_t */
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* "http" or "https", any case, then "://". Returns the scheme's length + 3, or 0. */
static size_t absolute_prefix(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && (is_alpha((unsigned char)p[i]) || is_digit((unsigned char)p[i]) ||
                     p[i] == '+' || p[i] == '-' || p[i] == '.'))
        i++;
    if (i == 0 || n - i < 3 || memcmp(p + i, "://", 3) != 0)
        return 0;
    if (!((i == 4 && strncasecmp(p, "http", 4) == 0) || (i == 5 && strncasecmp(p, "https", 5) == 0)))
        return 0;
    return i + 3;
}

int gw_edge_request_line(char *line, size_t n, size_t max_uri, gw_reqline *out,
                         const char **why)
{
    memset(out, 0, sizeof *out);
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)line[i]))
        i++;
    if (i == 0 || i == n || line[i] != ' ') {
        *why = "malformed method in request line";
        return 400;
    }
    out->method = (gw_slice){ line, i };
    i++;
    size_t t0 = i;
    while (i < n && line[i] != ' ') {
        unsigned char c = (unsigned char)line[i];
        if (c <= 0x20 || c >= 0x7f) {
            *why = "invalid character in request target";
            return 400;
        }
        i++;
    }
    size_t tn = i - t0;
    if (tn == 0) {
        *why = "more than one space in the request line"; /* or an empty target */
        return 400;
    }
    if (max_uri && tn > max_uri) {
        *why = "request URI too long";
        return 414;
    }
    if (i == n) {
        *why = "no HTTP version in request line";
        return 400;
    }
    i++; /* the one SP */
    const char *v = line + i;
    size_t vn = n - i;
    if (vn && v[0] == ' ') {
        *why = "more than one space in the request line";
        return 400;
    }
    if (vn != 8 || memcmp(v, "HTTP/", 5) != 0 || !is_digit((unsigned char)v[5]) || v[6] != '.' ||
        !is_digit((unsigned char)v[7])) {
        *why = "malformed HTTP version in request line";
        return 400;
    }
    out->major = v[5] - '0';
    out->minor = v[7] - '0';
    if (out->major != 1) {
        *why = "HTTP version not supported";
        return 505;
    }
    char *t = line + t0;
    if (t[0] == '/') {
        out->origin = (gw_slice){ t, tn };
        return 0;
    }
    if (tn == 1 && t[0] == '*') {
        if (!gw_slice_eq(out->method, "OPTIONS")) {
            *why = "asterisk-form target is only for OPTIONS";
            return 400;
        }
        out->asterisk = 1;
        out->origin = (gw_slice){ t, 1 };
        return 0;
    }
    size_t pre = absolute_prefix(t, tn);
    if (!pre) {
        *why = "request target must be an absolute path, an absolute URI or *";
        return 400;
    }
    size_t a = pre;
    while (a < tn && t[a] != '/' && t[a] != '?' && t[a] != '#')
        a++;
    out->authority = (gw_slice){ t + pre, a - pre };
    if (out->authority.n == 0 || !gw_edge_host_valid(out->authority)) {
        *why = "invalid authority in absolute-form target";
        return 400;
    }
    if (a == tn) {
        out->origin = GW_SLICE_LIT("/");
    } else if (t[a] == '/') {
        out->origin = (gw_slice){ t + a, tn - a };
    } else {
        /* "http://h?q": the path is "/"; move the authority one byte left (over the
         * scheme's second '/') so "/?q" is contiguous */
        char *auth = t + pre;
        memmove(auth - 1, auth, out->authority.n);
        out->authority.p = auth - 1;
        t[a - 1] = '/';
        out->origin = (gw_slice){ t + a - 1, tn - a + 1 };
    }
    return 0;
}

static int is_ws(char c) { return c == ' ' || c == '\t'; }

/* chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ) over
 * P[0..N). Returns 1 when valid. */
static int chunk_ext_valid(const char *p, size_t n)
{
    size_t i = 0;
#define SKIP_BWS() while (i < n && is_ws(p[i])) i++
    while (i < n) {
        SKIP_BWS();
        if (i == n || p[i] != ';')
            return 0;
        i++;
        SKIP_BWS();
        size_t t = i;
        while (i < n && is_tchar((unsigned char)p[i]))
            i++;
        if (i == t)
            return 0;
        size_t save = i;
        SKIP_BWS();
        if (i < n && p[i] == '=') {
            i++;
            SKIP_BWS();
            if (i < n && p[i] == '"') {
                i++;
                while (i < n && p[i] != '"') {
                    unsigned char c = (unsigned char)p[i];
                    if (c == '\\') {
                        if (++i == n)
                            return 0;
                        c = (unsigned char)p[i];
                        if (c != '\t' && (c < 0x20 || c == 0x7f))
                            return 0;
                    } else if (c != '\t' && (c < 0x20 || c == 0x7f)) {
                        return 0;
                    }
                    i++;
                }
                if (i == n)
                    return 0;
                i++;
            } else {
                size_t v = i;
                while (i < n && is_tchar((unsigned char)p[i]))
                    i++;
                if (i == v)
                    return 0;
            }
        } else {
            i = save; /* the whitespace belongs to the next ";" */
        }
    }
#undef SKIP_BWS
    return 1;
}

int gw_edge_chunk_line(char *p, size_t n, size_t max)
{
    size_t lim = n < max ? n : max;
    const char *lf = memchr(p, '\n', lim);
    if (!lf)
        return n >= max ? -1 : 0;
    size_t len = (size_t)(lf - p);
    if (len == 0 || p[len - 1] != '\r')
        return 1; /* llhttp refuses it */
    len--;
    size_t h = 0;
    while (h < len && is_hex((unsigned char)p[h]))
        h++;
    if (h == 0 || h == len)
        return 1;
    if (!chunk_ext_valid(p + h, len - h))
        return -2;
    /* llhttp 8.1 takes no whitespace and no quoted-pair in an extension, and it was checked
     * here; extensions are not forwarded (the body is re-framed), so keep the size and the
     * line length: leading zeros, the digits, then ";x" */
    memmove(p + len - 2 - h, p, h);
    memset(p, '0', len - 2 - h);
    p[len - 2] = ';';
    p[len - 1] = 'x';
    return 1;
}
