"""The entity registry: the single source of truth of the migration.

Each :class:`Entity` says where a target table's rows come from (legacy table, legacy primary
key, one :class:`~migration_assets.transforms.Column` per target column with its transform),
how it relates to the others (foreign keys to parent entities, required or optional), what
must be unique, which columns hold emails, which legacy column tracks changes, its priority,
and how many rows it has at simulator scale 1.0 (the seed system's counts).

Everything else is derived from this list: the legacy schema and its data (simulator.py), the
target schema (target_schema.py writes the Supabase migration files from it), the source
queries and the load's statements (engine/), one asset per entity and their dependency groups
(assets.py), and the checks (engine/checks.py). Dependency levels are *computed* here from the
foreign-key graph (longest path from a root), never typed by hand.

The seed system named 40 entities; five more are added because the domain needs them as parents
or companions: ``permissions`` (what ``role_permissions`` grants), ``addresses`` (where
``orders`` ship to), ``template_views`` (what ``template_view_groups`` group), ``event_types``
(what ``patient_events`` record) and ``shipments`` (how ``orders`` leave the lab).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Iterable

from .transforms import Column, Kind

PRIORITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW")


@dataclass(frozen=True)
class Entity:
    name: str  # entity name = asset name = target table name (schema public)
    legacy_table: str
    legacy_pk: str
    columns: tuple[Column, ...]  # target columns except ``id`` and ``metadata``
    priority: str
    expected_rows: int  # at simulator scale 1.0
    description: str
    change_column: str = "updated_at"  # target column fed by the legacy change-tracking column

    def __post_init__(self) -> None:
        assert self.priority in PRIORITIES, self.priority
        names = [c.target for c in self.columns]
        assert len(names) == len(set(names)), f"{self.name}: duplicate target column"
        assert self.change_column in names, f"{self.name}: no change-tracking column"

    @property
    def target_table(self) -> str:
        return self.name

    @cached_property
    def pk_column(self) -> Column:
        return Column("id", Kind.PK, legacy=self.legacy_pk, required=True)

    @property
    def foreign_keys(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.kind is Kind.FK)

    @property
    def parents(self) -> tuple[str, ...]:
        return tuple(sorted({c.parent for c in self.foreign_keys}))

    @property
    def unique_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.unique)

    @property
    def email_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if c.kind is Kind.EMAIL)

    @property
    def legacy_change_column(self) -> str:
        return self.column(self.change_column).legacy_name

    def column(self, target: str) -> Column:
        for c in self.columns:
            if c.target == target:
                return c
        raise KeyError(f"{self.name}.{target}")

    @property
    def level(self) -> int:
        return levels()[self.name]

    @property
    def group_name(self) -> str:
        return f"level_{self.level:02d}"


# ------------------------------------------------------------------ column shorthands


def text(target, legacy=None, *, required=False, unique=False, gen=None, default=None, mutable=False):
    return Column(target, Kind.TEXT, legacy, required=required, unique=unique, gen=gen, default=default,
                  mutable=mutable)


def long_text(target, legacy=None, *, required=False, gen="sentence", mutable=False):
    return Column(target, Kind.LONG_TEXT, legacy, required=required, gen=gen, mutable=mutable)


def email(target="email", legacy=None, *, required=False, unique=False):
    return Column(target, Kind.EMAIL, legacy, required=required, unique=unique)


def integer(target, legacy=None, *, required=False, gen=None):
    return Column(target, Kind.INTEGER, legacy, required=required, gen=gen)


def bigint(target, legacy=None, *, required=False, gen=None):
    return Column(target, Kind.BIGINT, legacy, required=required, gen=gen)


def yn(target, legacy=None, *, required=True, default="false"):
    return Column(target, Kind.YN, legacy, required=required, default=default)


def code(target, legacy, codes, *, required=True, default=None, mutable=False):
    kind = Kind.CODE_INT if isinstance(next(iter(codes)), int) else Kind.CODE_CHAR
    return Column(target, kind, legacy, required=required, codes=codes, default=default, mutable=mutable)


def cents(target, legacy=None, *, required=True, mutable=False):
    return Column(target, Kind.CENTS, legacy, required=required, mutable=mutable)


def epoch(target, legacy=None, *, required=True):
    return Column(target, Kind.EPOCH, legacy, required=required)


def text_date(target, legacy=None, *, required=False):
    return Column(target, Kind.TEXT_DATE, legacy, required=required)


def changed(legacy="updated_at"):
    """The change-tracking column (legacy timestamp -> target updated_at)."""
    return Column("updated_at", Kind.TIMESTAMP, legacy, required=True)


def fk(target, parent, legacy=None, *, required=True):
    return Column(target, Kind.FK, legacy, parent=parent, required=required)


ACTIVE = {1: "active", 2: "inactive", 3: "suspended"}

# ------------------------------------------------------------------ the 45 entities

ENTITIES: tuple[Entity, ...] = (
    # Foundational data
    Entity("offices", "tbl_office", "office_id", (
        text("name", "office_name", required=True, gen="company", mutable=True),
        text("code", "office_code", required=True, unique=True, gen="code"),
        email("email", "contact_email"),
        text("phone", "phone_no", gen="phone"),
        yn("is_active", "active_flag"),
        epoch("created_at", "created_epoch"),
        changed("last_modified"),
    ), "CRITICAL", 898, "Practice locations where doctors see patients."),
    Entity("profiles", "users", "user_id", (
        email("email", "email_addr", required=True, unique=True),
        text("first_name", "first_nm", required=True, gen="first_name", mutable=True),
        text("last_name", "last_nm", required=True, gen="last_name"),
        code("user_type", "user_type_cd", {1: "doctor", 2: "patient", 3: "technician", 4: "admin"}),
        yn("is_active", "active_yn"),
        text_date("created_on", "date_created", required=True),
        changed("modified_ts"),
    ), "CRITICAL", 9886, "Login accounts of every person using the platform."),
    Entity("categories", "lkp_category", "cat_id", (
        text("name", "cat_name", required=True, unique=True, gen="word"),
        long_text("description", "cat_desc"),
        integer("sort_order", "sort_seq", gen="small"),
        changed(),
    ), "CRITICAL", 44, "Catalogue categories of products, templates and permissions."),
    Entity("roles", "sec_roles", "role_id", (
        text("name", "role_name", required=True, unique=True, gen="word"),
        long_text("description"),
        yn("is_system", "sys_flag"),
        changed(),
    ), "CRITICAL", 48, "Security roles assigned to staff."),
    Entity("event_types", "lkp_event_type", "evt_type_id", (
        text("code", "evt_code", required=True, unique=True, gen="code"),
        text("name", "evt_name", required=True, gen="word"),
        changed(),
    ), "LOW", 25, "Kinds of patient events (visit, scan, refinement...)."),
    # User entities
    Entity("doctors", "dr_master", "dr_id", (
        fk("profile_id", "profiles", "user_id"),
        text("license_number", "lic_no", required=True, unique=True, gen="code"),
        code("specialty", "spec_cd", {"O": "orthodontist", "G": "general", "P": "pediatric"}),
        yn("is_active", "active_flag"),
        text_date("joined_on", "start_dt"),
        changed("upd_ts"),
    ), "CRITICAL", 1339, "Doctors who prescribe treatment."),
    Entity("patients", "pt_master", "pt_id", (
        fk("profile_id", "profiles", "user_id", required=False),
        text("first_name", "first_nm", required=True, gen="first_name"),
        text("last_name", "last_nm", required=True, gen="last_name", mutable=True),
        email("email", "email_addr", unique=True),
        text_date("date_of_birth", "dob"),
        code("gender", "sex", {"M": "male", "F": "female", "U": "unknown"}, default="'unknown'"),
        changed("upd_ts"),
    ), "CRITICAL", 8527, "Patients under treatment."),
    Entity("technicians", "lab_tech", "tech_id", (
        fk("profile_id", "profiles", "user_id"),
        text("employee_code", "emp_code", required=True, unique=True, gen="code"),
        code("shift", "shift_cd", {1: "day", 2: "night", 3: "weekend"}),
        yn("is_active", "active_flag"),
        changed("upd_ts"),
    ), "HIGH", 85, "Lab technicians who produce aligners and brackets."),
    Entity("permissions", "sec_permission", "perm_id", (
        text("code", "perm_code", required=True, unique=True, gen="code"),
        long_text("description", "perm_desc"),
        fk("category_id", "categories", "cat_id"),
        changed(),
    ), "HIGH", 120, "Permissions that roles grant."),
    Entity("products", "prod_catalog", "prod_id", (
        text("sku", "sku_code", required=True, unique=True, gen="code"),
        text("name", "prod_name", required=True, gen="word"),
        fk("category_id", "categories", "cat_id"),
        cents("price", "price_cents", mutable=True),
        yn("is_active", "active_flag"),
        changed(),
    ), "HIGH", 10, "Orthodontic products (aligner kits, bracket systems, retainers)."),
    Entity("addresses", "addr_book", "addr_id", (
        fk("profile_id", "profiles", "user_id"),
        text("line1", "addr_line1", required=True, gen="street", mutable=True),
        text("city", required=True, gen="city"),
        text("postal_code", "zip", gen="zip"),
        yn("is_primary", "primary_flag"),
        changed("upd_ts"),
    ), "MEDIUM", 12000, "Postal addresses of profiles (shipping destinations)."),
    # Relationships
    Entity("doctor_offices", "dr_office_xref", "xref_id", (
        fk("doctor_id", "doctors", "dr_id"),
        fk("office_id", "offices"),
        yn("is_primary", "primary_flag"),
        changed(),
    ), "HIGH", 472, "Which doctor practices at which office."),
    Entity("patients_doctors_offices", "pt_dr_office", "pdo_id", (
        fk("patient_id", "patients", "pt_id"),
        fk("doctor_id", "doctors", "dr_id"),
        fk("office_id", "offices"),
        text_date("assigned_on", "assign_dt"),
        changed(),
    ), "HIGH", 8449, "A patient's assignment to a doctor at an office."),
    Entity("role_permissions", "sec_role_perm", "rp_id", (
        fk("role_id", "roles"),
        fk("permission_id", "permissions", "perm_id"),
        changed(),
    ), "MEDIUM", 1346, "Permissions granted by each role."),
    Entity("technician_roles", "lab_tech_role", "ltr_id", (
        fk("technician_id", "technicians", "tech_id"),
        fk("role_id", "roles"),
        changed(),
    ), "MEDIUM", 31, "Roles held by lab technicians."),
    # Clinical data
    Entity("cases", "case_hdr", "case_id", (
        fk("patient_id", "patients", "pt_id"),
        fk("doctor_id", "doctors", "dr_id"),
        fk("office_id", "offices"),
        fk("assignment_id", "patients_doctors_offices", "pdo_id", required=False),
        text("case_number", "case_no", required=True, unique=True, gen="code"),
        code("status", "status_cd", {1: "draft", 2: "submitted", 3: "in_treatment", 4: "completed", 5: "cancelled"},
             mutable=True),
        epoch("opened_at", "open_epoch"),
        changed("upd_ts"),
    ), "CRITICAL", 8419, "Treatment cases: one patient, one doctor, one course of treatment."),
    Entity("orders", "ord_hdr", "ord_id", (
        fk("patient_id", "patients", "pt_id"),
        fk("doctor_office_id", "doctor_offices", "xref_id"),
        fk("shipping_address_id", "addresses", "addr_id", required=False),
        text("order_number", "ord_no", required=True, unique=True, gen="code"),
        code("status", "status_cd", {"N": "new", "P": "in_production", "S": "shipped", "D": "delivered",
                                     "X": "cancelled"}, mutable=True),
        cents("total_amount", "total_cents"),
        epoch("ordered_at", "ord_epoch"),
        changed("upd_ts"),
    ), "CRITICAL", 25259, "Lab orders placed by a doctor's office for a patient."),
    Entity("jaws", "case_jaw", "jaw_id", (
        fk("assignment_id", "patients_doctors_offices", "pdo_id"),
        code("arch", "arch_cd", {"U": "upper", "L": "lower"}),
        integer("tooth_count", "teeth", gen="teeth"),
        changed(),
    ), "CRITICAL", 43097, "Upper and lower jaw records scanned for a patient."),
    # Templates & products
    Entity("templates", "tmpl_hdr", "tmpl_id", (
        text("name", "tmpl_name", required=True, gen="word", mutable=True),
        fk("category_id", "categories", "cat_id"),
        fk("created_by", "technicians", "tech_id", required=False),
        fk("source_case_id", "cases", "case_id", required=False),
        yn("is_active", "active_flag"),
        changed(),
    ), "MEDIUM", 169, "Treatment templates derived from exemplary cases."),
    Entity("brackets", "brkt_inv", "brkt_id", (
        fk("product_id", "products", "prod_id"),
        fk("jaw_id", "jaws"),
        integer("tooth_number", "tooth_no", gen="tooth"),
        text_date("placed_on", "placed_dt"),
        changed(),
    ), "MEDIUM", 1720, "Brackets placed on a jaw."),
    Entity("case_states", "case_status_hist", "hist_id", (
        fk("case_id", "cases"),
        code("state", "state_cd", {1: "draft", 2: "submitted", 3: "in_treatment", 4: "completed", 5: "cancelled"}),
        fk("changed_by", "technicians", "tech_id", required=False),
        epoch("changed_at", "chg_epoch"),
        changed(),
    ), "HIGH", 10868, "History of case status changes."),
    Entity("order_states", "ord_status_hist", "hist_id", (
        fk("order_id", "orders", "ord_id"),
        code("state", "state_cd", {"N": "new", "P": "in_production", "S": "shipped", "D": "delivered",
                                   "X": "cancelled"}),
        epoch("changed_at", "chg_epoch"),
        changed(),
    ), "HIGH", 5673, "History of order status changes."),
    Entity("team_communications", "team_comm", "comm_id", (
        fk("case_id", "cases"),
        fk("author_id", "profiles", "user_id"),
        long_text("body", "msg_text", required=True, mutable=True),
        yn("is_internal", "internal_flag"),
        epoch("sent_at", "sent_epoch"),
        changed(),
    ), "MEDIUM", 69967, "Internal notes exchanged by the team about a case."),
    Entity("shipments", "ship_log", "ship_id", (
        fk("order_id", "orders", "ord_id"),
        fk("address_id", "addresses", "addr_id", required=False),
        code("carrier", "carrier_cd", {"U": "ups", "F": "fedex", "D": "dhl", "P": "postal"}),
        text("tracking_number", "track_no", required=True, unique=True, gen="code"),
        epoch("shipped_at", "ship_epoch"),
        changed(),
    ), "MEDIUM", 22000, "Shipments of finished orders."),
    # Workflow
    Entity("tasks", "wf_task", "task_id", (
        fk("case_id", "cases"),
        fk("order_id", "orders", "ord_id", required=False),
        fk("assignee_id", "technicians", "tech_id", required=False),
        fk("template_id", "templates", "tmpl_id", required=False),
        text("title", "task_title", required=True, gen="title", mutable=True),
        code("status", "status_cd", {1: "open", 2: "in_progress", 3: "done", 4: "blocked"}, mutable=True),
        text_date("due_on", "due_dt"),
        changed("last_upd"),
    ), "HIGH", 953224, "Workflow tasks for the lab and the clinic."),
    Entity("template_views", "tmpl_view", "view_id", (
        fk("template_id", "templates", "tmpl_id"),
        text("name", "view_name", required=True, gen="word"),
        integer("sort_order", "sort_seq", gen="small"),
        changed(),
    ), "LOW", 400, "Saved views of a template."),
    Entity("template_products", "tmpl_prod", "tp_id", (
        fk("template_id", "templates", "tmpl_id"),
        fk("product_id", "products", "prod_id"),
        integer("quantity", "qty", gen="small"),
        changed(),
    ), "LOW", 178, "Products a template uses."),
    # Files, messages
    Entity("files", "doc_store", "doc_id", (
        fk("case_id", "cases", required=False),
        fk("order_id", "orders", "ord_id", required=False),
        fk("task_id", "tasks", required=False),
        fk("uploaded_by", "profiles", "user_id"),
        text("file_name", "doc_name", required=True, gen="file_name"),
        text("storage_path", "doc_path", required=True, gen="path"),
        bigint("size_bytes", "doc_size", gen="bytes"),
        epoch("uploaded_at", "upload_epoch"),
        changed(),
    ), "HIGH", 325432, "Documents and scans uploaded to the platform."),
    Entity("template_view_groups", "tmpl_view_grp", "grp_id", (
        fk("template_view_id", "template_views", "view_id"),
        text("name", "grp_name", required=True, gen="word"),
        changed(),
    ), "LOW", 300, "Groups of a template view."),
    Entity("messages", "msg", "msg_id", (
        fk("case_id", "cases", required=False),
        fk("sender_id", "profiles", "user_id"),
        fk("task_id", "tasks", required=False),
        text("subject", "subj", required=True, gen="title"),
        long_text("body", "msg_body", required=True, mutable=True),
        yn("is_read", "read_flag"),
        epoch("sent_at", "sent_epoch"),
        changed(),
    ), "HIGH", 70685, "Messages between doctors, patients and the lab."),
    Entity("case_files", "case_doc", "cd_id", (
        fk("case_id", "cases"),
        fk("file_id", "files", "doc_id"),
        changed(),
    ), "HIGH", 160303, "Files attached to a case."),
    Entity("order_files", "ord_doc", "od_id", (
        fk("order_id", "orders", "ord_id"),
        fk("file_id", "files", "doc_id"),
        changed(),
    ), "HIGH", 160286, "Files attached to an order."),
    Entity("message_attachments", "msg_attach", "att_id", (
        fk("message_id", "messages", "msg_id"),
        fk("file_id", "files", "doc_id"),
        changed(),
    ), "MEDIUM", 8919, "Files attached to a message."),
    Entity("case_messages", "case_msg", "cm_id", (
        fk("case_id", "cases"),
        fk("message_id", "messages", "msg_id"),
        changed(),
    ), "MEDIUM", 48538, "Messages filed under a case."),
    Entity("comments", "doc_comment", "cmt_id", (
        fk("file_id", "files", "doc_id", required=False),
        fk("message_id", "messages", "msg_id"),
        fk("author_id", "profiles", "user_id"),
        long_text("body", "cmt_text", required=True, mutable=True),
        changed(),
    ), "MEDIUM", 15097, "Comments on files and messages."),
    Entity("system_messages", "sys_msg_log", "log_id", (
        fk("recipient_id", "profiles", "user_id"),
        fk("message_id", "messages", "msg_id", required=False),
        code("event", "evt_cd", {1: "created", 2: "updated", 3: "reminder", 4: "alert", 5: "digest"}),
        long_text("body", "log_text", required=True, mutable=True),
        yn("is_read", "read_flag"),
        epoch("created_at", "log_epoch"),
        changed("log_upd"),
    ), "LOW", 2191123, "Notifications the platform sent to users."),
    Entity("template_view_roles", "tmpl_view_role", "tvr_id", (
        fk("template_view_group_id", "template_view_groups", "grp_id"),
        fk("role_id", "roles"),
        changed(),
    ), "LOW", 250, "Roles that may see a template view group."),
    # Projects & planning
    Entity("projects", "proj", "proj_id", (
        fk("case_id", "cases"),
        fk("approval_file_id", "case_files", "cd_id", required=False),
        text("name", "proj_name", required=True, gen="title", mutable=True),
        code("status", "status_cd", {1: "planned", 2: "active", 3: "closed"}),
        cents("budget", "budget_cents"),
        text_date("started_on", "start_dt"),
        changed(),
    ), "MEDIUM", 72155, "Projects organising the work on a case."),
    Entity("treatment_plans", "tx_plan", "plan_id", (
        fk("case_id", "cases"),
        fk("template_id", "templates", "tmpl_id", required=False),
        fk("approved_in_id", "case_messages", "cm_id", required=False),
        integer("stage_count", "stages", gen="small"),
        code("status", "status_cd", {1: "proposed", 2: "approved", 3: "rejected", 4: "superseded"}, mutable=True),
        epoch("approved_at", "appr_epoch"),
        changed(),
    ), "HIGH", 209241, "Treatment plans proposed and approved for a case."),
    # Financial & operations
    Entity("purchases", "purch", "purch_id", (
        fk("order_id", "orders", "ord_id"),
        fk("project_id", "projects", "proj_id", required=False),
        cents("amount", "amt_cents", mutable=True),
        code("status", "status_cd", {"O": "open", "P": "paid", "R": "refunded"}),
        epoch("purchased_at", "purch_epoch"),
        changed(),
    ), "HIGH", 3701, "Purchases charged to a doctor's office."),
    Entity("operations", "clin_op", "op_id", (
        fk("case_id", "cases"),
        fk("treatment_plan_id", "treatment_plans", "plan_id"),
        fk("performed_by", "doctors", "dr_id"),
        code("op_code", "op_cd", {1: "scan", 2: "fitting", 3: "adjustment", 4: "removal"}),
        epoch("performed_at", "op_epoch"),
        long_text("notes", "op_notes"),
        changed(),
    ), "MEDIUM", 3720, "Clinical operations performed under a treatment plan."),
    Entity("treatment_discussions", "tx_discussion", "disc_id", (
        fk("treatment_plan_id", "treatment_plans", "plan_id"),
        fk("author_id", "profiles", "user_id"),
        long_text("body", "disc_text", required=True, mutable=True),
        changed(),
    ), "LOW", 5200, "Discussion threads about a treatment plan."),
    # Specialised
    Entity("payments", "pay_txn", "txn_id", (
        fk("purchase_id", "purchases", "purch_id"),
        fk("patient_id", "patients", "pt_id", required=False),
        cents("amount", "amt_cents"),
        code("method", "method_cd", {"C": "card", "B": "bank_transfer", "K": "check", "I": "insurance"}),
        epoch("paid_at", "paid_epoch"),
        changed(),
    ), "HIGH", 17297, "Payments received against purchases."),
    Entity("order_cases", "ord_case_xref", "oc_id", (
        fk("order_id", "orders", "ord_id"),
        fk("case_id", "cases"),
        fk("purchase_id", "purchases", "purch_id", required=False),
        changed(),
    ), "MEDIUM", 24000, "Which orders serve which cases, and the purchase that paid for them."),
    Entity("patient_events", "pt_event", "evt_id", (
        fk("patient_id", "patients", "pt_id"),
        fk("event_type_id", "event_types", "evt_type_id"),
        fk("operation_id", "operations", "op_id", required=False),
        epoch("occurred_at", "evt_epoch"),
        long_text("notes", "evt_notes"),
        changed(),
    ), "LOW", 30000, "Timeline of events in a patient's treatment."),
)

BY_NAME: dict[str, Entity] = {e.name: e for e in ENTITIES}


def entity(name: str) -> Entity:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown entity {name!r}") from None


@lru_cache(maxsize=1)
def levels() -> dict[str, int]:
    """Dependency level of every entity: 1 + the longest foreign-key path to a root.

    Raises ValueError on an unknown parent or a cycle (self-references are not allowed either:
    they would make a table depend on itself).
    """
    result: dict[str, int] = {}
    visiting: set[str] = set()

    def visit(name: str) -> int:
        if name in result:
            return result[name]
        if name in visiting:
            raise ValueError(f"foreign-key cycle through {name!r}")
        if name not in BY_NAME:
            raise ValueError(f"foreign key to unknown entity {name!r}")
        visiting.add(name)
        level = 1 + max((visit(p) for p in BY_NAME[name].parents), default=0)
        visiting.discard(name)
        result[name] = level
        return level

    for e in ENTITIES:
        visit(e.name)
    return result


def topological_order(names: Iterable[str] | None = None) -> list[Entity]:
    """Entities ordered by (level, registry position): parents always before children."""
    wanted = set(names) if names is not None else set(BY_NAME)
    lv = levels()
    pos = {e.name: i for i, e in enumerate(ENTITIES)}
    return sorted((BY_NAME[n] for n in wanted), key=lambda e: (lv[e.name], pos[e.name]))


def children(name: str) -> list[Entity]:
    return [e for e in ENTITIES if name in e.parents]


def total_expected_rows() -> int:
    return sum(e.expected_rows for e in ENTITIES)
