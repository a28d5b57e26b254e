-- The 45 target tables in dependency order (parents first).

-- offices: Practice locations where doctors see patients. Legacy table tbl_office; level 1, CRITICAL.
CREATE TABLE IF NOT EXISTS public."offices" (
  id uuid NOT NULL,
  "name" text NOT NULL,
  "code" text NOT NULL,
  "email" text,
  "phone" text,
  "is_active" boolean NOT NULL,
  "created_at" timestamptz NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "offices_pkey" PRIMARY KEY (id),
  CONSTRAINT "offices_code_key" UNIQUE ("code"),
  CONSTRAINT "offices_email_email_format" CHECK ("email" ~ '^[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$')
);
ALTER TABLE public."offices" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."offices" IS 'Practice locations where doctors see patients.';

-- profiles: Login accounts of every person using the platform. Legacy table users; level 1, CRITICAL.
CREATE TABLE IF NOT EXISTS public."profiles" (
  id uuid NOT NULL,
  "email" text NOT NULL,
  "first_name" text NOT NULL,
  "last_name" text NOT NULL,
  "user_type" text NOT NULL,
  "is_active" boolean NOT NULL,
  "created_on" date NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "profiles_pkey" PRIMARY KEY (id),
  CONSTRAINT "profiles_email_key" UNIQUE ("email"),
  CONSTRAINT "profiles_email_email_format" CHECK ("email" ~ '^[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$'),
  CONSTRAINT "profiles_user_type_check" CHECK ("user_type" IN ('doctor', 'patient', 'technician', 'admin'))
);
ALTER TABLE public."profiles" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."profiles" IS 'Login accounts of every person using the platform.';

-- categories: Catalogue categories of products, templates and permissions. Legacy table lkp_category; level 1, CRITICAL.
CREATE TABLE IF NOT EXISTS public."categories" (
  id uuid NOT NULL,
  "name" text NOT NULL,
  "description" text,
  "sort_order" integer,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "categories_pkey" PRIMARY KEY (id),
  CONSTRAINT "categories_name_key" UNIQUE ("name")
);
ALTER TABLE public."categories" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."categories" IS 'Catalogue categories of products, templates and permissions.';

-- roles: Security roles assigned to staff. Legacy table sec_roles; level 1, CRITICAL.
CREATE TABLE IF NOT EXISTS public."roles" (
  id uuid NOT NULL,
  "name" text NOT NULL,
  "description" text,
  "is_system" boolean NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "roles_pkey" PRIMARY KEY (id),
  CONSTRAINT "roles_name_key" UNIQUE ("name")
);
ALTER TABLE public."roles" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."roles" IS 'Security roles assigned to staff.';

-- event_types: Kinds of patient events (visit, scan, refinement...). Legacy table lkp_event_type; level 1, LOW.
CREATE TABLE IF NOT EXISTS public."event_types" (
  id uuid NOT NULL,
  "code" text NOT NULL,
  "name" text NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "event_types_pkey" PRIMARY KEY (id),
  CONSTRAINT "event_types_code_key" UNIQUE ("code")
);
ALTER TABLE public."event_types" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."event_types" IS 'Kinds of patient events (visit, scan, refinement...).';

-- doctors: Doctors who prescribe treatment. Legacy table dr_master; level 2, CRITICAL.
CREATE TABLE IF NOT EXISTS public."doctors" (
  id uuid NOT NULL,
  "profile_id" uuid NOT NULL,
  "license_number" text NOT NULL,
  "specialty" text NOT NULL,
  "is_active" boolean NOT NULL,
  "joined_on" date,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "doctors_pkey" PRIMARY KEY (id),
  CONSTRAINT "doctors_license_number_key" UNIQUE ("license_number"),
  CONSTRAINT "doctors_specialty_check" CHECK ("specialty" IN ('orthodontist', 'general', 'pediatric')),
  CONSTRAINT "doctors_profile_id_fkey" FOREIGN KEY ("profile_id") REFERENCES public."profiles" (id)
);
CREATE INDEX IF NOT EXISTS "doctors_profile_id_idx" ON public."doctors" ("profile_id");
ALTER TABLE public."doctors" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."doctors" IS 'Doctors who prescribe treatment.';

-- patients: Patients under treatment. Legacy table pt_master; level 2, CRITICAL.
CREATE TABLE IF NOT EXISTS public."patients" (
  id uuid NOT NULL,
  "profile_id" uuid,
  "first_name" text NOT NULL,
  "last_name" text NOT NULL,
  "email" text,
  "date_of_birth" date,
  "gender" text NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "patients_pkey" PRIMARY KEY (id),
  CONSTRAINT "patients_email_key" UNIQUE ("email"),
  CONSTRAINT "patients_email_email_format" CHECK ("email" ~ '^[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$'),
  CONSTRAINT "patients_gender_check" CHECK ("gender" IN ('male', 'female', 'unknown')),
  CONSTRAINT "patients_profile_id_fkey" FOREIGN KEY ("profile_id") REFERENCES public."profiles" (id)
);
CREATE INDEX IF NOT EXISTS "patients_profile_id_idx" ON public."patients" ("profile_id");
ALTER TABLE public."patients" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."patients" IS 'Patients under treatment.';

-- technicians: Lab technicians who produce aligners and brackets. Legacy table lab_tech; level 2, HIGH.
CREATE TABLE IF NOT EXISTS public."technicians" (
  id uuid NOT NULL,
  "profile_id" uuid NOT NULL,
  "employee_code" text NOT NULL,
  "shift" text NOT NULL,
  "is_active" boolean NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "technicians_pkey" PRIMARY KEY (id),
  CONSTRAINT "technicians_employee_code_key" UNIQUE ("employee_code"),
  CONSTRAINT "technicians_shift_check" CHECK ("shift" IN ('day', 'night', 'weekend')),
  CONSTRAINT "technicians_profile_id_fkey" FOREIGN KEY ("profile_id") REFERENCES public."profiles" (id)
);
CREATE INDEX IF NOT EXISTS "technicians_profile_id_idx" ON public."technicians" ("profile_id");
ALTER TABLE public."technicians" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."technicians" IS 'Lab technicians who produce aligners and brackets.';

-- permissions: Permissions that roles grant. Legacy table sec_permission; level 2, HIGH.
CREATE TABLE IF NOT EXISTS public."permissions" (
  id uuid NOT NULL,
  "code" text NOT NULL,
  "description" text,
  "category_id" uuid NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "permissions_pkey" PRIMARY KEY (id),
  CONSTRAINT "permissions_code_key" UNIQUE ("code"),
  CONSTRAINT "permissions_category_id_fkey" FOREIGN KEY ("category_id") REFERENCES public."categories" (id)
);
CREATE INDEX IF NOT EXISTS "permissions_category_id_idx" ON public."permissions" ("category_id");
ALTER TABLE public."permissions" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."permissions" IS 'Permissions that roles grant.';

-- products: Orthodontic products (aligner kits, bracket systems, retainers). Legacy table prod_catalog; level 2, HIGH.
CREATE TABLE IF NOT EXISTS public."products" (
  id uuid NOT NULL,
  "sku" text NOT NULL,
  "name" text NOT NULL,
  "category_id" uuid NOT NULL,
  "price" numeric(14,2) NOT NULL,
  "is_active" boolean NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "products_pkey" PRIMARY KEY (id),
  CONSTRAINT "products_sku_key" UNIQUE ("sku"),
  CONSTRAINT "products_category_id_fkey" FOREIGN KEY ("category_id") REFERENCES public."categories" (id)
);
CREATE INDEX IF NOT EXISTS "products_category_id_idx" ON public."products" ("category_id");
ALTER TABLE public."products" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."products" IS 'Orthodontic products (aligner kits, bracket systems, retainers).';

-- addresses: Postal addresses of profiles (shipping destinations). Legacy table addr_book; level 2, MEDIUM.
CREATE TABLE IF NOT EXISTS public."addresses" (
  id uuid NOT NULL,
  "profile_id" uuid NOT NULL,
  "line1" text NOT NULL,
  "city" text NOT NULL,
  "postal_code" text,
  "is_primary" boolean NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "addresses_pkey" PRIMARY KEY (id),
  CONSTRAINT "addresses_profile_id_fkey" FOREIGN KEY ("profile_id") REFERENCES public."profiles" (id)
);
CREATE INDEX IF NOT EXISTS "addresses_profile_id_idx" ON public."addresses" ("profile_id");
ALTER TABLE public."addresses" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."addresses" IS 'Postal addresses of profiles (shipping destinations).';

-- doctor_offices: Which doctor practices at which office. Legacy table dr_office_xref; level 3, HIGH.
CREATE TABLE IF NOT EXISTS public."doctor_offices" (
  id uuid NOT NULL,
  "doctor_id" uuid NOT NULL,
  "office_id" uuid NOT NULL,
  "is_primary" boolean NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "doctor_offices_pkey" PRIMARY KEY (id),
  CONSTRAINT "doctor_offices_doctor_id_fkey" FOREIGN KEY ("doctor_id") REFERENCES public."doctors" (id),
  CONSTRAINT "doctor_offices_office_id_fkey" FOREIGN KEY ("office_id") REFERENCES public."offices" (id)
);
CREATE INDEX IF NOT EXISTS "doctor_offices_doctor_id_idx" ON public."doctor_offices" ("doctor_id");
CREATE INDEX IF NOT EXISTS "doctor_offices_office_id_idx" ON public."doctor_offices" ("office_id");
ALTER TABLE public."doctor_offices" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."doctor_offices" IS 'Which doctor practices at which office.';

-- patients_doctors_offices: A patient's assignment to a doctor at an office. Legacy table pt_dr_office; level 3, HIGH.
CREATE TABLE IF NOT EXISTS public."patients_doctors_offices" (
  id uuid NOT NULL,
  "patient_id" uuid NOT NULL,
  "doctor_id" uuid NOT NULL,
  "office_id" uuid NOT NULL,
  "assigned_on" date,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "patients_doctors_offices_pkey" PRIMARY KEY (id),
  CONSTRAINT "patients_doctors_offices_patient_id_fkey" FOREIGN KEY ("patient_id") REFERENCES public."patients" (id),
  CONSTRAINT "patients_doctors_offices_doctor_id_fkey" FOREIGN KEY ("doctor_id") REFERENCES public."doctors" (id),
  CONSTRAINT "patients_doctors_offices_office_id_fkey" FOREIGN KEY ("office_id") REFERENCES public."offices" (id)
);
CREATE INDEX IF NOT EXISTS "patients_doctors_offices_patient_id_idx" ON public."patients_doctors_offices" ("patient_id");
CREATE INDEX IF NOT EXISTS "patients_doctors_offices_doctor_id_idx" ON public."patients_doctors_offices" ("doctor_id");
CREATE INDEX IF NOT EXISTS "patients_doctors_offices_office_id_idx" ON public."patients_doctors_offices" ("office_id");
ALTER TABLE public."patients_doctors_offices" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."patients_doctors_offices" IS 'A patient''s assignment to a doctor at an office.';

-- role_permissions: Permissions granted by each role. Legacy table sec_role_perm; level 3, MEDIUM.
CREATE TABLE IF NOT EXISTS public."role_permissions" (
  id uuid NOT NULL,
  "role_id" uuid NOT NULL,
  "permission_id" uuid NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "role_permissions_pkey" PRIMARY KEY (id),
  CONSTRAINT "role_permissions_role_id_fkey" FOREIGN KEY ("role_id") REFERENCES public."roles" (id),
  CONSTRAINT "role_permissions_permission_id_fkey" FOREIGN KEY ("permission_id") REFERENCES public."permissions" (id)
);
CREATE INDEX IF NOT EXISTS "role_permissions_role_id_idx" ON public."role_permissions" ("role_id");
CREATE INDEX IF NOT EXISTS "role_permissions_permission_id_idx" ON public."role_permissions" ("permission_id");
ALTER TABLE public."role_permissions" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."role_permissions" IS 'Permissions granted by each role.';

-- technician_roles: Roles held by lab technicians. Legacy table lab_tech_role; level 3, MEDIUM.
CREATE TABLE IF NOT EXISTS public."technician_roles" (
  id uuid NOT NULL,
  "technician_id" uuid NOT NULL,
  "role_id" uuid NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "technician_roles_pkey" PRIMARY KEY (id),
  CONSTRAINT "technician_roles_technician_id_fkey" FOREIGN KEY ("technician_id") REFERENCES public."technicians" (id),
  CONSTRAINT "technician_roles_role_id_fkey" FOREIGN KEY ("role_id") REFERENCES public."roles" (id)
);
CREATE INDEX IF NOT EXISTS "technician_roles_technician_id_idx" ON public."technician_roles" ("technician_id");
CREATE INDEX IF NOT EXISTS "technician_roles_role_id_idx" ON public."technician_roles" ("role_id");
ALTER TABLE public."technician_roles" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."technician_roles" IS 'Roles held by lab technicians.';

-- cases: Treatment cases: one patient, one doctor, one course of treatment. Legacy table case_hdr; level 4, CRITICAL.
CREATE TABLE IF NOT EXISTS public."cases" (
  id uuid NOT NULL,
  "patient_id" uuid NOT NULL,
  "doctor_id" uuid NOT NULL,
  "office_id" uuid NOT NULL,
  "assignment_id" uuid,
  "case_number" text NOT NULL,
  "status" text NOT NULL,
  "opened_at" timestamptz NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "cases_pkey" PRIMARY KEY (id),
  CONSTRAINT "cases_case_number_key" UNIQUE ("case_number"),
  CONSTRAINT "cases_status_check" CHECK ("status" IN ('draft', 'submitted', 'in_treatment', 'completed', 'cancelled')),
  CONSTRAINT "cases_patient_id_fkey" FOREIGN KEY ("patient_id") REFERENCES public."patients" (id),
  CONSTRAINT "cases_doctor_id_fkey" FOREIGN KEY ("doctor_id") REFERENCES public."doctors" (id),
  CONSTRAINT "cases_office_id_fkey" FOREIGN KEY ("office_id") REFERENCES public."offices" (id),
  CONSTRAINT "cases_assignment_id_fkey" FOREIGN KEY ("assignment_id") REFERENCES public."patients_doctors_offices" (id)
);
CREATE INDEX IF NOT EXISTS "cases_patient_id_idx" ON public."cases" ("patient_id");
CREATE INDEX IF NOT EXISTS "cases_doctor_id_idx" ON public."cases" ("doctor_id");
CREATE INDEX IF NOT EXISTS "cases_office_id_idx" ON public."cases" ("office_id");
CREATE INDEX IF NOT EXISTS "cases_assignment_id_idx" ON public."cases" ("assignment_id");
ALTER TABLE public."cases" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."cases" IS 'Treatment cases: one patient, one doctor, one course of treatment.';

-- orders: Lab orders placed by a doctor's office for a patient. Legacy table ord_hdr; level 4, CRITICAL.
CREATE TABLE IF NOT EXISTS public."orders" (
  id uuid NOT NULL,
  "patient_id" uuid NOT NULL,
  "doctor_office_id" uuid NOT NULL,
  "shipping_address_id" uuid,
  "order_number" text NOT NULL,
  "status" text NOT NULL,
  "total_amount" numeric(14,2) NOT NULL,
  "ordered_at" timestamptz NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "orders_pkey" PRIMARY KEY (id),
  CONSTRAINT "orders_order_number_key" UNIQUE ("order_number"),
  CONSTRAINT "orders_status_check" CHECK ("status" IN ('new', 'in_production', 'shipped', 'delivered', 'cancelled')),
  CONSTRAINT "orders_patient_id_fkey" FOREIGN KEY ("patient_id") REFERENCES public."patients" (id),
  CONSTRAINT "orders_doctor_office_id_fkey" FOREIGN KEY ("doctor_office_id") REFERENCES public."doctor_offices" (id),
  CONSTRAINT "orders_shipping_address_id_fkey" FOREIGN KEY ("shipping_address_id") REFERENCES public."addresses" (id)
);
CREATE INDEX IF NOT EXISTS "orders_patient_id_idx" ON public."orders" ("patient_id");
CREATE INDEX IF NOT EXISTS "orders_doctor_office_id_idx" ON public."orders" ("doctor_office_id");
CREATE INDEX IF NOT EXISTS "orders_shipping_address_id_idx" ON public."orders" ("shipping_address_id");
ALTER TABLE public."orders" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."orders" IS 'Lab orders placed by a doctor''s office for a patient.';

-- jaws: Upper and lower jaw records scanned for a patient. Legacy table case_jaw; level 4, CRITICAL.
CREATE TABLE IF NOT EXISTS public."jaws" (
  id uuid NOT NULL,
  "assignment_id" uuid NOT NULL,
  "arch" text NOT NULL,
  "tooth_count" integer,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "jaws_pkey" PRIMARY KEY (id),
  CONSTRAINT "jaws_arch_check" CHECK ("arch" IN ('upper', 'lower')),
  CONSTRAINT "jaws_assignment_id_fkey" FOREIGN KEY ("assignment_id") REFERENCES public."patients_doctors_offices" (id)
);
CREATE INDEX IF NOT EXISTS "jaws_assignment_id_idx" ON public."jaws" ("assignment_id");
ALTER TABLE public."jaws" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."jaws" IS 'Upper and lower jaw records scanned for a patient.';

-- templates: Treatment templates derived from exemplary cases. Legacy table tmpl_hdr; level 5, MEDIUM.
CREATE TABLE IF NOT EXISTS public."templates" (
  id uuid NOT NULL,
  "name" text NOT NULL,
  "category_id" uuid NOT NULL,
  "created_by" uuid,
  "source_case_id" uuid,
  "is_active" boolean NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "templates_pkey" PRIMARY KEY (id),
  CONSTRAINT "templates_category_id_fkey" FOREIGN KEY ("category_id") REFERENCES public."categories" (id),
  CONSTRAINT "templates_created_by_fkey" FOREIGN KEY ("created_by") REFERENCES public."technicians" (id),
  CONSTRAINT "templates_source_case_id_fkey" FOREIGN KEY ("source_case_id") REFERENCES public."cases" (id)
);
CREATE INDEX IF NOT EXISTS "templates_category_id_idx" ON public."templates" ("category_id");
CREATE INDEX IF NOT EXISTS "templates_created_by_idx" ON public."templates" ("created_by");
CREATE INDEX IF NOT EXISTS "templates_source_case_id_idx" ON public."templates" ("source_case_id");
ALTER TABLE public."templates" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."templates" IS 'Treatment templates derived from exemplary cases.';

-- brackets: Brackets placed on a jaw. Legacy table brkt_inv; level 5, MEDIUM.
CREATE TABLE IF NOT EXISTS public."brackets" (
  id uuid NOT NULL,
  "product_id" uuid NOT NULL,
  "jaw_id" uuid NOT NULL,
  "tooth_number" integer,
  "placed_on" date,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "brackets_pkey" PRIMARY KEY (id),
  CONSTRAINT "brackets_product_id_fkey" FOREIGN KEY ("product_id") REFERENCES public."products" (id),
  CONSTRAINT "brackets_jaw_id_fkey" FOREIGN KEY ("jaw_id") REFERENCES public."jaws" (id)
);
CREATE INDEX IF NOT EXISTS "brackets_product_id_idx" ON public."brackets" ("product_id");
CREATE INDEX IF NOT EXISTS "brackets_jaw_id_idx" ON public."brackets" ("jaw_id");
ALTER TABLE public."brackets" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."brackets" IS 'Brackets placed on a jaw.';

-- case_states: History of case status changes. Legacy table case_status_hist; level 5, HIGH.
CREATE TABLE IF NOT EXISTS public."case_states" (
  id uuid NOT NULL,
  "case_id" uuid NOT NULL,
  "state" text NOT NULL,
  "changed_by" uuid,
  "changed_at" timestamptz NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "case_states_pkey" PRIMARY KEY (id),
  CONSTRAINT "case_states_state_check" CHECK ("state" IN ('draft', 'submitted', 'in_treatment', 'completed', 'cancelled')),
  CONSTRAINT "case_states_case_id_fkey" FOREIGN KEY ("case_id") REFERENCES public."cases" (id),
  CONSTRAINT "case_states_changed_by_fkey" FOREIGN KEY ("changed_by") REFERENCES public."technicians" (id)
);
CREATE INDEX IF NOT EXISTS "case_states_case_id_idx" ON public."case_states" ("case_id");
CREATE INDEX IF NOT EXISTS "case_states_changed_by_idx" ON public."case_states" ("changed_by");
ALTER TABLE public."case_states" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."case_states" IS 'History of case status changes.';

-- order_states: History of order status changes. Legacy table ord_status_hist; level 5, HIGH.
CREATE TABLE IF NOT EXISTS public."order_states" (
  id uuid NOT NULL,
  "order_id" uuid NOT NULL,
  "state" text NOT NULL,
  "changed_at" timestamptz NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "order_states_pkey" PRIMARY KEY (id),
  CONSTRAINT "order_states_state_check" CHECK ("state" IN ('new', 'in_production', 'shipped', 'delivered', 'cancelled')),
  CONSTRAINT "order_states_order_id_fkey" FOREIGN KEY ("order_id") REFERENCES public."orders" (id)
);
CREATE INDEX IF NOT EXISTS "order_states_order_id_idx" ON public."order_states" ("order_id");
ALTER TABLE public."order_states" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."order_states" IS 'History of order status changes.';

-- team_communications: Internal notes exchanged by the team about a case. Legacy table team_comm; level 5, MEDIUM.
CREATE TABLE IF NOT EXISTS public."team_communications" (
  id uuid NOT NULL,
  "case_id" uuid NOT NULL,
  "author_id" uuid NOT NULL,
  "body" text NOT NULL,
  "is_internal" boolean NOT NULL,
  "sent_at" timestamptz NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "team_communications_pkey" PRIMARY KEY (id),
  CONSTRAINT "team_communications_case_id_fkey" FOREIGN KEY ("case_id") REFERENCES public."cases" (id),
  CONSTRAINT "team_communications_author_id_fkey" FOREIGN KEY ("author_id") REFERENCES public."profiles" (id)
);
CREATE INDEX IF NOT EXISTS "team_communications_case_id_idx" ON public."team_communications" ("case_id");
CREATE INDEX IF NOT EXISTS "team_communications_author_id_idx" ON public."team_communications" ("author_id");
ALTER TABLE public."team_communications" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."team_communications" IS 'Internal notes exchanged by the team about a case.';

-- shipments: Shipments of finished orders. Legacy table ship_log; level 5, MEDIUM.
CREATE TABLE IF NOT EXISTS public."shipments" (
  id uuid NOT NULL,
  "order_id" uuid NOT NULL,
  "address_id" uuid,
  "carrier" text NOT NULL,
  "tracking_number" text NOT NULL,
  "shipped_at" timestamptz NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "shipments_pkey" PRIMARY KEY (id),
  CONSTRAINT "shipments_tracking_number_key" UNIQUE ("tracking_number"),
  CONSTRAINT "shipments_carrier_check" CHECK ("carrier" IN ('ups', 'fedex', 'dhl', 'postal')),
  CONSTRAINT "shipments_order_id_fkey" FOREIGN KEY ("order_id") REFERENCES public."orders" (id),
  CONSTRAINT "shipments_address_id_fkey" FOREIGN KEY ("address_id") REFERENCES public."addresses" (id)
);
CREATE INDEX IF NOT EXISTS "shipments_order_id_idx" ON public."shipments" ("order_id");
CREATE INDEX IF NOT EXISTS "shipments_address_id_idx" ON public."shipments" ("address_id");
ALTER TABLE public."shipments" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."shipments" IS 'Shipments of finished orders.';

-- tasks: Workflow tasks for the lab and the clinic. Legacy table wf_task; level 6, HIGH.
CREATE TABLE IF NOT EXISTS public."tasks" (
  id uuid NOT NULL,
  "case_id" uuid NOT NULL,
  "order_id" uuid,
  "assignee_id" uuid,
  "template_id" uuid,
  "title" text NOT NULL,
  "status" text NOT NULL,
  "due_on" date,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "tasks_pkey" PRIMARY KEY (id),
  CONSTRAINT "tasks_status_check" CHECK ("status" IN ('open', 'in_progress', 'done', 'blocked')),
  CONSTRAINT "tasks_case_id_fkey" FOREIGN KEY ("case_id") REFERENCES public."cases" (id),
  CONSTRAINT "tasks_order_id_fkey" FOREIGN KEY ("order_id") REFERENCES public."orders" (id),
  CONSTRAINT "tasks_assignee_id_fkey" FOREIGN KEY ("assignee_id") REFERENCES public."technicians" (id),
  CONSTRAINT "tasks_template_id_fkey" FOREIGN KEY ("template_id") REFERENCES public."templates" (id)
);
CREATE INDEX IF NOT EXISTS "tasks_case_id_idx" ON public."tasks" ("case_id");
CREATE INDEX IF NOT EXISTS "tasks_order_id_idx" ON public."tasks" ("order_id");
CREATE INDEX IF NOT EXISTS "tasks_assignee_id_idx" ON public."tasks" ("assignee_id");
CREATE INDEX IF NOT EXISTS "tasks_template_id_idx" ON public."tasks" ("template_id");
ALTER TABLE public."tasks" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."tasks" IS 'Workflow tasks for the lab and the clinic.';

-- template_views: Saved views of a template. Legacy table tmpl_view; level 6, LOW.
CREATE TABLE IF NOT EXISTS public."template_views" (
  id uuid NOT NULL,
  "template_id" uuid NOT NULL,
  "name" text NOT NULL,
  "sort_order" integer,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "template_views_pkey" PRIMARY KEY (id),
  CONSTRAINT "template_views_template_id_fkey" FOREIGN KEY ("template_id") REFERENCES public."templates" (id)
);
CREATE INDEX IF NOT EXISTS "template_views_template_id_idx" ON public."template_views" ("template_id");
ALTER TABLE public."template_views" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."template_views" IS 'Saved views of a template.';

-- template_products: Products a template uses. Legacy table tmpl_prod; level 6, LOW.
CREATE TABLE IF NOT EXISTS public."template_products" (
  id uuid NOT NULL,
  "template_id" uuid NOT NULL,
  "product_id" uuid NOT NULL,
  "quantity" integer,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "template_products_pkey" PRIMARY KEY (id),
  CONSTRAINT "template_products_template_id_fkey" FOREIGN KEY ("template_id") REFERENCES public."templates" (id),
  CONSTRAINT "template_products_product_id_fkey" FOREIGN KEY ("product_id") REFERENCES public."products" (id)
);
CREATE INDEX IF NOT EXISTS "template_products_template_id_idx" ON public."template_products" ("template_id");
CREATE INDEX IF NOT EXISTS "template_products_product_id_idx" ON public."template_products" ("product_id");
ALTER TABLE public."template_products" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."template_products" IS 'Products a template uses.';

-- files: Documents and scans uploaded to the platform. Legacy table doc_store; level 7, HIGH.
CREATE TABLE IF NOT EXISTS public."files" (
  id uuid NOT NULL,
  "case_id" uuid,
  "order_id" uuid,
  "task_id" uuid,
  "uploaded_by" uuid NOT NULL,
  "file_name" text NOT NULL,
  "storage_path" text NOT NULL,
  "size_bytes" bigint,
  "uploaded_at" timestamptz NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "files_pkey" PRIMARY KEY (id),
  CONSTRAINT "files_case_id_fkey" FOREIGN KEY ("case_id") REFERENCES public."cases" (id),
  CONSTRAINT "files_order_id_fkey" FOREIGN KEY ("order_id") REFERENCES public."orders" (id),
  CONSTRAINT "files_task_id_fkey" FOREIGN KEY ("task_id") REFERENCES public."tasks" (id),
  CONSTRAINT "files_uploaded_by_fkey" FOREIGN KEY ("uploaded_by") REFERENCES public."profiles" (id)
);
CREATE INDEX IF NOT EXISTS "files_case_id_idx" ON public."files" ("case_id");
CREATE INDEX IF NOT EXISTS "files_order_id_idx" ON public."files" ("order_id");
CREATE INDEX IF NOT EXISTS "files_task_id_idx" ON public."files" ("task_id");
CREATE INDEX IF NOT EXISTS "files_uploaded_by_idx" ON public."files" ("uploaded_by");
ALTER TABLE public."files" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."files" IS 'Documents and scans uploaded to the platform.';

-- template_view_groups: Groups of a template view. Legacy table tmpl_view_grp; level 7, LOW.
CREATE TABLE IF NOT EXISTS public."template_view_groups" (
  id uuid NOT NULL,
  "template_view_id" uuid NOT NULL,
  "name" text NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "template_view_groups_pkey" PRIMARY KEY (id),
  CONSTRAINT "template_view_groups_template_view_id_fkey" FOREIGN KEY ("template_view_id") REFERENCES public."template_views" (id)
);
CREATE INDEX IF NOT EXISTS "template_view_groups_template_view_id_idx" ON public."template_view_groups" ("template_view_id");
ALTER TABLE public."template_view_groups" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."template_view_groups" IS 'Groups of a template view.';

-- messages: Messages between doctors, patients and the lab. Legacy table msg; level 7, HIGH.
CREATE TABLE IF NOT EXISTS public."messages" (
  id uuid NOT NULL,
  "case_id" uuid,
  "sender_id" uuid NOT NULL,
  "task_id" uuid,
  "subject" text NOT NULL,
  "body" text NOT NULL,
  "is_read" boolean NOT NULL,
  "sent_at" timestamptz NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "messages_pkey" PRIMARY KEY (id),
  CONSTRAINT "messages_case_id_fkey" FOREIGN KEY ("case_id") REFERENCES public."cases" (id),
  CONSTRAINT "messages_sender_id_fkey" FOREIGN KEY ("sender_id") REFERENCES public."profiles" (id),
  CONSTRAINT "messages_task_id_fkey" FOREIGN KEY ("task_id") REFERENCES public."tasks" (id)
);
CREATE INDEX IF NOT EXISTS "messages_case_id_idx" ON public."messages" ("case_id");
CREATE INDEX IF NOT EXISTS "messages_sender_id_idx" ON public."messages" ("sender_id");
CREATE INDEX IF NOT EXISTS "messages_task_id_idx" ON public."messages" ("task_id");
ALTER TABLE public."messages" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."messages" IS 'Messages between doctors, patients and the lab.';

-- case_files: Files attached to a case. Legacy table case_doc; level 8, HIGH.
CREATE TABLE IF NOT EXISTS public."case_files" (
  id uuid NOT NULL,
  "case_id" uuid NOT NULL,
  "file_id" uuid NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "case_files_pkey" PRIMARY KEY (id),
  CONSTRAINT "case_files_case_id_fkey" FOREIGN KEY ("case_id") REFERENCES public."cases" (id),
  CONSTRAINT "case_files_file_id_fkey" FOREIGN KEY ("file_id") REFERENCES public."files" (id)
);
CREATE INDEX IF NOT EXISTS "case_files_case_id_idx" ON public."case_files" ("case_id");
CREATE INDEX IF NOT EXISTS "case_files_file_id_idx" ON public."case_files" ("file_id");
ALTER TABLE public."case_files" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."case_files" IS 'Files attached to a case.';

-- order_files: Files attached to an order. Legacy table ord_doc; level 8, HIGH.
CREATE TABLE IF NOT EXISTS public."order_files" (
  id uuid NOT NULL,
  "order_id" uuid NOT NULL,
  "file_id" uuid NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "order_files_pkey" PRIMARY KEY (id),
  CONSTRAINT "order_files_order_id_fkey" FOREIGN KEY ("order_id") REFERENCES public."orders" (id),
  CONSTRAINT "order_files_file_id_fkey" FOREIGN KEY ("file_id") REFERENCES public."files" (id)
);
CREATE INDEX IF NOT EXISTS "order_files_order_id_idx" ON public."order_files" ("order_id");
CREATE INDEX IF NOT EXISTS "order_files_file_id_idx" ON public."order_files" ("file_id");
ALTER TABLE public."order_files" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."order_files" IS 'Files attached to an order.';

-- message_attachments: Files attached to a message. Legacy table msg_attach; level 8, MEDIUM.
CREATE TABLE IF NOT EXISTS public."message_attachments" (
  id uuid NOT NULL,
  "message_id" uuid NOT NULL,
  "file_id" uuid NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "message_attachments_pkey" PRIMARY KEY (id),
  CONSTRAINT "message_attachments_message_id_fkey" FOREIGN KEY ("message_id") REFERENCES public."messages" (id),
  CONSTRAINT "message_attachments_file_id_fkey" FOREIGN KEY ("file_id") REFERENCES public."files" (id)
);
CREATE INDEX IF NOT EXISTS "message_attachments_message_id_idx" ON public."message_attachments" ("message_id");
CREATE INDEX IF NOT EXISTS "message_attachments_file_id_idx" ON public."message_attachments" ("file_id");
ALTER TABLE public."message_attachments" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."message_attachments" IS 'Files attached to a message.';

-- case_messages: Messages filed under a case. Legacy table case_msg; level 8, MEDIUM.
CREATE TABLE IF NOT EXISTS public."case_messages" (
  id uuid NOT NULL,
  "case_id" uuid NOT NULL,
  "message_id" uuid NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "case_messages_pkey" PRIMARY KEY (id),
  CONSTRAINT "case_messages_case_id_fkey" FOREIGN KEY ("case_id") REFERENCES public."cases" (id),
  CONSTRAINT "case_messages_message_id_fkey" FOREIGN KEY ("message_id") REFERENCES public."messages" (id)
);
CREATE INDEX IF NOT EXISTS "case_messages_case_id_idx" ON public."case_messages" ("case_id");
CREATE INDEX IF NOT EXISTS "case_messages_message_id_idx" ON public."case_messages" ("message_id");
ALTER TABLE public."case_messages" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."case_messages" IS 'Messages filed under a case.';

-- comments: Comments on files and messages. Legacy table doc_comment; level 8, MEDIUM.
CREATE TABLE IF NOT EXISTS public."comments" (
  id uuid NOT NULL,
  "file_id" uuid,
  "message_id" uuid NOT NULL,
  "author_id" uuid NOT NULL,
  "body" text NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "comments_pkey" PRIMARY KEY (id),
  CONSTRAINT "comments_file_id_fkey" FOREIGN KEY ("file_id") REFERENCES public."files" (id),
  CONSTRAINT "comments_message_id_fkey" FOREIGN KEY ("message_id") REFERENCES public."messages" (id),
  CONSTRAINT "comments_author_id_fkey" FOREIGN KEY ("author_id") REFERENCES public."profiles" (id)
);
CREATE INDEX IF NOT EXISTS "comments_file_id_idx" ON public."comments" ("file_id");
CREATE INDEX IF NOT EXISTS "comments_message_id_idx" ON public."comments" ("message_id");
CREATE INDEX IF NOT EXISTS "comments_author_id_idx" ON public."comments" ("author_id");
ALTER TABLE public."comments" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."comments" IS 'Comments on files and messages.';

-- system_messages: Notifications the platform sent to users. Legacy table sys_msg_log; level 8, LOW.
CREATE TABLE IF NOT EXISTS public."system_messages" (
  id uuid NOT NULL,
  "recipient_id" uuid NOT NULL,
  "message_id" uuid,
  "event" text NOT NULL,
  "body" text NOT NULL,
  "is_read" boolean NOT NULL,
  "created_at" timestamptz NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "system_messages_pkey" PRIMARY KEY (id),
  CONSTRAINT "system_messages_event_check" CHECK ("event" IN ('created', 'updated', 'reminder', 'alert', 'digest')),
  CONSTRAINT "system_messages_recipient_id_fkey" FOREIGN KEY ("recipient_id") REFERENCES public."profiles" (id),
  CONSTRAINT "system_messages_message_id_fkey" FOREIGN KEY ("message_id") REFERENCES public."messages" (id)
);
CREATE INDEX IF NOT EXISTS "system_messages_recipient_id_idx" ON public."system_messages" ("recipient_id");
CREATE INDEX IF NOT EXISTS "system_messages_message_id_idx" ON public."system_messages" ("message_id");
ALTER TABLE public."system_messages" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."system_messages" IS 'Notifications the platform sent to users.';

-- template_view_roles: Roles that may see a template view group. Legacy table tmpl_view_role; level 8, LOW.
CREATE TABLE IF NOT EXISTS public."template_view_roles" (
  id uuid NOT NULL,
  "template_view_group_id" uuid NOT NULL,
  "role_id" uuid NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "template_view_roles_pkey" PRIMARY KEY (id),
  CONSTRAINT "template_view_roles_template_view_group_id_fkey" FOREIGN KEY ("template_view_group_id") REFERENCES public."template_view_groups" (id),
  CONSTRAINT "template_view_roles_role_id_fkey" FOREIGN KEY ("role_id") REFERENCES public."roles" (id)
);
CREATE INDEX IF NOT EXISTS "template_view_roles_template_view_group_id_idx" ON public."template_view_roles" ("template_view_group_id");
CREATE INDEX IF NOT EXISTS "template_view_roles_role_id_idx" ON public."template_view_roles" ("role_id");
ALTER TABLE public."template_view_roles" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."template_view_roles" IS 'Roles that may see a template view group.';

-- projects: Projects organising the work on a case. Legacy table proj; level 9, MEDIUM.
CREATE TABLE IF NOT EXISTS public."projects" (
  id uuid NOT NULL,
  "case_id" uuid NOT NULL,
  "approval_file_id" uuid,
  "name" text NOT NULL,
  "status" text NOT NULL,
  "budget" numeric(14,2) NOT NULL,
  "started_on" date,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "projects_pkey" PRIMARY KEY (id),
  CONSTRAINT "projects_status_check" CHECK ("status" IN ('planned', 'active', 'closed')),
  CONSTRAINT "projects_case_id_fkey" FOREIGN KEY ("case_id") REFERENCES public."cases" (id),
  CONSTRAINT "projects_approval_file_id_fkey" FOREIGN KEY ("approval_file_id") REFERENCES public."case_files" (id)
);
CREATE INDEX IF NOT EXISTS "projects_case_id_idx" ON public."projects" ("case_id");
CREATE INDEX IF NOT EXISTS "projects_approval_file_id_idx" ON public."projects" ("approval_file_id");
ALTER TABLE public."projects" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."projects" IS 'Projects organising the work on a case.';

-- treatment_plans: Treatment plans proposed and approved for a case. Legacy table tx_plan; level 9, HIGH.
CREATE TABLE IF NOT EXISTS public."treatment_plans" (
  id uuid NOT NULL,
  "case_id" uuid NOT NULL,
  "template_id" uuid,
  "approved_in_id" uuid,
  "stage_count" integer,
  "status" text NOT NULL,
  "approved_at" timestamptz NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "treatment_plans_pkey" PRIMARY KEY (id),
  CONSTRAINT "treatment_plans_status_check" CHECK ("status" IN ('proposed', 'approved', 'rejected', 'superseded')),
  CONSTRAINT "treatment_plans_case_id_fkey" FOREIGN KEY ("case_id") REFERENCES public."cases" (id),
  CONSTRAINT "treatment_plans_template_id_fkey" FOREIGN KEY ("template_id") REFERENCES public."templates" (id),
  CONSTRAINT "treatment_plans_approved_in_id_fkey" FOREIGN KEY ("approved_in_id") REFERENCES public."case_messages" (id)
);
CREATE INDEX IF NOT EXISTS "treatment_plans_case_id_idx" ON public."treatment_plans" ("case_id");
CREATE INDEX IF NOT EXISTS "treatment_plans_template_id_idx" ON public."treatment_plans" ("template_id");
CREATE INDEX IF NOT EXISTS "treatment_plans_approved_in_id_idx" ON public."treatment_plans" ("approved_in_id");
ALTER TABLE public."treatment_plans" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."treatment_plans" IS 'Treatment plans proposed and approved for a case.';

-- purchases: Purchases charged to a doctor's office. Legacy table purch; level 10, HIGH.
CREATE TABLE IF NOT EXISTS public."purchases" (
  id uuid NOT NULL,
  "order_id" uuid NOT NULL,
  "project_id" uuid,
  "amount" numeric(14,2) NOT NULL,
  "status" text NOT NULL,
  "purchased_at" timestamptz NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "purchases_pkey" PRIMARY KEY (id),
  CONSTRAINT "purchases_status_check" CHECK ("status" IN ('open', 'paid', 'refunded')),
  CONSTRAINT "purchases_order_id_fkey" FOREIGN KEY ("order_id") REFERENCES public."orders" (id),
  CONSTRAINT "purchases_project_id_fkey" FOREIGN KEY ("project_id") REFERENCES public."projects" (id)
);
CREATE INDEX IF NOT EXISTS "purchases_order_id_idx" ON public."purchases" ("order_id");
CREATE INDEX IF NOT EXISTS "purchases_project_id_idx" ON public."purchases" ("project_id");
ALTER TABLE public."purchases" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."purchases" IS 'Purchases charged to a doctor''s office.';

-- operations: Clinical operations performed under a treatment plan. Legacy table clin_op; level 10, MEDIUM.
CREATE TABLE IF NOT EXISTS public."operations" (
  id uuid NOT NULL,
  "case_id" uuid NOT NULL,
  "treatment_plan_id" uuid NOT NULL,
  "performed_by" uuid NOT NULL,
  "op_code" text NOT NULL,
  "performed_at" timestamptz NOT NULL,
  "notes" text,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "operations_pkey" PRIMARY KEY (id),
  CONSTRAINT "operations_op_code_check" CHECK ("op_code" IN ('scan', 'fitting', 'adjustment', 'removal')),
  CONSTRAINT "operations_case_id_fkey" FOREIGN KEY ("case_id") REFERENCES public."cases" (id),
  CONSTRAINT "operations_treatment_plan_id_fkey" FOREIGN KEY ("treatment_plan_id") REFERENCES public."treatment_plans" (id),
  CONSTRAINT "operations_performed_by_fkey" FOREIGN KEY ("performed_by") REFERENCES public."doctors" (id)
);
CREATE INDEX IF NOT EXISTS "operations_case_id_idx" ON public."operations" ("case_id");
CREATE INDEX IF NOT EXISTS "operations_treatment_plan_id_idx" ON public."operations" ("treatment_plan_id");
CREATE INDEX IF NOT EXISTS "operations_performed_by_idx" ON public."operations" ("performed_by");
ALTER TABLE public."operations" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."operations" IS 'Clinical operations performed under a treatment plan.';

-- treatment_discussions: Discussion threads about a treatment plan. Legacy table tx_discussion; level 10, LOW.
CREATE TABLE IF NOT EXISTS public."treatment_discussions" (
  id uuid NOT NULL,
  "treatment_plan_id" uuid NOT NULL,
  "author_id" uuid NOT NULL,
  "body" text NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "treatment_discussions_pkey" PRIMARY KEY (id),
  CONSTRAINT "treatment_discussions_treatment_plan_id_fkey" FOREIGN KEY ("treatment_plan_id") REFERENCES public."treatment_plans" (id),
  CONSTRAINT "treatment_discussions_author_id_fkey" FOREIGN KEY ("author_id") REFERENCES public."profiles" (id)
);
CREATE INDEX IF NOT EXISTS "treatment_discussions_treatment_plan_id_idx" ON public."treatment_discussions" ("treatment_plan_id");
CREATE INDEX IF NOT EXISTS "treatment_discussions_author_id_idx" ON public."treatment_discussions" ("author_id");
ALTER TABLE public."treatment_discussions" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."treatment_discussions" IS 'Discussion threads about a treatment plan.';

-- payments: Payments received against purchases. Legacy table pay_txn; level 11, HIGH.
CREATE TABLE IF NOT EXISTS public."payments" (
  id uuid NOT NULL,
  "purchase_id" uuid NOT NULL,
  "patient_id" uuid,
  "amount" numeric(14,2) NOT NULL,
  "method" text NOT NULL,
  "paid_at" timestamptz NOT NULL,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "payments_pkey" PRIMARY KEY (id),
  CONSTRAINT "payments_method_check" CHECK ("method" IN ('card', 'bank_transfer', 'check', 'insurance')),
  CONSTRAINT "payments_purchase_id_fkey" FOREIGN KEY ("purchase_id") REFERENCES public."purchases" (id),
  CONSTRAINT "payments_patient_id_fkey" FOREIGN KEY ("patient_id") REFERENCES public."patients" (id)
);
CREATE INDEX IF NOT EXISTS "payments_purchase_id_idx" ON public."payments" ("purchase_id");
CREATE INDEX IF NOT EXISTS "payments_patient_id_idx" ON public."payments" ("patient_id");
ALTER TABLE public."payments" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."payments" IS 'Payments received against purchases.';

-- order_cases: Which orders serve which cases, and the purchase that paid for them. Legacy table ord_case_xref; level 11, MEDIUM.
CREATE TABLE IF NOT EXISTS public."order_cases" (
  id uuid NOT NULL,
  "order_id" uuid NOT NULL,
  "case_id" uuid NOT NULL,
  "purchase_id" uuid,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "order_cases_pkey" PRIMARY KEY (id),
  CONSTRAINT "order_cases_order_id_fkey" FOREIGN KEY ("order_id") REFERENCES public."orders" (id),
  CONSTRAINT "order_cases_case_id_fkey" FOREIGN KEY ("case_id") REFERENCES public."cases" (id),
  CONSTRAINT "order_cases_purchase_id_fkey" FOREIGN KEY ("purchase_id") REFERENCES public."purchases" (id)
);
CREATE INDEX IF NOT EXISTS "order_cases_order_id_idx" ON public."order_cases" ("order_id");
CREATE INDEX IF NOT EXISTS "order_cases_case_id_idx" ON public."order_cases" ("case_id");
CREATE INDEX IF NOT EXISTS "order_cases_purchase_id_idx" ON public."order_cases" ("purchase_id");
ALTER TABLE public."order_cases" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."order_cases" IS 'Which orders serve which cases, and the purchase that paid for them.';

-- patient_events: Timeline of events in a patient's treatment. Legacy table pt_event; level 11, LOW.
CREATE TABLE IF NOT EXISTS public."patient_events" (
  id uuid NOT NULL,
  "patient_id" uuid NOT NULL,
  "event_type_id" uuid NOT NULL,
  "operation_id" uuid,
  "occurred_at" timestamptz NOT NULL,
  "notes" text,
  "updated_at" timestamptz NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
  CONSTRAINT "patient_events_pkey" PRIMARY KEY (id),
  CONSTRAINT "patient_events_patient_id_fkey" FOREIGN KEY ("patient_id") REFERENCES public."patients" (id),
  CONSTRAINT "patient_events_event_type_id_fkey" FOREIGN KEY ("event_type_id") REFERENCES public."event_types" (id),
  CONSTRAINT "patient_events_operation_id_fkey" FOREIGN KEY ("operation_id") REFERENCES public."operations" (id)
);
CREATE INDEX IF NOT EXISTS "patient_events_patient_id_idx" ON public."patient_events" ("patient_id");
CREATE INDEX IF NOT EXISTS "patient_events_event_type_id_idx" ON public."patient_events" ("event_type_id");
CREATE INDEX IF NOT EXISTS "patient_events_operation_id_idx" ON public."patient_events" ("operation_id");
ALTER TABLE public."patient_events" ENABLE ROW LEVEL SECURITY;
COMMENT ON TABLE public."patient_events" IS 'Timeline of events in a patient''s treatment.';

GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
GRANT ALL ON ALL TABLES IN SCHEMA public TO service_role;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO authenticated;
