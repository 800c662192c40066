/* matcher.h — internals of routes/ shared by its .c files, not part of the public API: the
 * table struct, the segment trie the routes compile into, and a small string-keyed hash map.
 *
 * The trie has one node per distinct pattern prefix. A node holds its literal children in a
 * hash map (lookup costs one hash of the segment, whatever the number of siblings), one
 * {param} child shared by every parameter name at that depth (names are read back from the
 * winning route's pattern), and two terminals: routes that end here and routes that end here
 * with "**". A terminal is indexed by method, so the routes of one terminal never overlap in
 * methods — that is the duplicate-pattern rule, checked as routes are added. */
#ifndef RT_MATCHER_H
#define RT_MATCHER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "routes/route_table.h"

#define RT_N_METHODS 8 /* one per RT_M_* bit */

/* Open-addressing map from a byte string to a non-NULL pointer. Keys are borrowed: they must
 * outlive the map (here they point into the table's own copy of each pattern). */
typedef struct rt__strmap_slot {
    const char *key;
    uint32_t len;
    uint32_t hash;
    void *val; /* NULL: empty slot */
} rt__strmap_slot;

typedef struct rt__strmap {
    rt__strmap_slot *slots;
    uint32_t cap; /* 0 or a power of two */
    uint32_t n;
} rt__strmap;

void *rt__strmap_get(const rt__strmap *m, const char *key, size_t len);
/* Adds KEY, which must not be present yet. Returns 0 or GW_ENOMEM. */
int rt__strmap_put(rt__strmap *m, const char *key, size_t len, void *val);
void rt__strmap_free(rt__strmap *m);

typedef struct rt__term {
    const rt_route *by_method[RT_N_METHODS];
} rt__term;

typedef struct rt__node {
    rt__strmap lits;      /* segment -> rt__node* */
    struct rt__node *param;
    rt__term *exact;      /* NULL when no route ends here */
    rt__term *rest;       /* NULL when no route with a final "**" ends here */
} rt__node;

struct rt_table {
    atomic_uint refs;
    uint64_t version;
    int n_routes;
    rt_route *routes;     /* owns every string it points to, except upstream names below */
    rt__node *root;
    char **upstreams;     /* the names given to parse (the seeds, 0..n_seed), then those the
                           * document's "upstreams" adds, each at its slot (upstreams.h);
                           * NULL: a hole. Policy fields point here */
    int n_upstreams;      /* the highest index used + 1 */
    int n_seed;
    int upstream_cap;
    struct rt_upstream_def **defs; /* parallel to upstreams; NULL: no definition known */
    const char *legacy;   /* legacy_upstream: upstreams[legacy_index], or "legacy" (static)
                           * when the document names none and no upstream is called that */
    int legacy_index;     /* -1: the legacy upstream is unknown (rollback fails) */
};

/* Adds route R, whose pattern is valid, to the trie under ROOT. Returns 0; GW_EINVAL when a
 * route with the same pattern shares a method with R (*conflict is set to it); GW_ENOMEM. */
int rt__matcher_add(rt__node *root, const rt_route *r, const rt_route **conflict);
void rt__node_free(rt__node *n);

/* The method's RT_M_* bit number; an unlisted method is RT_M_OTHER's. */
int rt__method_index(gw_slice method);
/* The name of RT_M_* bit number B ("GET" for 0), NULL for RT_M_OTHER's. */
const char *rt__method_name(int b);

/* Iterates over the '/'-separated segments of a path or pattern that starts with '/'.
 * "/" is the root and has no segment at all, unlike "/a/" whose segments are "a" and "". */
typedef struct rt__segs {
    const char *pos; /* the '/' before the next segment; == end when done */
    const char *end;
} rt__segs;

static inline rt__segs rt__segs_of(const char *p, size_t n)
{
    if (n == 1)
        return (rt__segs){ p + 1, p + 1 };
    return (rt__segs){ p, p + n };
}

/* Yields the next segment into *seg and returns 1, or returns 0 when there is none left. */
static inline int rt__segs_next(rt__segs *it, gw_slice *seg)
{
    if (it->pos >= it->end)
        return 0;
    const char *s = it->pos + 1;
    const char *e = memchr(s, '/', (size_t)(it->end - s));
    if (!e)
        e = it->end;
    *seg = (gw_slice){ s, (size_t)(e - s) };
    it->pos = e;
    return 1;
}

static inline int rt__seg_is_param(gw_slice s)
{
    return s.n >= 2 && s.p[0] == '{' && s.p[s.n - 1] == '}';
}

static inline int rt__seg_is_rest(gw_slice s)
{
    return s.n == 2 && s.p[0] == '*' && s.p[1] == '*';
}

/* Number of tables alive in the process, for the leak tests. */
int rt__tables_alive(void);
/* Copies of NAMES[0..n) (an array with a NULL after the last). 0 or GW_ENOMEM; either way
 * *n_out says how many were copied, for rt__names_free. */
int rt__names_dup(const char *const *names, int n, char ***out, int *n_out);
void rt__names_free(char **names, int n);
void rt__table_free(rt_table *t);
/* upstreams.c: the table's upstream list from the seed NAMES (with their gateway.json
 * definitions), and its release. */
int rt__table_upstreams_init(rt_table *t, const char *const *names, int n);
void rt__table_upstreams_free(rt_table *t);

#endif
