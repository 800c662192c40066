/* cache_policy.c — Cache-Control and friends for the user cache (see cache_policy.h). */
#include "composers/cache_policy.h"

#include <string.h>
#include <strings.h>
#include <time.h>

const char *const cmp_kept_headers[] = {
    "Cache-Control", "Content-Type", "Content-Encoding", "Content-Language", "ETag",
    "Last-Modified", "Expires", "Location", "Vary", "Retry-After", "WWW-Authenticate",
    "Set-Cookie", NULL,
};

#define DELTA_MAX 2147483648LL /* RFC 9111 1.2.2: a larger delta-seconds is 2^31 */

typedef struct span {
    const char *p;
    size_t n;
} span;

static int ieq(span s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && strncasecmp(s.p, lit, n) == 0;
}

static int is_ows(char c)
{
    return c == ' ' || c == '\t';
}

static int is_tchar(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* The next line of a header block: its name and value (OWS trimmed). Returns 0 at the end
 * or at a malformed line (no CRLF, no colon). */
static int next_line(const char **at, const char *end, span *name, span *value)
{
    const char *p = *at;
    if (p >= end)
        return 0;
    const char *eol = NULL;
    for (const char *q = p; q + 1 < end; q++)
        if (q[0] == '\r' && q[1] == '\n') {
            eol = q;
            break;
        }
    if (!eol)
        return 0;
    const char *colon = memchr(p, ':', (size_t)(eol - p));
    if (!colon)
        return 0;
    *name = (span){ p, (size_t)(colon - p) };
    const char *v = colon + 1, *ve = eol;
    while (v < ve && is_ows(*v))
        v++;
    while (ve > v && is_ows(ve[-1]))
        ve--;
    *value = (span){ v, (size_t)(ve - v) };
    *at = eol + 2;
    return 1;
}

/* delta-seconds, token or quoted; -1 when malformed. */
static int64_t delta_seconds(span v)
{
    if (v.n >= 2 && v.p[0] == '"' && v.p[v.n - 1] == '"')
        v = (span){ v.p + 1, v.n - 2 };
    if (v.n == 0)
        return -1;
    int64_t x = 0;
    for (size_t i = 0; i < v.n; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return -1;
        if (x < DELTA_MAX)
            x = x * 10 + (v.p[i] - '0');
    }
    return x < DELTA_MAX ? x : DELTA_MAX;
}

static void take_min(int64_t *slot, int64_t v)
{
    if (v < 0)
        v = 0; /* malformed: stale */
    if (*slot < 0 || v < *slot)
        *slot = v;
}

/* An HTTP-date (RFC 9110 5.6.7: IMF-fixdate, or the obsolete RFC 850 and asctime forms) as
 * seconds since the epoch; 0 for anything else (which counts as a time in the past). */
static int64_t http_date(span v)
{
    static const char *const forms[] = { "%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT",
                                         "%a %b %e %H:%M:%S %Y" };
    char buf[64];
    if (v.n == 0 || v.n >= sizeof buf)
        return 0;
    memcpy(buf, v.p, v.n);
    buf[v.n] = '\0';
    for (size_t i = 0; i < sizeof forms / sizeof *forms; i++) {
        struct tm tm;
        memset(&tm, 0, sizeof tm);
        const char *end = strptime(buf, forms[i], &tm);
        if (end && *end == '\0') {
            time_t t = timegm(&tm);
            return t > 0 ? (int64_t)t : 0;
        }
    }
    return 0;
}

/* One Cache-Control field value: directives separated by commas; a value is a token or a
 * quoted-string (in which commas do not separate). */
static void parse_cache_control(span v, cmp_cache_policy *out)
{
    size_t i = 0;
    while (i < v.n) {
        while (i < v.n && (is_ows(v.p[i]) || v.p[i] == ','))
            i++;
        size_t ns = i;
        while (i < v.n && is_tchar((unsigned char)v.p[i]))
            i++;
        span name = { v.p + ns, i - ns };
        span val = { NULL, 0 };
        int has_val = 0;
        while (i < v.n && is_ows(v.p[i]))
            i++;
        if (i < v.n && v.p[i] == '=') {
            has_val = 1;
            i++;
            while (i < v.n && is_ows(v.p[i]))
                i++;
            size_t vs = i;
            if (i < v.n && v.p[i] == '"') {
                for (i++; i < v.n && v.p[i] != '"'; i++)
                    if (v.p[i] == '\\' && i + 1 < v.n)
                        i++;
                if (i < v.n)
                    i++; /* the closing quote */
            } else {
                while (i < v.n && v.p[i] != ',' && !is_ows(v.p[i]))
                    i++;
            }
            val = (span){ v.p + vs, i - vs };
        }
        /* skip whatever is left of a malformed directive, up to the next comma */
        int quoted = 0;
        while (i < v.n && (quoted || v.p[i] != ',')) {
            if (v.p[i] == '"')
                quoted = !quoted;
            i++;
        }
        if (ieq(name, "no-store"))
            out->no_store = 1;
        else if (ieq(name, "private"))
            out->private_ = 1;
        else if (ieq(name, "no-cache"))
            out->no_cache = 1;
        else if (ieq(name, "max-age"))
            take_min(&out->max_age, has_val ? delta_seconds(val) : -1);
        else if (ieq(name, "s-maxage"))
            take_min(&out->s_maxage, has_val ? delta_seconds(val) : -1);
    }
}

void cmp_cache_policy_parse(const char *headers, size_t n, cmp_cache_policy *out)
{
    memset(out, 0, sizeof *out);
    out->max_age = out->s_maxage = out->expires = -1;
    const char *at = headers, *end = headers ? headers + n : NULL;
    span name, value;
    while (headers && next_line(&at, end, &name, &value)) {
        if (ieq(name, "Cache-Control"))
            parse_cache_control(value, out);
        else if (ieq(name, "Set-Cookie"))
            out->set_cookie = 1;
        else if (ieq(name, "Expires")) {
            int64_t t = http_date(value);
            if (out->expires < 0 || t < out->expires)
                out->expires = t;
        }
        else if (ieq(name, "Vary")) {
            /* "*" as one member of the list */
            for (size_t i = 0; i < value.n; i++) {
                if (value.p[i] != '*')
                    continue;
                size_t a = i, b = i + 1;
                while (a > 0 && is_ows(value.p[a - 1]))
                    a--;
                while (b < value.n && is_ows(value.p[b]))
                    b++;
                if ((a == 0 || value.p[a - 1] == ',') && (b == value.n || value.p[b] == ','))
                    out->vary_star = 1;
            }
        }
    }
}

uint32_t cmp_cache_policy_ttl(const cmp_cache_policy *p, uint32_t route_ttl_ms, int64_t now_s)
{
    if (p->no_store || p->private_ || p->set_cookie || p->vary_star || p->no_cache)
        return 0;
    int64_t secs = p->s_maxage >= 0 ? p->s_maxage : p->max_age;
    if (secs < 0 && p->expires >= 0)
        secs = p->expires > now_s ? p->expires - now_s : 0;
    if (secs >= 0 && (uint64_t)secs * 1000u < route_ttl_ms)
        return (uint32_t)(secs * 1000);
    return route_ttl_ms;
}

static int is_kept(span name)
{
    for (const char *const *k = cmp_kept_headers; *k; k++)
        if (ieq(name, *k))
            return 1;
    return 0;
}

int cmp_headers_valid(const char *headers, size_t n)
{
    if (n > 4096)
        return 0;
    size_t i = 0;
    while (i < n) {
        size_t ns = i;
        while (i < n && is_tchar((unsigned char)headers[i]))
            i++;
        if (i == ns || i >= n || headers[i] != ':' || !is_kept((span){ headers + ns, i - ns }))
            return 0;
        for (i++; i < n && headers[i] != '\r'; i++)
            if (headers[i] == '\n' || headers[i] == '\0')
                return 0;
        if (i + 1 >= n || headers[i + 1] != '\n')
            return 0;
        i += 2;
    }
    return 1;
}

int cmp_headers_has(const char *headers, size_t n, const char *name)
{
    const char *at = headers, *end = headers ? headers + n : NULL;
    span nm, v;
    while (headers && next_line(&at, end, &nm, &v))
        if (ieq(nm, name))
            return 1;
    return 0;
}

size_t cmp_headers_without(const char *headers, size_t n, const char *drop, char *out)
{
    const char *at = headers, *end = headers ? headers + n : NULL;
    size_t w = 0;
    span nm, v;
    while (headers) {
        const char *line = at;
        if (!next_line(&at, end, &nm, &v))
            break;
        if (ieq(nm, drop))
            continue;
        memcpy(out + w, line, (size_t)(at - line));
        w += (size_t)(at - line);
    }
    return w;
}
