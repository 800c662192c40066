/* gw_errors.c — message text and names for GW_E* codes. */
#include "http/gw_errors.h"

#include <ctype.h>
#include <uv.h>

const char *gw_strerror(int err)
{
    switch (err) {
    case GW_OK: return "ok";
#define XX(code, msg) case GW_E##code: return msg;
    GW_ERRNO_MAP(XX)
#undef XX
    default: return err < 0 && err > GW__ERR_FIRST ? uv_strerror(err) : "unknown error";
    }
}

const char *gw_errname(int err)
{
    switch (err) {
    case GW_OK: return "ok";
    case GW_ENOMEM: return "nomem";
    case GW_EINVAL: return "inval";
    case GW_EIO: return "io";
    case GW_EPARSE: return "parse";
    case GW_ENOROUTE: return "noroute";
    case GW_ENOUPSTREAM: return "no_endpoint";
    case GW_ECONNECT: return "connect";
    case GW_ERESET: return "reset";
    case GW_ETIMEOUT: return "timeout";
    case GW_EUPSTREAM_PROTO: return "protocol";
    case GW_ECLOSED: return "closed";
    case GW_ETOOBIG: return "toobig";
    default: return "other";
    }
}
