/* fuzz_h2.c — HTTP/2 on a client connection (http/h2.c over nghttp2), driven through the
 * real server like fuzz_server_request: one gw_server with h2c on a libuv loop, kept across
 * runs, the same tiny handler, and per input one loopback TCP client that sends the HTTP/2
 * connection preface and an empty SETTINGS frame, then the input (frames, in up to four
 * pieces), then shuts its write side and reads until the server closes. Small limits (16
 * streams, 4 KiB stream window, 4 KiB bodies and heads, reset burst 50) put them in reach.
 *
 * Input: byte 0 = flags (bits 0-1: number of extra split points; bits 2-3: handler mode),
 * then one byte per split point, then the frames. Handler modes as in fuzz_server_request.
 *
 * Invariants checked (a failure traps):
 *   - every request the handler got ends exactly once: our answer or on_abort, and no
 *     callback reaches a request after its response ended;
 *   - on_body bytes never exceed a Content-Length, never come before gw_request_read_body,
 *     and a body that ended has exactly its Content-Length (nghttp2 checks it against DATA);
 *   - what the client reads is a sequence of frames on the right streams (no push);
 *   - the connection closes after the client's EOF, within a bound, and the server holds no
 *     connection afterwards. */
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

#define FUZZ_DRIVER "fuzz_h2"
#include "tests/fuzz/fuzz_server.h"

/* ---- the client's view: HTTP/2 frames ---------------------------------------------- */

/* What the server sent is a sequence of frames (the last may be cut by the close): stream
 * frames (DATA, HEADERS, RST_STREAM) on a stream, connection frames (SETTINGS, PING,
 * GOAWAY) on stream 0, and never a server-initiated (even) stream: push is off. */
static void check_frames(void)
{
    const uint8_t *p = (const uint8_t *)G.resp, *end = p + G.resp_len;
    while (end - p >= 9) {
        size_t n = (size_t)p[0] << 16 | (size_t)p[1] << 8 | p[2];
        uint8_t type = p[3];
        uint32_t sid = ((uint32_t)p[5] << 24 | (uint32_t)p[6] << 16 | (uint32_t)p[7] << 8 | p[8]) & 0x7fffffffu;
        if ((type == 0 || type == 1 || type == 3) && sid == 0)
            die("a stream frame on stream 0");
        if ((type == 4 || type == 6 || type == 7) && sid != 0)
            die("a connection frame on a stream");
        if (sid && (sid & 1) == 0)
            die("a frame on an even (server-initiated) stream: push is off");
        if ((size_t)(end - p) < 9 + n)
            return; /* cut by the close */
        p += 9 + n;
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
        .h2c = 1,
        .h2 = { .max_concurrent_streams = 16, .stream_window = 4096, .connection_window = 65535,
                .reset_burst = 50, .reset_rate = 10 },
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
    /* the connection preface and an empty SETTINGS: the fuzzer starts after them */
    static const uint8_t hello[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\4\0\0\0\0\0";
    if (!fuzz_play_connection(data, size, hello, sizeof hello - 1))
        return 0;
    check_frames();
    return 0;
}
