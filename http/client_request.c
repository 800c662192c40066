/* client_request.c — what a handler may ask of a request it holds: its route, a header,
 * the body (pulled on demand, with 100-continue), a pause, a close after the response. */
#include <stdlib.h>
#include <string.h>

#include "http/client_int.h"
#include "http/gw_errors.h"
#include "http/h2.h"

void gw_request_set_route(gw_request *req, const char *id, uint64_t version)
{
    if (!id)
        id = "-";
    size_t n = strnlen(id, sizeof req->route_buf - 1); /* truncated like the old snprintf */
    memcpy(req->route_buf, id, n);
    req->route_buf[n] = '\0';
    req->route_id = req->route_buf;
    req->route_version = version;
}

gw_slice gw_request_header(const gw_request *req, const char *name)
{
    for (int i = 0; i < req->n_headers; i++)
        if (gw_slice_ieq(req->headers[i].name, name))
            return req->headers[i].value;
    return (gw_slice){ NULL, 0 };
}

int gw_request_read_body(gw_request *req)
{
    if (req->stream)
        return gw__h2_read_body(req);
    gw_client *c = req->client;
    if (c->state != CS_ACTIVE || !(c->flags & F_HANDLER) || (c->flags & F_ABORT_POSTED))
        return GW_ECLOSED;
    if (req->max_body_bytes && req->content_length > 0 &&
        (uint64_t)req->content_length > req->max_body_bytes)
        return GW_ETOOBIG;
    if (req->expect_continue && !(c->flags & (F_CONTINUE_SENT | F_BODY_DONE)) &&
        !(c->flags & F_RESP_BEGUN)) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init((char *)cont, sizeof cont - 1);
        c->flags |= F_CONTINUE_SENT;
        if (gw__client_write(c, &b, 1) < 0) {
            gw__client_abort_later(c, GW_ECLOSED);
            return GW_ECLOSED;
        }
    }
    c->flags |= F_BODY_PULL;
    gw__client_arm_timer(c);
    if (c->flags & F_IN_PARSE)
        c->flags |= F_REPARSE;
    else
        gw__server_post(c->server, &c->post_node); /* body callbacks never nest in this call */
    return 0;
}

void gw_request_pause_body(gw_request *req)
{
    if (req->stream) {
        gw__h2_pause_body(req);
        return;
    }
    gw_client *c = req->client;
    if (c->state != CS_ACTIVE)
        return;
    c->flags &= ~F_BODY_PULL;
    gw__client_arm_timer(c);
    if (!(c->flags & F_IN_PARSE))
        gw__client_update_reading(c);
}

void gw_request_close_after(gw_request *req)
{
    if (req->stream)
        return; /* HTTP/2: the connection carries other streams; nothing to close */
    req->client->flags |= F_CLOSE_AFTER;
}

