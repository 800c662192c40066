/* doc_cache.c — rendered demo documents, memoised.
 *
 * The demo documents are a pure function of (kind, id), so a rendered one can be served
 * again as is. Without this, building a user with jansson and printf costs mockd more CPU
 * per request than a proxy spends forwarding it, which would blur every proxy comparison in
 * `make bench`. Direct-mapped: a collision just renders again and replaces the slot. */
#include <stdlib.h>
#include <string.h>

#include "tests/mockd/mockd.h"

#define MK_DOC_SLOTS 4096 /* power of two */

typedef struct mk_doc {
    int kind;
    size_t id_n, body_n;
    char *id, *body; /* one allocation: id, then body, both NUL-terminated */
} mk_doc;

static mk_doc slots[MK_DOC_SLOTS];

static json_t *render(int kind, const char *id, size_t n)
{
    switch (kind) {
    case MK_DOC_USER: return mk_user_json(id, n);
    case MK_DOC_ORDER: return mk_order_json(id, n);
    case MK_DOC_SHIPMENT: return mk_shipment_json(id, n);
    }
    return NULL;
}

int mk_doc_get(int kind, const char *id, size_t n, const char **body, size_t *body_n)
{
    uint64_t h = mk_fnv1a64(MK_FNV_INIT + (uint64_t)kind, id, n);
    mk_doc *d = &slots[h & (MK_DOC_SLOTS - 1)];
    if (!(d->id && d->kind == kind && d->id_n == n && memcmp(d->id, id, n) == 0)) {
        json_t *doc = render(kind, id, n);
        char *s = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
        json_decref(doc);
        if (!s) return -1;
        size_t sn = strlen(s);
        char *mem = malloc(n + 1 + sn + 1);
        if (!mem) {
            free(s);
            return -1;
        }
        memcpy(mem, id, n);
        mem[n] = '\0';
        memcpy(mem + n + 1, s, sn + 1);
        free(s);
        free(d->id);
        *d = (mk_doc){ .kind = kind, .id_n = n, .body_n = sn, .id = mem, .body = mem + n + 1 };
    }
    *body = d->body;
    *body_n = d->body_n;
    return 0;
}

void mk_doc_cache_free(void)
{
    for (size_t i = 0; i < MK_DOC_SLOTS; i++) free(slots[i].id);
    memset(slots, 0, sizeof slots);
}
