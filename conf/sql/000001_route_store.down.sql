-- Reverts 000001_route_store.up.sql. The triggers go with their tables.
DROP TABLE IF EXISTS gateway_route_audit;
DROP TABLE IF EXISTS gateway_route_version;
DROP TABLE IF EXISTS gateway_settings;
DROP TABLE IF EXISTS gateway_routes;
DROP FUNCTION IF EXISTS gateway_route_version_bump();
