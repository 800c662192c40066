/* ws_frame.c — see ws_frame.h. */
#include "http/ws_frame.h"

/* The header's whole length once its first two bytes are known. */
static size_t header_len(const uint8_t *h)
{
    size_t len7 = h[1] & 0x7f;
    return 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + ((h[1] & 0x80) ? 4 : 0);
}

size_t gw_ws_track_bytes(gw_ws_track *t, const char *p, size_t n, int stop)
{
    size_t i = 0;
    while (i < n) {
        if (t->left > 0) { /* payload: skipped */
            uint64_t take = t->left < n - i ? t->left : n - i;
            t->left -= take;
            i += (size_t)take;
            if (t->left == 0 && stop)
                return i;
            continue;
        }
        t->hdr[t->hdr_len++] = (uint8_t)p[i++];
        if (t->hdr_len < 2 || t->hdr_len < header_len(t->hdr))
            continue;
        uint64_t len = t->hdr[1] & 0x7f;
        if (len == 126) {
            len = (uint64_t)t->hdr[2] << 8 | t->hdr[3];
        } else if (len == 127) {
            len = 0;
            for (int k = 2; k < 10; k++)
                len = len << 8 | t->hdr[k];
        }
        if ((t->hdr[0] & 0x0f) == 0x8)
            t->closed = 1;
        t->hdr_len = 0;
        t->left = len;
        if (len == 0 && stop)
            return i;
    }
    return i;
}

size_t gw_ws_close_frame(char *out, uint16_t code, int masked, uint32_t mask)
{
    uint8_t c[2] = { (uint8_t)(code >> 8), (uint8_t)code };
    out[0] = (char)0x88; /* FIN + Close */
    if (!masked) {
        out[1] = 2;
        out[2] = (char)c[0];
        out[3] = (char)c[1];
        return 4;
    }
    uint8_t m[4] = { (uint8_t)(mask >> 24), (uint8_t)(mask >> 16), (uint8_t)(mask >> 8), (uint8_t)mask };
    out[1] = (char)(0x80 | 2);
    for (int k = 0; k < 4; k++)
        out[2 + k] = (char)m[k];
    out[6] = (char)(c[0] ^ m[0]);
    out[7] = (char)(c[1] ^ m[1]);
    return 8;
}
