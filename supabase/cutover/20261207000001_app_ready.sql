-- Applied by migration-assets cutover, never by setup: defaults for the application's inserts and
-- an updated_at trigger. Nothing here rewrites a migrated value.

-- Sets the column named by the trigger's argument to now() on every update of the application.
-- A load (allowed after cutover by MIGRATION_AFTER_CUTOVER only) writes a legacy row's own
-- values, its change column included, and always rewrites the row's metadata (source hash,
-- recoveries): such an update keeps its values. A fixed, empty search_path (what Supabase's
-- advisors ask of every function): everything it calls is in pg_catalog. Triggers run it
-- whoever updates; nobody calls it directly.
CREATE OR REPLACE FUNCTION migration_control.set_updated_at() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $fn$
BEGIN
  IF NEW.metadata IS NOT DISTINCT FROM OLD.metadata THEN
    NEW := jsonb_populate_record(NEW, jsonb_build_object(TG_ARGV[0], now()));
  END IF;
  RETURN NEW;
END
$fn$;
REVOKE EXECUTE ON FUNCTION migration_control.set_updated_at() FROM PUBLIC;

ALTER TABLE public."offices"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "created_at" SET DEFAULT now(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."offices" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."profiles"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "created_on" SET DEFAULT current_date,
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."profiles" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."categories"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."categories" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."roles"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."roles" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."event_types"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."event_types" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."doctors"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."doctors" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."patients"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."patients" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."technicians"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."technicians" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."permissions"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."permissions" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."products"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."products" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."addresses"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."addresses" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."doctor_offices"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."doctor_offices" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."patients_doctors_offices"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."patients_doctors_offices" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."role_permissions"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."role_permissions" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."technician_roles"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."technician_roles" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."cases"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."cases" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."orders"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."orders" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."jaws"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."jaws" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."templates"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."templates" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."brackets"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."brackets" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."case_states"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."case_states" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."order_states"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."order_states" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."team_communications"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."team_communications" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."shipments"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."shipments" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."tasks"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."tasks" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."template_views"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."template_views" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."template_products"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."template_products" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."files"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."files" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."template_view_groups"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."template_view_groups" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."messages"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."messages" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."case_files"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."case_files" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."order_files"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."order_files" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."message_attachments"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."message_attachments" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."case_messages"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."case_messages" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."comments"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."comments" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."system_messages"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "created_at" SET DEFAULT now(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."system_messages" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."template_view_roles"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."template_view_roles" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."projects"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."projects" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."treatment_plans"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."treatment_plans" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."purchases"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."purchases" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."operations"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."operations" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."treatment_discussions"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."treatment_discussions" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."payments"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."payments" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."order_cases"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."order_cases" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
ALTER TABLE public."patient_events"
  ALTER COLUMN id SET DEFAULT gen_random_uuid(),
  ALTER COLUMN "updated_at" SET DEFAULT now();
CREATE OR REPLACE TRIGGER ma_set_updated_at BEFORE UPDATE ON public."patient_events" FOR EACH ROW EXECUTE FUNCTION migration_control.set_updated_at('updated_at');
