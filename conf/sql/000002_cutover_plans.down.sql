-- Reverts 000002_cutover_plans.up.sql.
DROP TABLE IF EXISTS gateway_cutover_plans;
