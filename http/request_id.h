/* request_id.h — X-Request-Id: accept a sane incoming one, otherwise make a new one. */
#ifndef GW_REQUEST_ID_H
#define GW_REQUEST_ID_H

#include <stddef.h>
#include <stdint.h>

#include "http/gw_slice.h"

#define GW_REQUEST_ID_MAX 64

/* 1..64 bytes of [A-Za-z0-9._:-]: safe to echo in headers and logs. */
int gw_request_id_valid(gw_slice id);
/* Writes a new UUIDv4-shaped id (36 chars + NUL) into out (>= 37 bytes). Per-thread PRNG
 * seeded from the kernel once: no system call per request. */
void gw_request_id_generate(char *out);

/* A fast per-thread pseudo-random 64-bit value (splitmix64): for ids, splits, sampling. */
uint64_t gw_random64(void);

#endif
