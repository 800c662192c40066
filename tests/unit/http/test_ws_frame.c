/* test_ws_frame.c — WebSocket frame boundaries followed across any split of the stream, and
 * the Close frames a drain sends. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "http/ws_frame.h"

static size_t frame(char *out, size_t payload, int masked)
{
    size_t h = 0;
    out[h++] = (char)0x82;
    uint8_t m = masked ? 0x80 : 0;
    if (payload < 126) {
        out[h++] = (char)(m | payload);
    } else if (payload < 65536) {
        out[h++] = (char)(m | 126);
        out[h++] = (char)(payload >> 8);
        out[h++] = (char)payload;
    } else {
        out[h++] = (char)(m | 127);
        for (int i = 0; i < 8; i++)
            out[h++] = (char)((uint64_t)payload >> (56 - 8 * i));
    }
    if (masked)
        for (int i = 0; i < 4; i++)
            out[h++] = (char)0x7f; /* a mask byte that looks like a length */
    memset(out + h, 0x7e, payload); /* payload bytes that look like a 16-bit length */
    return h + payload;
}

static void test_boundaries_across_any_split(void **state)
{
    (void)state;
    static const size_t sizes[] = { 0, 5, 125, 126, 300, 65535, 65536, 70000, 1 };
    char *buf = malloc(400000);
    size_t ends[32], n_ends = 0, len = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        len += frame(buf + len, sizes[i], (int)(i & 1));
        ends[n_ends++] = len;
    }
    srand(7);
    for (int round = 0; round < 200; round++) {
        gw_ws_track t = { 0 };
        size_t at = 0, seen = 0;
        assert_true(gw_ws_at_boundary(&t));
        while (at < len) {
            size_t chunk = round == 0 ? 1 : 1 + (size_t)rand() % (round < 100 ? 9 : 90000);
            if (chunk > len - at)
                chunk = len - at;
            size_t off = 0;
            while (off < chunk) {
                size_t k = gw_ws_track_bytes(&t, buf + at + off, chunk - off, 1);
                assert_true(k > 0 && k <= chunk - off);
                off += k;
                if (gw_ws_at_boundary(&t)) {
                    assert_true(seen < n_ends);
                    assert_int_equal(at + off, ends[seen]);
                    seen++;
                }
            }
            at += chunk;
        }
        assert_int_equal(seen, n_ends);
    }
    gw_ws_track t = { 0 }; /* without STOP: everything taken, boundary at the end */
    assert_int_equal(gw_ws_track_bytes(&t, buf, len - 1, 0), len - 1);
    assert_false(gw_ws_at_boundary(&t));
    assert_int_equal(gw_ws_track_bytes(&t, buf + len - 1, 1, 0), 1);
    assert_true(gw_ws_at_boundary(&t));
    free(buf);
}

static void test_close_frames(void **state)
{
    (void)state;
    char f[8];
    assert_int_equal(gw_ws_close_frame(f, 1001, 0, 0), 4);
    assert_memory_equal(f, "\x88\x02\x03\xe9", 4);
    assert_int_equal(gw_ws_close_frame(f, 1001, 1, 0x01020304), 8);
    assert_memory_equal(f, "\x88\x82\x01\x02\x03\x04", 6);
    assert_int_equal((uint8_t)f[6], 0x03 ^ 0x01);
    assert_int_equal((uint8_t)f[7], 0xe9 ^ 0x02);
}

/* A Close frame that passed ends its direction: the drain sends no second Close after it
 * (RFC 6455 §5.5.1). Data, ping and continuation frames do not; the Close is noted at its
 * header, whatever the split and however its payload arrives. */
static void test_close_frame_noted(void **state)
{
    (void)state;
    char buf[64];
    size_t len = frame(buf, 3, 1);
    buf[len++] = (char)0x89; /* a ping with 1 payload byte (unmasked: from a server) */
    buf[len++] = 1;
    buf[len++] = 'p';
    buf[len++] = (char)0x00; /* a continuation frame, empty */
    buf[len++] = 0;
    size_t before_close = len;
    static const char close_masked[] = "\x88\x82\x01\x02\x03\x04\x02\xeb";
    memcpy(buf + len, close_masked, 8);
    len += 8;
    for (size_t split = 1; split <= len; split++) {
        gw_ws_track t = { 0 };
        size_t at = 0;
        while (at < len) {
            size_t chunk = split < len - at ? split : len - at;
            size_t k = gw_ws_track_bytes(&t, buf + at, chunk, 1);
            at += k;
            /* noted once the Close's 6 header bytes are in, not before */
            assert_int_equal(t.closed, at >= before_close + 6);
        }
        assert_true(gw_ws_at_boundary(&t));
    }
    gw_ws_track t = { 0 }; /* an unmasked Close (from a server) split in its header */
    char f[8];
    size_t n = gw_ws_close_frame(f, 1000, 0, 0);
    assert_int_equal(gw_ws_track_bytes(&t, f, 1, 1), 1);
    assert_false(t.closed);
    assert_int_equal(gw_ws_track_bytes(&t, f + 1, n - 1, 1), n - 1);
    assert_true(t.closed && gw_ws_at_boundary(&t));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_boundaries_across_any_split),
        cmocka_unit_test(test_close_frames),
        cmocka_unit_test(test_close_frame_noted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
