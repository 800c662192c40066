/* json_check.c — a non-allocating JSON validator (see json_check.h). */
#include "composers/json_check.h"

#define MAX_DEPTH 256

typedef struct cur {
    const unsigned char *p, *end;
} cur;

static void ws(cur *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int lit(cur *c, const char *s)
{
    for (; *s; s++, c->p++)
        if (c->p >= c->end || *c->p != (unsigned char)*s)
            return 0;
    return 1;
}

static int hex(unsigned char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/* A string; UTF-8 is passed through unchecked (the upstream's bytes are forwarded as is). */
static int string(cur *c)
{
    if (c->p >= c->end || *c->p != '"')
        return 0;
    c->p++;
    while (c->p < c->end) {
        unsigned char ch = *c->p++;
        if (ch == '"')
            return 1;
        if (ch < 0x20)
            return 0;
        if (ch == '\\') {
            if (c->p >= c->end)
                return 0;
            ch = *c->p++;
            if (ch == 'u') {
                for (int i = 0; i < 4; i++, c->p++)
                    if (c->p >= c->end || !hex(*c->p))
                        return 0;
            } else if (!(ch == '"' || ch == '\\' || ch == '/' || ch == 'b' || ch == 'f' ||
                         ch == 'n' || ch == 'r' || ch == 't')) {
                return 0;
            }
        }
    }
    return 0;
}

static int digits(cur *c)
{
    const unsigned char *s = c->p;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
        c->p++;
    return c->p > s;
}

static int number(cur *c)
{
    if (c->p < c->end && *c->p == '-')
        c->p++;
    if (c->p < c->end && *c->p == '0')
        c->p++;
    else if (!digits(c))
        return 0;
    if (c->p < c->end && *c->p == '.') {
        c->p++;
        if (!digits(c))
            return 0;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
            c->p++;
        if (!digits(c))
            return 0;
    }
    return 1;
}

static int value(cur *c, int depth)
{
    ws(c);
    if (c->p >= c->end)
        return 0;
    switch (*c->p) {
    case '{':
        if (depth >= MAX_DEPTH)
            return 0;
        c->p++;
        ws(c);
        if (c->p < c->end && *c->p == '}') {
            c->p++;
            return 1;
        }
        for (;;) {
            ws(c);
            if (!string(c))
                return 0;
            ws(c);
            if (c->p >= c->end || *c->p++ != ':')
                return 0;
            if (!value(c, depth + 1))
                return 0;
            ws(c);
            if (c->p >= c->end)
                return 0;
            if (*c->p == '}') {
                c->p++;
                return 1;
            }
            if (*c->p++ != ',')
                return 0;
        }
    case '[':
        if (depth >= MAX_DEPTH)
            return 0;
        c->p++;
        ws(c);
        if (c->p < c->end && *c->p == ']') {
            c->p++;
            return 1;
        }
        for (;;) {
            if (!value(c, depth + 1))
                return 0;
            ws(c);
            if (c->p >= c->end)
                return 0;
            if (*c->p == ']') {
                c->p++;
                return 1;
            }
            if (*c->p++ != ',')
                return 0;
        }
    case '"':
        return string(c);
    case 't':
        return lit(c, "true");
    case 'f':
        return lit(c, "false");
    case 'n':
        return lit(c, "null");
    default:
        return number(c);
    }
}

int cmp_json_valid(const char *p, size_t n)
{
    cur c = { (const unsigned char *)p, (const unsigned char *)p + n };
    if (!p || !value(&c, 0))
        return 0;
    ws(&c);
    return c.p == c.end;
}
