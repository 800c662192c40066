/* redis_topo.h — the pure parts of talking to a Redis Sentinel set or a Redis Cluster: key
 * slots, redirections, and the replies that describe the topology. No I/O; unit-tested in
 * tests/unit/composers/test_redis_topo.c. The connections that use them: redis_client.c.
 *
 * Replies are hiredis 0.14 redisReply trees (hiredis/read.h). */
#ifndef CMP_REDIS_TOPO_H
#define CMP_REDIS_TOPO_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#define CMP_REDIS_SLOTS 16384
#define CMP_REDIS_HOST_MAX 256 /* a host name or address, NUL included */

/* "host:port" or "[v6]:port" into HOST and *PORT; 0, or -1 when malformed. */
int cmp_redis_parse_addr(const char *s, size_t n, char *host, size_t hostsz, int *port);

/* CRC16-CCITT (XMODEM: poly 0x1021, init 0), the checksum Redis Cluster hashes keys with. */
uint16_t cmp_redis_crc16(const char *p, size_t n);
/* The cluster slot of KEY: CRC16 of the key, or of the part between the first '{' and the
 * next '}' when that part is not empty (a hash tag), modulo 16384. */
uint16_t cmp_redis_key_slot(const char *key, size_t n);

/* An error reply "MOVED 3999 127.0.0.1:6381" or "ASK 3999 127.0.0.1:6381": 1 (MOVED) or
 * 2 (ASK) with the slot and the address filled in; 0 when it is another error; -1 when it
 * says MOVED/ASK but is malformed. The port follows the last ':' (Redis writes an IPv6
 * address without brackets: "MOVED 3999 ::1:7000"; "[::1]:7000" is read too). An empty host
 * (":6381", older servers) stays empty: the caller substitutes the node it asked. */
enum { CMP_REDIS_NOT_REDIRECT = 0, CMP_REDIS_MOVED = 1, CMP_REDIS_ASK = 2 };
int cmp_redis_parse_redirect(const char *err, size_t n, uint16_t *slot, char *host,
                             size_t hostsz, int *port);

/* One range of CLUSTER SLOTS: slots [start, end] served by the master at host:port. */
typedef struct cmp_redis_range {
    uint16_t start, end;
    int port;
    char host[CMP_REDIS_HOST_MAX];
} cmp_redis_range;

/* CLUSTER SLOTS: an array of [start, end, [host, port, id?, ...], replicas...]. Fills at most
 * MAX ranges (the masters only; replicas are not used: a replica that takes over is seen
 * through the next CLUSTER SLOTS). An empty host becomes ASKED_HOST (the node that answered).
 * Returns the number of ranges, or -1 when the reply is not that shape (a slot over 16383,
 * start > end, a port out of range, more than MAX ranges). */
int cmp_redis_parse_slots(const redisReply *r, const char *asked_host, cmp_redis_range *out,
                          int max);

/* SENTINEL get-master-addr-by-name: [host, port-as-string]. 0 with HOST/PORT, 1 when the
 * sentinel does not know the name (nil reply), -1 when malformed. */
int cmp_redis_parse_master_addr(const redisReply *r, char *host, size_t hostsz, int *port);

/* ROLE: 1 when the first element is "master", 0 for "slave"/"sentinel", -1 when malformed. */
int cmp_redis_parse_role(const redisReply *r);

/* A server's text S (N bytes) for a log line into OUT (OUTSZ bytes, NUL-terminated, cut to
 * fit): every occurrence of SECRET (a password; NULL or "": none) becomes '*'s, and so does
 * the end of S when it is the start of SECRET (a text that was cut); control bytes become
 * '?'. Masked before it is cut, so no prefix of the secret survives the cut. Its length. */
size_t cmp_redis_masked(const char *s, size_t n, const char *secret, char *out, size_t outsz);

#endif
