/* admin_certs.h — the admin API's certificate endpoints and metrics (gateway/certs.h):
 *
 *   GET  /admin/certificates          every TLS listener's certificates: subject, SANs,
 *                                     key type, issuer, validity, seconds to expiry
 *   POST /admin/certificates/reload   reload every certificate (all or nothing); 200 with
 *                                     the new list, 422 naming the pair that failed
 *
 * and, appended to /metrics: gateway_tls_certificate_expiry_seconds per certificate and
 * gateway_tls_certificate_reloads_total. */
#ifndef GW_ADMIN_CERTS_H
#define GW_ADMIN_CERTS_H

#include <stddef.h>

#include "gateway/certs.h"
#include "http/server.h"

/* Answers REQ when PATH is one of the endpoints above (1), else 0. */
int gw_admin_certs_serve(gw_certs *certs, gw_request *req, gw_slice path);
/* Appends the certificate metrics to the malloc'd *text (*len bytes). 0 or -1. */
int gw_admin_certs_metrics(gw_certs *certs, char **text, size_t *len);

#endif
