/* ws.c — a minimal WebSocket echo endpoint (RFC 6455) on any path under /ws, for tests of
 * the gateway's tunnels: the handshake (Sec-WebSocket-Accept = base64(SHA-1(key + GUID))),
 * then every data frame echoed back unmasked, ping answered with pong, close answered with
 * close. The 101 carries X-Mock-Ws-Path (the path as received: rewrites show) and
 * X-Mock-Name. Request header X-Mock-Ws picks a behaviour:
 *   refuse   403 instead of 101 (the connection stays HTTP/1.1)
 *   flood    after the 101, send 64 KiB binary frames as fast as the connection takes them
 *            (backpressure: a client that stops reading must not grow the gateway)
 *   noread   after the 101, read nothing (the gateway must stop reading its client)
 *   force    answer 101 even to a request that asked for no upgrade
 * and X-Mock-Status: N (as elsewhere in mockd) answers N instead of 101.
 * Each connection is counted in /__stats like any request. */
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

#include "http/end.h"
#include "mockd.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#define WS_BUF_MAX (1u << 20) /* a frame larger than this closes the connection */
#define WS_FLOOD_FRAME 65535 /* the largest 16-bit length */

enum { WS_ECHO, WS_FLOOD, WS_NOREAD };

typedef struct ws_conn {
    gw_end end;
    mk_stats *stats;
    int mode;
    int closing;
    char *buf;            /* frame bytes not yet complete */
    size_t len, cap;
} ws_conn;

static char flood_frame[4 + WS_FLOOD_FRAME];

static void ws_free(ws_conn *w)
{
    w->stats->ws_open--;
    free(w->buf);
    free(w);
}

static void ws_close(ws_conn *w)
{
    if (w->closing)
        return;
    w->closing = 1;
    w->end.ops->close(w->end.conn);
    ws_free(w);
}

/* A server frame (never masked): FIN set, OPCODE, payload P[0..n). */
static int ws_send(ws_conn *w, int opcode, const char *p, size_t n)
{
    unsigned char h[10];
    size_t hl = 2;
    h[0] = (unsigned char)(0x80 | opcode);
    if (n < 126) {
        h[1] = (unsigned char)n;
    } else if (n < 65536) {
        h[1] = 126;
        h[2] = (unsigned char)(n >> 8);
        h[3] = (unsigned char)n;
        hl = 4;
    } else {
        h[1] = 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (unsigned char)((uint64_t)n >> (56 - 8 * i));
        hl = 10;
    }
    uv_buf_t b[2] = { uv_buf_init((char *)h, (unsigned)hl), uv_buf_init((char *)p, (unsigned)n) };
    return w->end.ops->write(w->end.conn, b, n ? 2 : 1);
}

static void ws_flood(ws_conn *w)
{
    int r;
    while ((r = w->end.ops->write(w->end.conn, &(uv_buf_t){ .base = flood_frame,
                                                             .len = sizeof flood_frame }, 1)) >= 0) {
        w->stats->ws_bytes_out += sizeof flood_frame;
        if (r == 1)
            break;
    }
    if (r < 0)
        ws_close(w);
    /* r == 1: on_drain sends more */
}

/* Frames complete in the buffer are answered; the rest waits. 0, or -1: close. */
static int ws_frames(ws_conn *w)
{
    size_t at = 0;
    while (w->len - at >= 2) {
        unsigned char *f = (unsigned char *)w->buf + at;
        int opcode = f[0] & 0x0f, masked = f[1] & 0x80;
        uint64_t n = f[1] & 0x7f;
        size_t hl = 2;
        if (n == 126) {
            if (w->len - at < 4)
                break;
            n = (uint64_t)f[2] << 8 | f[3];
            hl = 4;
        } else if (n == 127) {
            if (w->len - at < 10)
                break;
            n = 0;
            for (int i = 0; i < 8; i++)
                n = n << 8 | f[2 + i];
            hl = 10;
        }
        if (!masked || n > WS_BUF_MAX)
            return -1; /* client frames are masked (RFC 6455 §5.1) */
        if (w->len - at < hl + 4 + n)
            break;
        unsigned char *key = f + hl, *p = f + hl + 4;
        for (uint64_t i = 0; i < n; i++)
            p[i] ^= key[i & 3];
        at += hl + 4 + n;
        if (opcode == 0x8) { /* close: answered with the same code, then closed */
            ws_send(w, 0x8, (char *)p, n >= 2 ? 2 : 0);
            return -1;
        }
        if (ws_send(w, opcode == 0x9 ? 0xA : opcode, (char *)p, n) < 0)
            return -1;
    }
    memmove(w->buf, w->buf + at, w->len - at);
    w->len -= at;
    return 0;
}

static void ws_on_data(void *arg, const char *p, size_t n)
{
    ws_conn *w = arg;
    if (w->mode == WS_FLOOD)
        return; /* what a flooded client says is not answered */
    if (w->len + n > w->cap) {
        /* at most one unfinished frame (<= WS_BUF_MAX + its header) plus the bytes of this
         * read, which may carry the next frame's start: a cap of WS_BUF_MAX + 16 on the sum
         * closed a client sending 1 MB frames back to back, depending on read boundaries */
        size_t cap = w->len + n > 2 * WS_BUF_MAX ? 0 : (w->len + n) * 2;
        char *nb = cap ? realloc(w->buf, cap) : NULL;
        if (!nb) {
            ws_close(w);
            return;
        }
        w->buf = nb;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, p, n);
    w->len += n;
    if (ws_frames(w) < 0)
        ws_close(w);
}

static void ws_on_drain(void *arg)
{
    ws_conn *w = arg;
    if (w->mode == WS_FLOOD)
        ws_flood(w);
}

static void ws_on_end(void *arg, int err)
{
    (void)err;
    ws_close(arg);
}

static const gw_end_cb ws_cb = {
    .on_data = ws_on_data, .on_drain = ws_on_drain, .on_end = ws_on_end, .on_shutdown = NULL,
};

/* Handles REQ when its path is under /ws: 1 (answered), else 0. */
int mk_ws_request(gw_request *req)
{
    if (!(req->path.n >= 3 && memcmp(req->path.p, "/ws", 3) == 0 &&
          (req->path.n == 3 || req->path.p[3] == '/')))
        return 0;
    mk_ctx *c = gw_server_options(req->server)->data;
    req->upstream_name = c->conf.name;
    mk_stats_request(&c->stats, req->conn_id, req->path.p, req->path.n);
    gw_slice mode = gw_request_header(req, "X-Mock-Ws");
    gw_slice key = gw_request_header(req, "Sec-WebSocket-Key");
    gw_slice up = gw_request_header(req, "Upgrade");
    char hdrs[512 + 256];
    int hl = snprintf(hdrs, sizeof hdrs, "X-Mock-Name: %s\r\n", c->conf.name);
    gw_slice sv = gw_request_header(req, "X-Mock-Status");
    if (sv.n == 3 && sv.p[0] >= '2' && sv.p[0] <= '5') {
        int st = (sv.p[0] - '0') * 100 + (sv.p[1] - '0') * 10 + (sv.p[2] - '0');
        gw_response_simple(req, st, "application/json", "{\"error\":\"as asked\"}", 20, hdrs);
        return 1;
    }
    if (gw_slice_eq(mode, "refuse")) {
        gw_response_simple(req, 403, "application/json", "{\"error\":\"upgrade refused\"}", 27, hdrs);
        return 1;
    }
    if (!gw_slice_eq(mode, "force") && (!gw_slice_ieq(up, "websocket") || key.n == 0 || key.n > 64)) {
        gw_response_simple(req, 400, "application/json", "{\"error\":\"not a websocket handshake\"}",
                           37, hdrs);
        return 1;
    }
    unsigned char digest[SHA_DIGEST_LENGTH];
    char accept[64] = "";
    char kg[64 + sizeof WS_GUID];
    if (key.n > 64) /* (force: any key, or none) */
        key.n = 64;
    if (key.n)
        memcpy(kg, key.p, key.n);
    memcpy(kg + key.n, WS_GUID, sizeof WS_GUID - 1);
    SHA1((unsigned char *)kg, key.n + sizeof WS_GUID - 1, digest);
    EVP_EncodeBlock((unsigned char *)accept, digest, SHA_DIGEST_LENGTH);
    hl += snprintf(hdrs + hl, sizeof hdrs - (size_t)hl,
                   "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
                   "X-Mock-Ws-Path: %.*s\r\n",
                   accept, (int)(req->path.n < 256 ? req->path.n : 256), req->path.p);
    ws_conn *w = calloc(1, sizeof *w);
    if (!w) {
        gw_response_error(req, 500, "out of memory");
        return 1;
    }
    w->mode = gw_slice_eq(mode, "flood") ? WS_FLOOD : gw_slice_eq(mode, "noread") ? WS_NOREAD : WS_ECHO;
    if (gw_request_upgrade(req, hdrs, (size_t)hl, &w->end) != 0) {
        free(w);
        gw_response_error(req, 400, "cannot upgrade this request");
        return 1;
    }
    w->stats = &c->stats;
    c->stats.ws_open++;
    w->end.ops->bind(w->end.conn, &ws_cb, w);
    if (w->mode != WS_NOREAD)
        w->end.ops->read(w->end.conn, 1);
    if (w->mode == WS_FLOOD) {
        if (!flood_frame[0]) {
            flood_frame[0] = (char)0x82; /* FIN + binary */
            flood_frame[1] = 126;
            flood_frame[2] = (char)0xff;
            flood_frame[3] = (char)0xff;
            memset(flood_frame + 4, 'x', WS_FLOOD_FRAME);
        }
        ws_flood(w);
    }
    return 1;
}
