"""Who may read and write the migrated tables through Supabase's API: declared here, never
guessed, applied by ``setup`` (migrations.apply_migrations) in the transaction of the migration
files.

Row level security stays on for every registry table. :data:`ACCESS` names, per table, which of
Supabase's API roles (``anon``, ``authenticated``, ``service_role``) may run which commands and
under which row predicate; a table it does not name gets :data:`DEFAULT`: the service role only
(the app's server side), so no table is ever RLS-enabled without a policy. From it, every setup
takes back every privilege of the API roles on the registry's tables (the released file
``…000002`` granted SELECT to ``authenticated`` on all of them), grants exactly the commands
declared, and replaces the project's own policies (named ``ma_<role>_<command>``, each commented
with a digest of its predicates; a policy someone else created on a table is left alone): on
the tables whose access differs from the declaration only (:func:`differing`). Supabase's current rule is the same: a new table
in ``public`` gets no automatic grant to the API roles.

Predicates are SQL the team writes here, reviewed like the migration files (for example, for a
patient's own rows: ``Access("authenticated", ("SELECT",), "profile_id = (select auth.uid())")``
once profiles are linked to Supabase Auth). ``migration_control`` is never exposed: the API roles
get nothing there (its quarantine holds raw legacy rows).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from psycopg import sql

from .engine.names import CONTROL_SCHEMA, target_table
from .registry import ENTITIES, Entity

ROLES = ("anon", "authenticated", "service_role")
COMMANDS = ("SELECT", "INSERT", "UPDATE", "DELETE")


@dataclass(frozen=True)
class Access:
    role: str  # one of ROLES
    commands: tuple[str, ...]  # of COMMANDS
    using: str = "true"  # which existing rows the role sees or changes (SELECT, UPDATE, DELETE)
    check: str = "true"  # which rows the role may write (INSERT, UPDATE)

    def __post_init__(self) -> None:
        if self.role not in ROLES or not self.commands or set(self.commands) - set(COMMANDS):
            raise ValueError(f"access for role {self.role!r} to {self.commands}: roles are {ROLES}, commands "
                             f"{COMMANDS}")


DEFAULT: tuple[Access, ...] = (Access("service_role", COMMANDS),)

# table name -> its access, replacing DEFAULT (keep the service role in it where the app's
# server side writes the table)
ACCESS: dict[str, tuple[Access, ...]] = {}


def access_of(e: Entity, spec: dict[str, tuple[Access, ...]] | None = None) -> tuple[Access, ...]:
    return (ACCESS if spec is None else spec).get(e.name, DEFAULT)


def policy_name(role: str, command: str) -> str:
    return f"ma_{role}_{command.lower()}"


def _digest(a: Access) -> str:
    """What a policy of ``a`` says, as its comment: setup compares it with the policy on the
    target instead of PostgreSQL's rewritten text of the predicate."""
    return "migration_assets " + hashlib.sha256(f"{a.using}\x00{a.check}".encode()).hexdigest()[:16]


def declared(e: Entity, spec: dict[str, tuple[Access, ...]] | None = None) -> tuple[frozenset, frozenset]:
    """Table ``e``'s declared access: its grants ((role, command)) and the project's policies on
    it ((name, role, command, digest))."""
    grants = frozenset((a.role, c) for a in access_of(e, spec) for c in a.commands)
    policies = frozenset((policy_name(a.role, c), a.role, c, _digest(a)) for a in access_of(e, spec) for c in a.commands)
    return grants, policies


_CURRENT = """
    SELECT c.relname, c.relrowsecurity,
           coalesce((SELECT array_agg(r.rolname || ' ' || x.privilege_type)
                     FROM aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) x
                     JOIN pg_roles r ON r.oid = x.grantee WHERE r.rolname = ANY(%(roles)s)), '{}'),
           coalesce((SELECT array_agg(concat_ws(' ', p.polname, r.rolname,
                                                CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT'
                                                     WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
                                                obj_description(p.oid, 'pg_policy')))
                     FROM pg_policy p CROSS JOIN LATERAL unnest(p.polroles) AS pr(oid) JOIN pg_roles r ON r.oid = pr.oid
                     WHERE p.polrelid = c.oid AND p.polname LIKE 'ma\\_%%'), '{}')
    FROM pg_class c WHERE c.relnamespace = %(schema)s::regnamespace AND c.relname = ANY(%(tables)s)"""


def differing(conn, schema: str, spec: dict[str, tuple[Access, ...]] | None = None) -> list[Entity]:
    """The registry's tables (in ``schema``) whose access on the target is not the declared one: row level
    security off, a grant to an API role more or less, a project policy missing, extra or
    saying something else."""
    current = {t: (rls, frozenset(tuple(g.split(" ")) for g in grants),
                   frozenset(tuple(p.split(" ", 3)) for p in policies))
               for t, rls, grants, policies in conn.execute(_CURRENT, {
                   "roles": list(ROLES), "schema": schema, "tables": [e.target_table for e in ENTITIES]})}
    return [e for e in ENTITIES if current.get(e.target_table) != (True, *declared(e, spec))]


def access_sql(e: Entity, schema: str, spec: dict[str, tuple[Access, ...]] | None = None) -> list[sql.Composable]:
    """The statements that give ``e``'s table in ``schema`` exactly its declared access (idempotent)."""
    t = target_table(e, schema)
    roles = sql.SQL(", ").join(map(sql.Identifier, ROLES))
    out: list[sql.Composable] = [sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(t),
                                 sql.SQL("REVOKE ALL ON {} FROM {}").format(t, roles)]
    out += [sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(sql.Identifier(policy_name(r, c)), t)
            for r in ROLES for c in COMMANDS]
    for a in access_of(e, spec):
        out.append(sql.SQL("GRANT {} ON {} TO {}").format(
            sql.SQL(", ").join(map(sql.SQL, a.commands)), t, sql.Identifier(a.role)))
        for c in a.commands:
            clauses = []
            if c in ("SELECT", "UPDATE", "DELETE"):
                clauses.append(sql.SQL("USING ({})").format(sql.SQL(a.using)))
            if c in ("INSERT", "UPDATE"):
                clauses.append(sql.SQL("WITH CHECK ({})").format(sql.SQL(a.check)))
            out.append(sql.SQL("CREATE POLICY {} ON {} AS PERMISSIVE FOR {} TO {} {}").format(
                sql.Identifier(policy_name(a.role, c)), t, sql.SQL(c), sql.Identifier(a.role),
                sql.SQL(" ").join(clauses)))
            out.append(sql.SQL("COMMENT ON POLICY {} ON {} IS {}").format(
                sql.Identifier(policy_name(a.role, c)), t, sql.Literal(_digest(a))))
    return out


def control_sql() -> list[sql.Composable]:
    """The control schema closed to the API roles (and to PUBLIC), whatever default privileges
    the database gives new objects."""
    schema = sql.Identifier(CONTROL_SCHEMA)
    roles = sql.SQL("PUBLIC, {}").format(sql.SQL(", ").join(map(sql.Identifier, ROLES)))
    return [sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(schema, roles)] + [
        sql.SQL("REVOKE ALL ON ALL {} IN SCHEMA {} FROM {}").format(sql.SQL(kind), schema, roles)
        for kind in ("TABLES", "SEQUENCES", "FUNCTIONS")]


def all_access_sql(schema: str, spec: dict[str, tuple[Access, ...]] | None = None, conn=None) -> list[sql.Composable]:
    """Every registry table's access, in ``schema`` (with ``conn``: of the tables whose access :func:`differing`
    finds changed, so a setup with nothing to change takes no table lock and makes no DDL that
    PostgREST would reload its schema for), and the control schema closed."""
    tables = ENTITIES if conn is None else differing(conn, schema, spec)
    return [s for e in tables for s in access_sql(e, schema, spec)] + control_sql()
