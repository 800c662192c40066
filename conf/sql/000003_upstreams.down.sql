-- Reverts 000003_upstreams.up.sql: the routes source's upstream definitions are dropped
-- (gateway.json's stay); a route still naming one fails validation at the next load, and the
-- table in force stays until it is fixed. The trigger goes with its table.
ALTER TABLE gateway_route_audit DROP COLUMN IF EXISTS upstream;
DROP TABLE IF EXISTS gateway_upstreams;
UPDATE gateway_route_version SET version = version + 1;
SELECT pg_notify('gateway_routes', version::text) FROM gateway_route_version;
