/* matcher.c — the compiled form of a route table: a segment trie (see matcher.h) and the
 * lookup that walks it. Lookup tries, at each segment, the literal child, then the {param}
 * child, then the node's "**" routes, backtracking when a branch finds no route for the
 * method: that order is exactly "most specific wins, compared from the left". Every trie node
 * sits at one depth and so meets one segment of the path, so a lookup visits each node at
 * most once; in practice it visits about one node per segment. Lookup never allocates. */
#include <stdlib.h>
#include <string.h>

#include "http/gw_errors.h"
#include "routes/matcher.h"

/* ---- string map ------------------------------------------------------------------------ */

/* FNV-1a: short keys (path segments), good spread, no setup. */
static uint32_t hash_bytes(const char *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 16777619u;
    }
    return h;
}

/* The slot holding KEY, or the empty slot where it would go. The map is never full. */
static rt__strmap_slot *find_slot(const rt__strmap *m, const char *key, size_t len,
                                  uint32_t h)
{
    uint32_t mask = m->cap - 1;
    for (uint32_t i = h & mask;; i = (i + 1) & mask) {
        rt__strmap_slot *s = &m->slots[i];
        if (!s->val || (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0))
            return s;
    }
}

void *rt__strmap_get(const rt__strmap *m, const char *key, size_t len)
{
    if (m->cap == 0)
        return NULL;
    return find_slot(m, key, len, hash_bytes(key, len))->val;
}

static int grow(rt__strmap *m)
{
    uint32_t cap = m->cap ? m->cap * 2 : 4;
    rt__strmap_slot *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return GW_ENOMEM;
    rt__strmap bigger = { slots, cap, m->n };
    for (uint32_t i = 0; i < m->cap; i++) {
        if (m->slots[i].val)
            *find_slot(&bigger, m->slots[i].key, m->slots[i].len, m->slots[i].hash) =
                m->slots[i];
    }
    free(m->slots);
    *m = bigger;
    return 0;
}

int rt__strmap_put(rt__strmap *m, const char *key, size_t len, void *val)
{
    /* Kept at most half full so probe runs stay short. */
    if ((m->n + 1) * 2 > m->cap && grow(m) != 0)
        return GW_ENOMEM;
    uint32_t h = hash_bytes(key, len);
    *find_slot(m, key, len, h) = (rt__strmap_slot){ key, (uint32_t)len, h, val };
    m->n++;
    return 0;
}

void rt__strmap_free(rt__strmap *m)
{
    free(m->slots);
    *m = (rt__strmap){ 0 };
}

/* ---- building ---------------------------------------------------------------------------- */

static const char *const method_names[RT_N_METHODS - 1] = {
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"
};

int rt__method_index(gw_slice method)
{
    for (int i = 0; i < RT_N_METHODS - 1; i++) {
        if (gw_slice_eq(method, method_names[i]))
            return i;
    }
    return RT_N_METHODS - 1;
}

const char *rt__method_name(int b)
{
    return b >= 0 && b < RT_N_METHODS - 1 ? method_names[b] : NULL;
}

static rt__node *child_for(rt__node *n, gw_slice seg)
{
    if (rt__seg_is_param(seg)) {
        if (!n->param)
            n->param = calloc(1, sizeof(*n->param));
        return n->param;
    }
    rt__node *c = rt__strmap_get(&n->lits, seg.p, seg.n);
    if (c)
        return c;
    c = calloc(1, sizeof(*c));
    if (c && rt__strmap_put(&n->lits, seg.p, seg.n, c) != 0) {
        free(c);
        c = NULL;
    }
    return c;
}

int rt__matcher_add(rt__node *root, const rt_route *r, const rt_route **conflict)
{
    rt__node *n = root;
    rt__term **term = NULL;
    rt__segs it = rt__segs_of(r->path, strlen(r->path));
    gw_slice seg;
    while (rt__segs_next(&it, &seg)) {
        if (rt__seg_is_rest(seg)) {
            term = &n->rest; /* validation made sure "**" is last */
            break;
        }
        n = child_for(n, seg);
        if (!n)
            return GW_ENOMEM;
    }
    if (!term)
        term = &n->exact;
    if (!*term && !(*term = calloc(1, sizeof(**term))))
        return GW_ENOMEM;

    for (int b = 0; b < RT_N_METHODS; b++) {
        if ((r->methods & (1u << b)) && (*term)->by_method[b]) {
            *conflict = (*term)->by_method[b];
            return GW_EINVAL;
        }
    }
    for (int b = 0; b < RT_N_METHODS; b++) {
        if (r->methods & (1u << b))
            (*term)->by_method[b] = r;
    }
    return 0;
}

void rt__node_free(rt__node *n)
{
    if (!n)
        return;
    for (uint32_t i = 0; i < n->lits.cap; i++)
        rt__node_free(n->lits.slots[i].val);
    rt__strmap_free(&n->lits);
    rt__node_free(n->param);
    free(n->exact);
    free(n->rest);
    free(n);
}

/* ---- lookup ------------------------------------------------------------------------------ */

static const rt_route *match_rest(const rt__node *n, const char *pos, const char *end, int mi,
                                  rt_match *m)
{
    const rt_route *r = n->rest ? n->rest->by_method[mi] : NULL;
    if (r) {
        m->has_rest = 1;
        /* pos is the '/' that the "**" match starts at, or end when it matched nothing. */
        m->rest = pos < end ? (gw_slice){ pos + 1, (size_t)(end - pos - 1) }
                            : (gw_slice){ end, 0 };
    }
    return r;
}

/* The best route under N for the rest of the path, it.pos..it.end. Param values found on
 * the way are pushed on m->param_values and popped again when their branch fails. */
static const rt_route *match_node(const rt__node *n, rt__segs it, int mi, rt_match *m)
{
    const char *pos = it.pos;
    gw_slice seg;
    const rt_route *r;

    if (!rt__segs_next(&it, &seg)) {
        r = n->exact ? n->exact->by_method[mi] : NULL;
        return r ? r : match_rest(n, pos, it.end, mi, m);
    }
    /* An empty segment ("/a/" or "/a//b") only ever matches a "**". */
    if (seg.n > 0) {
        const rt__node *c = rt__strmap_get(&n->lits, seg.p, seg.n);
        if (c && (r = match_node(c, it, mi, m)))
            return r;
        if (n->param && m->n_params < RT_MAX_PARAMS) {
            m->param_values[m->n_params++] = seg;
            if ((r = match_node(n->param, it, mi, m)))
                return r;
            m->n_params--;
        }
    }
    return match_rest(n, pos, it.end, mi, m);
}

int rt_table_match(const rt_table *t, gw_slice method, gw_slice path, rt_match *m)
{
    m->route = NULL;
    m->n_params = 0;
    m->has_rest = 0;
    m->rest = (gw_slice){ NULL, 0 };
    if (!t || path.n == 0 || path.p[0] != '/')
        return -1;

    const rt_route *r = match_node(t->root, rt__segs_of(path.p, path.n),
                                   rt__method_index(method), m);
    if (!r) {
        m->n_params = 0;
        return -1;
    }
    m->route = r;

    /* The trie shares one {param} child among all names, so the names come from the route:
     * its param segments, in order, are the ones the values were captured for. */
    int k = 0;
    rt__segs it = rt__segs_of(r->path, strlen(r->path));
    gw_slice seg;
    while (k < m->n_params && rt__segs_next(&it, &seg)) {
        if (rt__seg_is_param(seg))
            m->param_names[k++] = (gw_slice){ seg.p + 1, seg.n - 2 };
    }
    return 0;
}
