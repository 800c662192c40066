/* fuzz_composer.c — composition specs (composers/spec.h) and leg URL templates
 * (composers/template.h). Input: SPEC '\0' LEG-ANSWER '\0' PATH, each part optional:
 * cmp_spec_parse on SPEC; for a spec that parsed, cmp_spec_match on PATH and, with the
 * match's parameters (or none) and LEG-ANSWER (any JSON, jansson-parsed) as every leg's
 * answer, cmp_expand of every leg URL into a roomy and a tiny buffer, cmp_template_deps of
 * every URL, and PATH itself used as a template. Expansions are percent-encoded: a value
 * must never add a '?', a '#' or a path segment. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "composers/spec.h"
#include "composers/template.h"

static void check_expand(const char *tmpl, const cmp_params *p, const cmp_composition *c,
                         json_t *const *legs)
{
    char out[4096], tiny[8];
    int n = cmp_expand(tmpl, p, c->legs, legs, c->n_legs, out, sizeof out);
    if (n >= 0) {
        if ((size_t)n >= sizeof out || strlen(out) != (size_t)n)
            __builtin_trap();
        /* what the template itself does not contain, an expansion may not add */
        if ((strchr(out, '?') && !strchr(tmpl, '?')) || (strchr(out, '#') && !strchr(tmpl, '#')))
            __builtin_trap();
    }
    cmp_expand(tmpl, p, c->legs, legs, c->n_legs, tiny, sizeof tiny);
    const char *unknown = NULL;
    cmp_template_deps(tmpl, c->legs, c->n_legs, &unknown);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    const char *z1 = memchr(p, '\0', size);
    size_t spec_len = z1 ? (size_t)(z1 - p) : size;
    const char *ans = z1 ? z1 + 1 : end;
    const char *z2 = memchr(ans, '\0', (size_t)(end - ans));
    size_t ans_len = (size_t)((z2 ? z2 : end) - ans);
    const char *path = z2 ? z2 + 1 : end;
    size_t path_len = (size_t)(end - path);

    char err[512];
    cmp_spec *s = cmp_spec_parse(p, spec_len, "fuzz", err, sizeof err);
    if (s == NULL) {
        if (memchr(err, '\0', sizeof err) == NULL)
            __builtin_trap();
        return 0;
    }
    json_t *answer = json_loadb(ans, ans_len, JSON_DECODE_ANY, NULL);
    json_t *legs[CMP_MAX_LEGS];
    for (int i = 0; i < CMP_MAX_LEGS; i++)
        legs[i] = (i & 1) ? NULL : answer; /* some legs without an answer */

    char *tmpl = strndup(path, path_len); /* up to the first NUL */
    cmp_params params;
    const cmp_composition *m = cmp_spec_match(s, (gw_slice){ "GET", 3 },
                                              (gw_slice){ path, path_len }, &params);
    if (m && (params.n < 0 || params.n > CMP_MAX_PARAMS))
        __builtin_trap();
    cmp_params none = { 0 };
    for (int ci = 0; ci < s->n; ci++) {
        const cmp_composition *c = &s->comps[ci];
        const cmp_params *pp = c == m ? &params : &none;
        for (int li = 0; li < c->n_legs; li++)
            check_expand(c->legs[li].url, pp, c, legs);
        if (tmpl)
            check_expand(tmpl, pp, c, legs);
    }
    cmp_spec_match(s, (gw_slice){ "POST", 4 }, (gw_slice){ path, path_len }, &params);
    free(tmpl);
    json_decref(answer);
    cmp_spec_free(s);
    return 0;
}
