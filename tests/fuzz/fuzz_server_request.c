/* fuzz_server_request.c — the request head scanner and parser, chunked framing and the
 * connection state machine (http/client.c), driven through the real server: one gw_server
 * on a libuv loop (127.0.0.1, port 0), kept across runs, a tiny handler, and per input one
 * loopback TCP client that writes the input (in up to four pieces) then shuts its write side
 * and reads until the server closes.
 *
 * Input: byte 0 = flags (bits 0-1: number of extra split points; bits 2-3: handler mode),
 * then one byte per split point (its position, scaled to the payload), then the payload.
 * Handler modes: 0 read the body then answer; 1 answer at once without reading the body
 * (lingering close); 2 read the body, answer streamed (chunked / close-delimited);
 * 3 answer from inside the first on_body call, with the rest of the body still coming.
 *
 * Invariants checked (a failure traps, so libFuzzer keeps the input):
 *   - every request the handler got ends exactly once: our answer or on_abort, and no
 *     callback reaches a request after its response ended (its state is freed then, so a
 *     late callback is also an ASan use-after-free);
 *   - on_body bytes never exceed a Content-Length, never come before gw_request_read_body;
 *   - what the client reads is a sequence of well-formed responses (1xx interim ones, then
 *     finals), at most one final per request the server reported done, each with the status
 *     the server reported, framed as the server said (HEAD, 204/304 bodiless);
 *   - the connection closes after the client's EOF, within a bound (no hang), and the server
 *     holds no connection afterwards. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define FUZZ_DRIVER "fuzz_server_request"
#include "tests/fuzz/fuzz_server.h"

/* ---- the client's view of the responses ---------------------------------------------- */

static const char *find(const char *p, const char *end, const char *s)
{
    size_t n = strlen(s);
    for (; p + n <= end; p++)
        if (memcmp(p, s, n) == 0)
            return p;
    return NULL;
}

/* The value of header NAME in the head [h, e), or NULL. */
static const char *header(const char *h, const char *e, const char *name, size_t *len)
{
    size_t n = strlen(name);
    for (const char *l = find(h, e, "\r\n"); l && l + 2 < e; l = find(l + 2, e, "\r\n")) {
        const char *v = l + 2;
        if ((size_t)(e - v) > n + 1 && strncasecmp(v, name, n) == 0 && v[n] == ':') {
            v += n + 1;
            while (v < e && *v == ' ')
                v++;
            const char *ve = find(v, e, "\r\n");
            *len = (size_t)((ve ? ve : e) - v);
            return v;
        }
    }
    return NULL;
}

/* Walks the responses; every complete one must be well formed and match a done report. */
static void check_responses(void)
{
    const char *p = G.resp, *end = G.resp + G.resp_len;
    int finals = 0;
    while (p < end) {
        const char *he = find(p, end, "\r\n\r\n");
        if (!he)
            return; /* truncated head: a close with unread input may reset the connection */
        he += 4;
        if (end - p < 13 || memcmp(p, "HTTP/1.1 ", 9) != 0 || p[12] != ' ')
            die("a response does not start with a status line");
        int status = atoi(p + 9);
        if (status < 100 || status > 599)
            die("status out of range");
        if (status < 200) {
            p = he;
            continue;
        }
        if (finals >= G.n_done)
            die("more final responses than requests reported done");
        int k = finals++;
        if (k < MAX_DONE && G.done[k].err == 0 && G.done[k].status != status) {
            fprintf(stderr, "response %d: status %d, reported %d\n", k, status, G.done[k].status);
            die("status differs from the report");
        }
        size_t vl;
        const char *cl = header(p, he, "Content-Length", &vl);
        const char *te = header(p, he, "Transfer-Encoding", &vl);
        int bodiless = status == 204 || status == 304 || (k < MAX_DONE && G.done[k].is_head);
        if (cl && te)
            die("a response with both Content-Length and Transfer-Encoding");
        p = he;
        if (bodiless)
            continue;
        if (cl) {
            unsigned long long n = strtoull(cl, NULL, 10);
            if (n > (unsigned long long)(end - p))
                return; /* truncated */
            p += n;
        } else if (te) {
            for (;;) {
                const char *le = find(p, end, "\r\n");
                if (!le)
                    return;
                char *x;
                unsigned long long n = strtoull(p, &x, 16);
                if (x == p)
                    die("a bad chunk size in a response");
                p = le + 2;
                if (n == 0) {
                    if (end - p < 2)
                        return;
                    if (memcmp(p, "\r\n", 2) != 0)
                        die("a response's last chunk is not followed by CRLF");
                    p += 2;
                    break;
                }
                if (n + 2 > (unsigned long long)(end - p))
                    return;
                if (memcmp(p + n, "\r\n", 2) != 0)
                    die("a response chunk not followed by CRLF");
                p += n + 2;
            }
        } else {
            return; /* close-delimited (an HTTP/1.0 client, streamed): the rest is body */
        }
    }
}

/* ---- libFuzzer ----------------------------------------------------------------------- */

static void setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    G.resp = malloc(RESP_CAP);
    if (!G.resp || uv_loop_init(&G.loop) != 0)
        abort();
    gw_server_opts o = {
        /* small limits so that 413/414/431 are in reach; timeouts only bound a stuck run */
        .limits = { .max_uri_bytes = 1024, .max_header_bytes = 4096, .max_headers = 32,
                    .max_body_bytes = 4096, .header_timeout_ms = 2000, .body_timeout_ms = 2000,
                    .idle_timeout_ms = 2000, .send_timeout_ms = 2000, .read_buffer_bytes = 8192 },
        .gateway_headers = 1,
        .on_request_done = on_done,
    };
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    if (gw_server_init(&G.s, &G.loop, (struct sockaddr *)&a, &o, &handler) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!G.s)
        setup();
    if (!fuzz_play_connection(data, size, NULL, 0))
        return 0;
    check_responses();
    return 0;
}
