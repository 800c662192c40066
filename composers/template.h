/* template.h — leg URL templates: "/api/users/{order.user_id}". */
#ifndef CMP_TEMPLATE_H
#define CMP_TEMPLATE_H

#include <jansson.h>
#include <stddef.h>

#include "composers/spec.h"

/* Looks a {name} up: a composition parameter, or "leg.field.sub" in a finished leg's JSON
 * (legs[i] may be NULL for legs without an answer). Returns the number of bytes written to
 * out (percent-encoded, so a value cannot add path segments or a query), or -1 when the
 * reference cannot be resolved (missing field, not a string or number) or out is too small. */
int cmp_expand(const char *tmpl, const cmp_params *params, const cmp_leg_spec *specs,
               json_t *const *legs, int n_legs, char *out, size_t outlen);

/* Which legs TMPL refers to ({leg.x}): a bit mask over specs[0..n). Unknown names with a dot
 * set *unknown to the first one's start. */
unsigned cmp_template_deps(const char *tmpl, const cmp_leg_spec *specs, int n, const char **unknown);

#endif
