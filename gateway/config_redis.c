/* config_redis.c — "redis" in gateway.json: the Redis of the user cache and of shared rate
 * limits (composers/redis_client.h), in one of three forms:
 *   "redis": "127.0.0.1:6379"                                   -- one server
 *   "redis": { "sentinels": ["10.0.0.1:26379", "10.0.0.2:26379"],
 *              "master_name": "gw" }                            -- a Sentinel-managed master
 *   "redis": { "cluster": ["10.0.0.1:7000", "10.0.0.2:7000"] }  -- Redis Cluster seed nodes
 * or { "address": "127.0.0.1:6379" } for one server as an object. Each list holds 1 to 16
 * "host:port" (names are resolved when connecting). The object form takes credentials, sent
 * as AUTH after every connect:
 *   "username": "gw",                      -- an ACL user (default: AUTH password alone)
 *   "password_env": "REDIS_PASSWORD"       -- the password: from that environment variable,
 *   "password_file": "/run/secrets/redis"  --   or the file's content (trailing newline
 *   "password": "..."                      --   stripped), or literal; at most one of them
 *   "sentinel_username", "sentinel_password[_env|_file]" -- the sentinels' own (with
 *                                             "sentinels" only)
 * Read once, at start (gateway.json is not reloaded). No error message carries a password.
 * GATEWAY_REDIS ("host:port" or "redis://[user:password@]host:port") replaces the address
 * of any of them (config.c) and keeps the file's credentials unless it names its own. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gateway/config_int.h"

static int gw__redis_list(gw__cfgctx *c, json_t *o, const char *key, cmp_redis_conf *t)
{
    char p[GW__PATH_MAX], el[GW__PATH_MAX + 32];
    json_t *a = json_object_get(o, key), *v;
    size_t i;

    gw__path(p, "redis", key);
    if (!json_is_array(a) || json_array_size(a) == 0)
        return gw__fail(c, p, "must be a non-empty array of \"host:port\" strings");
    if (json_array_size(a) > CMP_REDIS_MAX_ADDRS)
        return gw__fail(c, p, "at most %d addresses", CMP_REDIS_MAX_ADDRS);
    json_array_foreach(a, i, v) {
        snprintf(el, sizeof el, "%s[%zu]", p, i);
        if (!json_is_string(v))
            return gw__fail(c, el, "must be a \"host:port\" string");
        int rc = gw__address(c, el, json_string_value(v), 1, 0, t->addr[i], sizeof t->addr[i],
                             NULL, NULL);
        if (rc != 0)
            return rc;
        for (size_t j = 0; j < i; j++)
            if (strcmp(t->addr[j], t->addr[i]) == 0)
                return gw__fail(c, el, "listed twice");
    }
    t->n = (int)json_array_size(a);
    return 0;
}

/* A password read from PATH (named WHERE in errors) into out[size]: the whole file but one
 * trailing "\n" or "\r\n"; a longer file, or more than one line, is refused (it is not
 * the secret file meant: cut, it would only show later as -WRONGPASS). Blocking: start only,
 * before any loop runs; a regular file only (a FIFO or a device would hold the start or never
 * end). The copy on the stack is wiped on every path. */
static int gw__redis_secret_file(gw__cfgctx *c, const char *where, const char *path, char *out,
                                 size_t size)
{
    char buf[CMP_REDIS_PASS_MAX + 3]; /* the longest password, "\r\n", and one byte more */
    struct stat st;
    size_t n = 0, max = size - 1 + 2 < sizeof buf - 1 ? size - 1 + 2 : sizeof buf - 2;
    ssize_t r = 1;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC), err, rc;

    if (fd < 0)
        return gw__fail(c, where, "%s: cannot read: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return gw__fail(c, where, "%s: not a regular file", path);
    }
    /* one byte past the longest acceptable content tells a longer file (st_size is 0 for
     * /proc files: reading is what counts) */
    while (n < max + 1 && (r = read(fd, buf + n, max + 1 - n)) > 0)
        n += (size_t)r;
    err = errno;
    close(fd);
    if (r < 0) {
        rc = gw__fail(c, where, "%s: cannot read: %s", path, strerror(err));
        goto out;
    }
    if (n > max) {
        rc = gw__fail(c, where, "%s: longer than %zu bytes", path, size - 1);
        goto out;
    }
    buf[n] = '\0';
    if (n > 0 && buf[n - 1] == '\n')
        buf[--n] = '\0';
    if (n > 0 && buf[n - 1] == '\r')
        buf[--n] = '\0';
    if (n >= size)
        rc = gw__fail(c, where, "%s: longer than %zu bytes", path, size - 1);
    else if (n == 0)
        rc = gw__fail(c, where, "%s: is empty", path);
    else if (strlen(buf) != n)
        rc = gw__fail(c, where, "%s: holds a NUL byte", path);
    else if (memchr(buf, '\n', n) != NULL)
        rc = gw__fail(c, where, "%s: holds more than one line", path);
    else {
        memcpy(out, buf, n + 1);
        rc = 0;
    }
out:
    explicit_bzero(buf, sizeof buf);
    return rc;
}

/* The password NAME ("password" or "sentinel_password") of V: literal, from NAME_env or
 * NAME_file, into out[size] ("" when none is given). */
static int gw__redis_secret(gw__cfgctx *c, json_t *v, const char *name, char *out, size_t size)
{
    char key_env[GW__PATH_MAX], key_file[GW__PATH_MAX], p[GW__PATH_MAX], var[128], rel[1024], file[1024];
    const char *val;
    int has_lit, has_env, has_file, rc;

    snprintf(key_env, sizeof key_env, "%s_env", name);
    snprintf(key_file, sizeof key_file, "%s_file", name);
    has_lit = json_object_get(v, name) != NULL;
    has_env = json_object_get(v, key_env) != NULL;
    has_file = json_object_get(v, key_file) != NULL;
    out[0] = '\0';
    if (has_lit + has_env + has_file > 1)
        return gw__fail(c, gw__path(p, "redis", name), "at most one of \"%s\", \"%s\" or \"%s\"",
                        name, key_env, key_file);
    if (has_lit) /* gw__get_str's errors name the key, never the value */
        return gw__get_str(c, v, name, "redis", out, size, 0, NULL);
    if (has_env) {
        if ((rc = gw__get_str(c, v, key_env, "redis", var, sizeof var, 0, NULL)) != 0)
            return rc;
        gw__path(p, "redis", key_env);
        for (const char *s = var; *s; s++)
            if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_' ||
                  (s > var && *s >= '0' && *s <= '9')))
                return gw__fail(c, p, "an environment variable name ([A-Za-z_][A-Za-z0-9_]*)");
        if ((val = getenv(var)) == NULL || val[0] == '\0')
            return gw__fail(c, p, "$%s is not set (or empty)", var);
        if (strlen(val) >= size)
            return gw__fail(c, p, "$%s is longer than %zu bytes", var, size - 1);
        memcpy(out, val, strlen(val) + 1);
        return 0;
    }
    if (has_file) {
        gw__path(p, "redis", key_file);
        if ((rc = gw__get_str(c, v, key_file, "redis", rel, sizeof rel, 0, NULL)) != 0 ||
            (rc = gw__resolve_path(c, p, rel, file, sizeof file)) != 0)
            return rc;
        return gw__redis_secret_file(c, p, file, out, size);
    }
    return 0;
}

/* "username"/"password*" (PRE "") or "sentinel_username"/"sentinel_password*" (PRE
 * "sentinel_") of V into A. */
static int gw__redis_auth(gw__cfgctx *c, json_t *v, const char *pre, cmp_redis_auth *a)
{
    char user_key[40], pass_key[40], p[GW__PATH_MAX];
    int rc, has_user;

    snprintf(user_key, sizeof user_key, "%susername", pre);
    snprintf(pass_key, sizeof pass_key, "%spassword", pre);
    if ((rc = gw__get_str(c, v, user_key, "redis", a->username, sizeof a->username, 0,
                          &has_user)) != 0 ||
        (rc = gw__redis_secret(c, v, pass_key, a->password, sizeof a->password)) != 0)
        return rc;
    gw__path(p, "redis", user_key);
    for (const char *s = a->username; *s; s++)
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
            return gw__fail(c, p, "visible ASCII without spaces only");
    if (has_user && a->password[0] == '\0')
        return gw__fail(c, p, "needs \"%s\", \"%s_env\" or \"%s_file\"", pass_key, pass_key,
                        pass_key);
    return 0;
}

int gw__parse_redis(gw__cfgctx *c, json_t *root, gw_config *k)
{
    static const char *const keys[] = {
        "address", "sentinels", "master_name", "cluster", "username", "password",
        "password_env", "password_file", "sentinel_username", "sentinel_password",
        "sentinel_password_env", "sentinel_password_file", NULL };
    static const char *const sentinel_keys[] = {
        "sentinel_username", "sentinel_password", "sentinel_password_env",
        "sentinel_password_file", NULL };
    cmp_redis_conf *t = &k->redis_topo;
    json_t *v = json_object_get(root, "redis"), *addr;
    int rc, present = 0;

    memset(t, 0, sizeof *t);
    if (v == NULL)
        return 0;
    if (json_is_string(v)) {
        if ((rc = gw__address(c, "redis", json_string_value(v), 1, 0, k->redis, sizeof k->redis,
                              NULL, NULL)) != 0)
            return rc;
        return cmp_redis_conf_single(t, k->redis) == 0 ? 0
               : gw__fail(c, "redis", "invalid address");
    }
    if (!json_is_object(v))
        return gw__fail(c, "redis", "must be a \"host:port\" string, or an object with "
                                    "\"address\", with \"sentinels\" and \"master_name\", or "
                                    "with \"cluster\"");
    if ((rc = gw__only_keys(c, v, "redis", keys)) != 0)
        return rc;
    addr = json_object_get(v, "address");
    int has_s = json_object_get(v, "sentinels") != NULL;
    int has_c = json_object_get(v, "cluster") != NULL;
    if ((addr != NULL) + has_s + has_c != 1)
        return gw__fail(c, "redis", "needs exactly one of \"address\", \"sentinels\" or "
                                    "\"cluster\"");
    if (!has_s) {
        char p[GW__PATH_MAX];
        for (int i = 0; sentinel_keys[i] != NULL; i++)
            if (json_object_get(v, sentinel_keys[i]) != NULL)
                return gw__fail(c, gw__path(p, "redis", sentinel_keys[i]),
                                "only with \"sentinels\"");
        if (json_object_get(v, "master_name") != NULL)
            return gw__fail(c, "redis.master_name", "only with \"sentinels\"");
    }
    if (addr != NULL) {
        if (!json_is_string(addr))
            return gw__fail(c, "redis.address", "must be a \"host:port\" string");
        if ((rc = gw__address(c, "redis.address", json_string_value(addr), 1, 0, k->redis,
                              sizeof k->redis, NULL, NULL)) != 0)
            return rc;
        if (cmp_redis_conf_single(t, k->redis) != 0)
            return gw__fail(c, "redis.address", "invalid address");
    } else if (has_c) {
        t->kind = CMP_REDIS_CLUSTER;
        if ((rc = gw__redis_list(c, v, "cluster", t)) != 0)
            return rc;
    } else {
        t->kind = CMP_REDIS_SENTINEL;
        if ((rc = gw__redis_list(c, v, "sentinels", t)) != 0 ||
            (rc = gw__get_str(c, v, "master_name", "redis", t->master_name,
                              sizeof t->master_name, 0, &present)) != 0)
            return rc;
        if (!present)
            return gw__fail(c, "redis.master_name", "required with \"sentinels\" (the name the "
                                                    "sentinels monitor)");
        for (const char *s = t->master_name; *s; s++)
            if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
                return gw__fail(c, "redis.master_name", "visible ASCII without spaces only");
        if ((rc = gw__redis_auth(c, v, "sentinel_", &t->sentinel_auth)) != 0)
            return rc;
    }
    return gw__redis_auth(c, v, "", &t->auth);
}

static int gw__hex_digit(char h)
{
    return h >= '0' && h <= '9' ? h - '0'
           : h >= 'a' && h <= 'f' ? h - 'a' + 10
           : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                  : -1;
}

/* %XX escapes of S[0..n) decoded into out[size]; -1 when malformed (a '%' not followed by
 * exactly two hex digits), too long or a NUL. */
static int gw__url_decode(const char *s, size_t n, char *out, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int ch = (unsigned char)s[i];
        if (ch == '%') {
            int hi, lo;
            if (i + 2 >= n || (hi = gw__hex_digit(s[i + 1])) < 0 ||
                (lo = gw__hex_digit(s[i + 2])) < 0 || (ch = hi * 16 + lo) == 0)
                return -1;
            i += 2;
        }
        if (o + 1 >= size)
            return -1;
        out[o++] = (char)ch;
    }
    out[o] = '\0';
    return 0;
}

/* GATEWAY_REDIS's errors never quote the value, nor a part of it: a URL with credentials
 * holds the password, and a malformed one (the host forgotten, the scheme forgotten, an '@'
 * in the password) would leave it, or a piece of it, where the address was expected. */
int gw__parse_redis_env(gw__cfgctx *c, const char *v, gw_config *k)
{
    static const char *const where = "env GATEWAY_REDIS";
    static const char *const want = "want \"host:port\" or redis://[user:password@]host:port "
                                    "(the value is not shown: it may hold a password)";
    cmp_redis_auth auth = k->redis_topo.auth; /* the file's, unless the URL names its own */
    gw__cfgctx quiet = *c; /* gw__address's errors quote the value: not shown */
    const char *hostport = v;
    int rc = 0;

    quiet.err = NULL;
    quiet.errlen = 0;
    if (strncmp(v, "rediss://", 9) == 0) {
        rc = gw__fail(c, where, "TLS to Redis is not supported (use redis:// to a local TLS "
                                "tunnel)");
        goto out;
    }
    if (strncmp(v, "redis://", 8) == 0) {
        const char *rest = v + 8, *at = strrchr(rest, '@'), *colon;
        hostport = at ? at + 1 : rest;
        if (strchr(hostport, '/') != NULL || strchr(hostport, '?') != NULL) {
            rc = gw__fail(c, where, "want redis://[user:password@]host:port (no database "
                                    "number, path or options)");
            goto out;
        }
        if (at != NULL) {
            memset(&auth, 0, sizeof auth);
            if ((colon = memchr(rest, ':', (size_t)(at - rest))) == NULL || colon + 1 == at) {
                rc = gw__fail(c, where, "want redis://[user]:password@host:port (a password "
                                        "after the ':')");
                goto out;
            }
            if (gw__url_decode(rest, (size_t)(colon - rest), auth.username,
                               sizeof auth.username) != 0 ||
                gw__url_decode(colon + 1, (size_t)(at - colon - 1), auth.password,
                               sizeof auth.password) != 0) {
                rc = gw__fail(c, where, "user or password: a malformed %%-escape, a NUL or "
                                        "too long");
                goto out;
            }
            for (const char *s = auth.username; *s; s++)
                if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f) {
                    rc = gw__fail(c, where, "user: visible ASCII without spaces only");
                    goto out;
                }
        }
    } else if (strchr(v, '@') != NULL) { /* credentials without the scheme */
        rc = gw__fail(c, where, "%s", want);
        goto out;
    }
    if (gw__address(&quiet, where, hostport, 1, 0, k->redis, sizeof k->redis, NULL, NULL) != 0 ||
        cmp_redis_conf_single(&k->redis_topo, k->redis) != 0) {
        rc = gw__fail(c, where, "%s", want);
        goto out;
    }
    k->redis_topo.auth = auth;
out:
    explicit_bzero(&auth, sizeof auth);
    return rc;
}
