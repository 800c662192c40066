/* fuzz_loop.h — what the socket-driven fuzz drivers share: a monotonic clock, one turn of a
 * libuv loop that also wakes for the driver's own socket, and a loopback listener playing
 * the peer. Header-only: each driver is one translation unit. */
#ifndef FUZZ_LOOP_H
#define FUZZ_LOOP_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <uv.h>

static inline uint64_t fuzz_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* One loop turn, waiting at most WAIT_MS for the loop's next timer, its I/O or FD (< 0:
 * none) to become readable. */
static inline void fuzz_turn(uv_loop_t *loop, int fd, int wait_ms)
{
    uv_run(loop, UV_RUN_NOWAIT);
    int t = uv_backend_timeout(loop);
    if (t < 0 || t > wait_ms)
        t = wait_ms;
    struct pollfd p[2] = { { uv_backend_fd(loop), POLLIN, 0 }, { fd, POLLIN, 0 } };
    poll(p, fd >= 0 ? 2 : 1, t);
}

/* A non-blocking listener on 127.0.0.1, any port; its address in *ADDR. Aborts on failure
 * (a driver cannot run without it). */
static inline int fuzz_listen_loopback(struct sockaddr_in *addr)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = { .sin_family = AF_INET };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &al) != 0)
        abort();
    *addr = a;
    return fd;
}

#endif
