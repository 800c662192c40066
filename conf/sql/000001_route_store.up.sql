-- 000001_route_store: the PostgreSQL route store (routes/source_pg.h).
--
-- gateway_routes holds one route per row; doc is the route object exactly as in routes.json
-- (its "id" included, equal to the id column), position its place in the "routes" array.
-- gateway_settings holds the document's other keys ('legacy_upstream' -> '"legacy"').
-- Any change to either table bumps gateway_route_version.version ONCE per transaction and
-- sends NOTIFY gateway_routes with the new version as payload; every gateway LISTENs and
-- reloads. gateway_route_audit records who changed what (written by the gateway with each
-- change it makes; version = the version that change produced).
--
-- Applied by `gatewayctl db migrate` (which records it in gateway_schema_migrations).

CREATE TABLE gateway_routes (
    id         text PRIMARY KEY,
    position   integer NOT NULL,
    doc        jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- the row's id is the document's id: a hand-edited doc cannot silently rename a route
    CONSTRAINT gateway_routes_doc_id CHECK (jsonb_typeof(doc) = 'object' AND doc ->> 'id' = id)
);

CREATE TABLE gateway_settings (
    key   text PRIMARY KEY,
    value jsonb NOT NULL
);

CREATE TABLE gateway_route_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version   bigint NOT NULL
);
INSERT INTO gateway_route_version VALUES (true, 0);

CREATE TABLE gateway_route_audit (
    seq       bigserial PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    who       text NOT NULL,
    action    text NOT NULL,
    route_id  text,
    old_value jsonb,
    new_value jsonb,
    version   bigint NOT NULL
);

-- Statement-level, so a statement touching 1,000 rows is one bump; and at most one bump per
-- transaction (a transaction-local marker), so a change made of several statements (the
-- gateway's own writes: upsert, delete, settings) is one version and one notification.
-- Statements that touch no row still count: they were meant as a change.
CREATE FUNCTION gateway_route_version_bump() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v bigint;
BEGIN
    IF coalesce(current_setting('gateway.route_version_xact', true), '')
       IS DISTINCT FROM txid_current()::text THEN
        UPDATE gateway_route_version SET version = version + 1 RETURNING version INTO v;
        PERFORM set_config('gateway.route_version_xact', txid_current()::text, true);
        PERFORM pg_notify('gateway_routes', v::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER gateway_routes_version
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON gateway_routes
    FOR EACH STATEMENT EXECUTE FUNCTION gateway_route_version_bump();
CREATE TRIGGER gateway_settings_version
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON gateway_settings
    FOR EACH STATEMENT EXECUTE FUNCTION gateway_route_version_bump();
