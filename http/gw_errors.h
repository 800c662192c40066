/* gw_errors.h — the gateway's error codes: negative numbers from one table, each with its
 * message text, in the style of libuv's UV_E* codes. Functions return 0 or a GW_E* code. */
#ifndef GW_ERRORS_H
#define GW_ERRORS_H

#define GW_ERRNO_MAP(XX)                                                   \
    XX(NOMEM, "out of memory")                                             \
    XX(INVAL, "invalid argument")                                          \
    XX(IO, "i/o error")                                                    \
    XX(PARSE, "malformed input")                                           \
    XX(NOROUTE, "no route")                                                \
    XX(NOUPSTREAM, "no healthy endpoint")                                  \
    XX(CONNECT, "upstream connect failed")                                 \
    XX(RESET, "upstream connection reset")                                 \
    XX(TIMEOUT, "upstream timeout")                                        \
    XX(UPSTREAM_PROTO, "upstream sent an invalid response")                \
    XX(CLOSED, "connection closed")                                        \
    XX(TOOBIG, "too large")

typedef enum gw_errno {
    GW_OK = 0,
#define XX(code, _) GW_E##code,
    GW__ERR_FIRST = -1000,
    GW_ERRNO_MAP(XX)
#undef XX
} gw_errno;

/* Message text of a GW_E* code, or of a negative errno / libuv code. Never NULL. */
const char *gw_strerror(int err);
/* Short stable name (for logs and metrics labels): "connect", "timeout", ... */
const char *gw_errname(int err);

#endif
