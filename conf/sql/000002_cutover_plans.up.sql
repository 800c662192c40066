-- 000002_cutover_plans: cutover plans in the PostgreSQL route store (gateway/cutover.h).
--
-- One row per route with a plan; doc is the plan exactly as GET /admin/cutovers/{route}
-- gives its configuration and state (rt_cut_plan_to_json), its "route" equal to route_id.
-- Written only by the instance that drives the plans: the one holding the session-level
-- advisory lock 7455537064250930802 ("gwcutovr"); the others read it.

CREATE TABLE gateway_cutover_plans (
    route_id   text PRIMARY KEY,
    doc        jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT gateway_cutover_plans_doc_route CHECK (jsonb_typeof(doc) = 'object' AND doc ->> 'route' = route_id)
);
