-- Differential refresh: how a quarantine row was resolved, and what a watermark covers.

ALTER TABLE migration_control.quarantine ADD COLUMN IF NOT EXISTS resolution text;
ALTER TABLE migration_control.watermarks ADD COLUMN IF NOT EXISTS min_legacy_id bigint;
ALTER TABLE migration_control.watermarks ADD COLUMN IF NOT EXISTS mode text;

-- The same key function as a single expression, so that the planner inlines it (a SQL function
-- with a FROM clause is called row by row): used to find target rows by legacy id.
CREATE OR REPLACE FUNCTION migration_control.legacy_uuid(entity text, legacy_id bigint)
RETURNS uuid LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $fn$
  SELECT encode(set_byte(set_byte(
    decode(md5('migration_assets' || entity || ':' || legacy_id::text), 'hex'),
    6, (get_byte(decode(md5('migration_assets' || entity || ':' || legacy_id::text), 'hex'), 6) & 15) | 48),
    8, (get_byte(decode(md5('migration_assets' || entity || ':' || legacy_id::text), 'hex'), 8) & 63) | 128),
    'hex')::uuid
$fn$;

-- Rows loaded with an optional foreign key set NULL (parent missing) are retried on every run;
-- this small partial index finds them without reading every row's metadata.
CREATE INDEX IF NOT EXISTS "patients_retry_idx" ON public."patients" (id) WHERE (metadata -> 'recovered') ? 'retry';
CREATE INDEX IF NOT EXISTS "cases_retry_idx" ON public."cases" (id) WHERE (metadata -> 'recovered') ? 'retry';
CREATE INDEX IF NOT EXISTS "orders_retry_idx" ON public."orders" (id) WHERE (metadata -> 'recovered') ? 'retry';
CREATE INDEX IF NOT EXISTS "templates_retry_idx" ON public."templates" (id) WHERE (metadata -> 'recovered') ? 'retry';
CREATE INDEX IF NOT EXISTS "case_states_retry_idx" ON public."case_states" (id) WHERE (metadata -> 'recovered') ? 'retry';
CREATE INDEX IF NOT EXISTS "shipments_retry_idx" ON public."shipments" (id) WHERE (metadata -> 'recovered') ? 'retry';
CREATE INDEX IF NOT EXISTS "tasks_retry_idx" ON public."tasks" (id) WHERE (metadata -> 'recovered') ? 'retry';
CREATE INDEX IF NOT EXISTS "files_retry_idx" ON public."files" (id) WHERE (metadata -> 'recovered') ? 'retry';
CREATE INDEX IF NOT EXISTS "messages_retry_idx" ON public."messages" (id) WHERE (metadata -> 'recovered') ? 'retry';
CREATE INDEX IF NOT EXISTS "comments_retry_idx" ON public."comments" (id) WHERE (metadata -> 'recovered') ? 'retry';
CREATE INDEX IF NOT EXISTS "system_messages_retry_idx" ON public."system_messages" (id) WHERE (metadata -> 'recovered') ? 'retry';
CREATE INDEX IF NOT EXISTS "projects_retry_idx" ON public."projects" (id) WHERE (metadata -> 'recovered') ? 'retry';
CREATE INDEX IF NOT EXISTS "treatment_plans_retry_idx" ON public."treatment_plans" (id) WHERE (metadata -> 'recovered') ? 'retry';
CREATE INDEX IF NOT EXISTS "purchases_retry_idx" ON public."purchases" (id) WHERE (metadata -> 'recovered') ? 'retry';
CREATE INDEX IF NOT EXISTS "payments_retry_idx" ON public."payments" (id) WHERE (metadata -> 'recovered') ? 'retry';
CREATE INDEX IF NOT EXISTS "order_cases_retry_idx" ON public."order_cases" (id) WHERE (metadata -> 'recovered') ? 'retry';
CREATE INDEX IF NOT EXISTS "patient_events_retry_idx" ON public."patient_events" (id) WHERE (metadata -> 'recovered') ? 'retry';
