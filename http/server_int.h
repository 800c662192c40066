/* server_int.h — internals shared by listener.c and client.c (not for handlers). */
#ifndef GW_SERVER_INT_H
#define GW_SERVER_INT_H

#include "http/deadline.h"
#include "http/queue.h"
#include "http/server.h"
#include "http/tls_bio.h"

struct gw_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    gw_server_opts opts;
    gw_handler handler;
    gw_queue clients;          /* every open gw_client */
    gw_queue posted;           /* clients with deferred work (nginx "posted events") */
    uv_idle_t idle;            /* runs the posted work; active only while there is some */
    gw_timeouts timeouts;      /* every client's deadline, one libuv timer (deadline.h) */
    int n_clients;
    int port;
    uint64_t next_conn_id;
    unsigned draining : 1;
    unsigned closing : 1;
    unsigned listener_open : 1;
    unsigned idle_closed : 1;
    unsigned timer_closed : 1;
    void (*done)(gw_server *s);
    /* read buffers of idle connections come back here: an idle keep-alive connection
     * holds no buffer at all */
    char **free_bufs;
    int n_free_bufs, cap_free_bufs;
    size_t buf_size;
    struct req_impl **free_reqs; /* recycled request structs (client.c) */
    int n_free_reqs;
    /* TLS listeners (opts.tls): the snapshot new connections pin, re-taken from the slot
     * only when its generation moved; scratch buffers of the transport (tls.c) */
    struct gw_tls_ctx *tls_ctx;
    uint64_t tls_gen;
    gw_tls_buf tls_wire;       /* records OpenSSL wrote, flushed right after each call */
    char *tls_plain;           /* small multi-piece writes coalesced into one record */
};

#define GW_FREE_REQS_MAX 64

int gw__client_accept(gw_server *s); /* 0, or <0: the listener closes the connection */
void gw__client_shutdown(gw_client *c, int hard); /* drain (hard=0) or abort (hard=1) */
void gw__close_all_clients(gw_server *s, int hard);
void gw__client_run_posted(gw_queue *node);
void gw__client_on_timeout(gw_timeout *t); /* on_expire of the server's timeouts */
void gw__server_post(gw_server *s, gw_queue *node);
void gw__server_client_gone(gw_server *s);

#endif
