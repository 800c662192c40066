/* data.c — the demo world, derived from ids alone: the same id gives the same document on
 * every instance and every run, so a shadow comparison of /api/users/{id} with /users/{id}
 * is equal and a composition test can predict every field. An order's user_id and
 * shipping address are those of a user derived from the order id, so composed documents
 * are consistent with what /users/{user_id} answers. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/mockd/mockd.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

uint64_t mk_fnv1a64(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A generator seeded from salt and id: each document kind draws from its own sequence. */
static uint64_t seed_of(const char *salt, const char *id, size_t n)
{
    return mk_fnv1a64(mk_fnv1a64(MK_FNV_INIT, salt, strlen(salt)), id, n);
}

static uint32_t pick(uint64_t *s, uint32_t n) { return (uint32_t)(splitmix64(s) % n); }

void mk_uuid(const char *salt, const char *id, size_t n, char out[37])
{
    uint64_t s = seed_of(salt, id, n);
    uint64_t a = splitmix64(&s), b = splitmix64(&s);
    /* version 4, variant 10xx: looks like what the monolith's gen_random_uuid() makes */
    snprintf(out, 37, "%08x-%04x-4%03x-%04x-%012llx", (unsigned)(a >> 32),
             (unsigned)(a >> 16) & 0xffffu, (unsigned)a & 0xfffu,
             0x8000u | ((unsigned)(b >> 48) & 0x3fffu),
             (unsigned long long)(b & 0xffffffffffffULL));
}

/* Decodes one UTF-8 sequence at p (at most n bytes); returns its length or 0 if invalid. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t len;
    unsigned min;
    if (p[0] < 0x80) return 1;
    if ((p[0] & 0xe0) == 0xc0) { len = 2; min = 0x80; }
    else if ((p[0] & 0xf0) == 0xe0) { len = 3; min = 0x800; }
    else if ((p[0] & 0xf8) == 0xf0) { len = 4; min = 0x10000; }
    else return 0;
    if (len > n) return 0;
    unsigned cp = p[0] & (0x7fu >> len);
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return len;
}

json_t *mk_jstring(const char *p, size_t n)
{
    json_t *j = json_stringn(p, n); /* the common case: valid UTF-8 */
    if (j || n > (SIZE_MAX - 1) / 2) return j;
    /* Header values may carry obs-text: keep valid sequences, read other bytes as Latin-1. */
    char *buf = malloc(2 * n + 1);
    if (!buf) return NULL;
    size_t o = 0;
    const unsigned char *b = (const unsigned char *)p;
    for (size_t i = 0; i < n;) {
        size_t l = b[i] ? utf8_len(b + i, n - i) : 0;
        if (l) {
            memcpy(buf + o, b + i, l);
            o += l;
            i += l;
        } else if (b[i] == 0) {
            buf[o++] = '?'; /* jansson strings may hold NUL, but keep the output printable */
            i++;
        } else {
            buf[o++] = (char)(0xc0 | (b[i] >> 6));
            buf[o++] = (char)(0x80 | (b[i] & 0x3f));
            i++;
        }
    }
    j = json_stringn(buf, o);
    free(buf);
    return j;
}

static const char *const first_names[] = {
    "Ada", "Alan", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis",
    "Frances", "Edsger", "Radia", "Donald", "Hedy", "John", "Katherine", "Tim",
};
static const char *const last_names[] = {
    "Lovelace", "Turing", "Hopper", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie",
    "Allen", "Dijkstra", "Perlman", "Knuth", "Lamarr", "Backus", "Johnson", "Berners-Lee",
};
static const char *const streets[] = {
    "Main Street", "Station Road", "Canal Street", "Market Square", "Church Lane",
    "Mill Road", "Harbour Way", "Park Avenue",
};
static const struct { const char *city, *country; } cities[] = {
    { "Amsterdam", "NL" }, { "Berlin", "DE" }, { "Paris", "FR" }, { "Madrid", "ES" },
    { "Lisbon", "PT" }, { "Vienna", "AT" }, { "Dublin", "IE" }, { "Oslo", "NO" },
};
static const char *const order_statuses[] = { "pending", "paid", "shipped", "delivered", "cancelled" };
static const char *const currencies[] = { "EUR", "USD", "GBP" };
static const char *const carriers[] = { "DHL", "UPS", "FedEx", "PostNL", "DPD" };
static const char *const shipment_statuses[] = {
    "label_created", "in_transit", "out_for_delivery", "delivered",
};

/* Address number IDX of the user with id ID. */
static json_t *address_json(const char *id, size_t n, unsigned idx)
{
    char salt[32], street[64], postal[16];
    snprintf(salt, sizeof salt, "address:%u:", idx);
    uint64_t s = seed_of(salt, id, n);
    snprintf(street, sizeof street, "%u %s", 1 + pick(&s, 250), streets[pick(&s, COUNT(streets))]);
    snprintf(postal, sizeof postal, "%05u", pick(&s, 100000));
    unsigned c = pick(&s, COUNT(cities));
    return json_pack("{s:s, s:s, s:s, s:s}", "street", street, "city", cities[c].city,
                     "postal_code", postal, "country", cities[c].country);
}

json_t *mk_user_json(const char *id, size_t n)
{
    uint64_t s = seed_of("user:", id, n);
    const char *first = first_names[pick(&s, COUNT(first_names))];
    const char *last = last_names[pick(&s, COUNT(last_names))];
    char name[64], email[96], created[32];
    snprintf(name, sizeof name, "%s %s", first, last);
    int o = snprintf(email, sizeof email, "%s.%s%u@example.com", first, last, pick(&s, 1000));
    for (int i = 0; i < o && email[i] != '@'; i++)
        if (email[i] >= 'A' && email[i] <= 'Z') email[i] = (char)(email[i] - 'A' + 'a');
    snprintf(created, sizeof created, "%04u-%02u-%02uT%02u:%02u:%02uZ", 2019 + pick(&s, 6),
             1 + pick(&s, 12), 1 + pick(&s, 28), pick(&s, 24), pick(&s, 60), pick(&s, 60));
    unsigned n_addr = 1 + pick(&s, 2);

    json_t *addrs = json_array();
    for (unsigned i = 0; addrs && i < n_addr; i++)
        json_array_append_new(addrs, address_json(id, n, i));
    return json_pack("{s:o, s:s, s:s, s:s, s:o}", "id", mk_jstring(id, n), "email", email,
                     "name", name, "created_at", created, "addresses", addrs);
}

json_t *mk_order_json(const char *id, size_t n)
{
    uint64_t s = seed_of("order:", id, n);
    char number[16], user_id[37], total[32];
    snprintf(number, sizeof number, "ORD-%06u", pick(&s, 1000000));
    mk_uuid("user-of:", id, n, user_id);
    const char *status = order_statuses[pick(&s, COUNT(order_statuses))];
    const char *currency = currencies[pick(&s, COUNT(currencies))];

    json_t *items = json_array();
    uint64_t cents = 0;
    unsigned n_items = 1 + pick(&s, 3);
    for (unsigned i = 0; items && i < n_items; i++) {
        char sku[16], price[32];
        unsigned qty = 1 + pick(&s, 5), unit = 199 + pick(&s, 19800);
        snprintf(sku, sizeof sku, "SKU-%05u", pick(&s, 100000));
        snprintf(price, sizeof price, "%u.%02u", unit / 100, unit % 100);
        cents += (uint64_t)qty * unit;
        json_array_append_new(items, json_pack("{s:s, s:i, s:s}", "sku", sku, "quantity",
                                               (json_int_t)qty, "unit_price", price));
    }
    snprintf(total, sizeof total, "%llu.%02u", (unsigned long long)(cents / 100),
             (unsigned)(cents % 100));
    return json_pack("{s:o, s:s, s:s, s:s, s:s, s:s, s:o, s:o}", "id", mk_jstring(id, n),
                     "order_number", number, "user_id", user_id, "status", status, "total", total,
                     "currency", currency, "items", items, "shipping_address",
                     address_json(user_id, strlen(user_id), 0));
}

json_t *mk_shipment_json(const char *order_id, size_t n)
{
    uint64_t s = seed_of("shipment:", order_id, n);
    char tracking[32], eta[16];
    uint64_t t = splitmix64(&s);
    snprintf(tracking, sizeof tracking, "TRK%012llX", (unsigned long long)(t & 0xffffffffffffULL));
    const char *carrier = carriers[pick(&s, COUNT(carriers))];
    const char *status = shipment_statuses[pick(&s, COUNT(shipment_statuses))];
    snprintf(eta, sizeof eta, "2025-%02u-%02u", 1 + pick(&s, 12), 1 + pick(&s, 28));
    return json_pack("{s:o, s:s, s:s, s:s, s:s}", "order_id", mk_jstring(order_id, n),
                     "tracking_number", tracking, "carrier_name", carrier, "status", status,
                     "estimated_delivery", eta);
}
