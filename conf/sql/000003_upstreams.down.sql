-- Reverts 000003_upstreams.up.sql. Refused while the routes source still defines upstreams:
-- dropped, a route naming one would make every instance's load fail; delete them first
-- (DELETE /admin/upstreams/NAME, after the routes using them). The table is locked before it
-- is checked, so no upstream is stored between the check and the drop. The trigger goes
-- with its table.
DO $$
BEGIN
    IF to_regclass('gateway_upstreams') IS NOT NULL THEN
        LOCK TABLE gateway_upstreams IN ACCESS EXCLUSIVE MODE;
        IF EXISTS (SELECT 1 FROM gateway_upstreams) THEN
            RAISE EXCEPTION 'gateway_upstreams is not empty: delete the routes source''s upstreams first (DELETE /admin/upstreams/NAME)';
        END IF;
    END IF;
END $$;
ALTER TABLE gateway_route_audit DROP COLUMN IF EXISTS upstream;
DROP TABLE IF EXISTS gateway_upstreams;
UPDATE gateway_route_version SET version = version + 1;
SELECT pg_notify('gateway_routes', version::text) FROM gateway_route_version;
