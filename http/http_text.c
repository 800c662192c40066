/* http_text.c — small HTTP texts: reason phrases and the per-thread cached Date value. */
#include <string.h>
#include <stdio.h>
#include <time.h>

#include "http/http1.h"
#include "http/server.h"

const char *gw_status_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return status < 200 ? "Informational" : status < 300 ? "Success"
                  : status < 400 ? "Redirection" : status < 500 ? "Client Error" : "Server Error";
    }
}

/* Formatting a Date costs a gmtime + strftime; the value changes once a second, so each
 * thread keeps the last one. */
const char *gw_http_date(uv_loop_t *loop)
{
    static _Thread_local time_t cached_sec = -1;
    static _Thread_local char cached[40];
    (void)loop;
    time_t now = time(NULL);
    if (now != cached_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(cached, sizeof cached, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        cached_sec = now;
    }
    return cached;
}

void gw_json_escape(char *out, size_t *len, size_t cap, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t l = *len;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            if (l + 2 >= cap) break;
            out[l++] = '\\';
            out[l++] = (char)ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            /* non-ASCII is escaped byte-wise: a log line must stay valid JSON whatever the
             * client sent (bytes need not be UTF-8) */
            if (l + 6 >= cap) break;
            memcpy(out + l, "\\u00", 4);
            out[l + 4] = hex[ch >> 4];
            out[l + 5] = hex[ch & 15];
            l += 6;
        } else {
            if (l + 1 >= cap) break;
            out[l++] = (char)ch;
        }
    }
    *len = l;
}
