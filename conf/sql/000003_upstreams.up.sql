-- 000003_upstreams: upstream definitions in the PostgreSQL route store (routes/upstreams.h).
--
-- gateway_upstreams holds one row per upstream the routes source defines; doc is the
-- definition exactly as in a routes file's "upstreams" object (gateway.json's shape:
-- endpoints, timeouts, pool, breaker, host, tls, resolve_ms). gateway.json's own upstreams
-- are not here; a row of the same name wins over gateway.json's definition. A change bumps
-- gateway_route_version once per transaction and NOTIFYs like a route change (the same
-- trigger function), so an upstream change is in force on every instance like a route flip.
-- gateway_route_audit gets the upstream a change was about (route_id is NULL then).
--
-- The version is bumped and notified once here, so running gateways load again and start
-- using this table without a restart.

CREATE TABLE gateway_upstreams (
    name       text PRIMARY KEY,
    doc        jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT gateway_upstreams_name CHECK (name ~ '^[A-Za-z0-9_.-]{1,63}$'),
    CONSTRAINT gateway_upstreams_doc CHECK (jsonb_typeof(doc) = 'object')
);

CREATE TRIGGER gateway_upstreams_version
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON gateway_upstreams
    FOR EACH STATEMENT EXECUTE FUNCTION gateway_route_version_bump();

ALTER TABLE gateway_route_audit ADD COLUMN upstream text;

UPDATE gateway_route_version SET version = version + 1;
SELECT pg_notify('gateway_routes', version::text) FROM gateway_route_version;
