/* fuzz_json_check.c — the JSON validator (composers/json_check.h), differential against
 * jansson: what jansson accepts (nested at most 256 deep) cmp_json_valid must accept, and
 * what cmp_json_valid accepts jansson must accept too, except where jansson is stricter than
 * RFC 8259 on purpose (numbers it cannot represent, lone surrogate escapes, invalid UTF-8,
 * its own depth limit). Legs are spliced into answers on cmp_json_valid's word alone, so an
 * invalid document accepted here would reach clients as broken JSON. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "composers/json_check.h"

static int depth(const uint8_t *p, size_t n)
{
    int d = 0, max = 0, in_str = 0;
    for (size_t i = 0; i < n; i++) {
        if (in_str) {
            if (p[i] == '\\')
                i++;
            else if (p[i] == '"')
                in_str = 0;
        } else if (p[i] == '"') {
            in_str = 1;
        } else if (p[i] == '[' || p[i] == '{') {
            if (++d > max)
                max = d;
        } else if (p[i] == ']' || p[i] == '}') {
            d--;
        }
    }
    return max;
}

static int jansson_stricter(const char *why)
{
    static const char *const ok[] = { "overflow", "too big", "invalid Unicode '",
                                      "unable to decode byte", "maximum parsing depth",
                                      "NUL byte in object key" };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (strstr(why, ok[i]))
            return 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int ours = cmp_json_valid((const char *)data, size);
    json_error_t e;
    json_t *j = json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    /* a raw NUL is valid nowhere in JSON, yet jansson 2.14 accepts a number followed by one
     * ("2\0": found by this driver): there jansson is the lax one */
    if (j && !ours && depth(data, size) <= 256 && !memchr(data, '\0', size)) {
        fprintf(stderr, "cmp_json_valid refused a document jansson accepts\n");
        __builtin_trap();
    }
    if (!j && ours && !jansson_stricter(e.text)) {
        fprintf(stderr, "cmp_json_valid accepted a document jansson refuses: %s\n", e.text);
        __builtin_trap();
    }
    json_decref(j);
    return 0;
}
