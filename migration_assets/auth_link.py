"""Migrated profiles linked to Supabase Auth users (opt-in: ``migration-assets link-auth``).

``profiles`` is keyed by the UUID of its legacy id; an application's ``auth.uid()`` policies need
the Auth user each profile signs in as. :func:`link`, in one target transaction, where the
target has Supabase's ``auth.users``:

1. adds ``profiles.auth_user_id`` (uuid, unique, a foreign key to ``auth.users (id)`` with
   ``ON DELETE SET NULL``: deleting an Auth user never deletes a migrated profile);
2. links each profile not linked yet whose email Auth can take to the Auth user with that
   email (case-insensitive), or to a new one, created without a password (``encrypted_password``
   NULL: the user signs in through a magic link or a password reset), its email unconfirmed,
   ``raw_user_meta_data`` naming the profile and its legacy id;
3. quarantines (``migration_control.quarantine``, entity ``profiles_auth_link``, keyed by the
   profile's legacy id) the profiles it cannot link, with the reason: an email that is the
   recovery's placeholder or not a valid address (``AUTH_EMAIL_INVALID``), or one whose Auth user
   is linked to another profile already (``AUTH_EMAIL_TAKEN``); and resolves such rows once the
   profile is linked.

Run again, it changes nothing that is linked (idempotent). The column is not a registry column:
loads neither read nor write it, so a refresh keeps the links. It is not a migration file,
because a target without ``auth.users`` (a plain PostgreSQL) could not apply one.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from .engine.names import CONTROL_SCHEMA, PLACEHOLDER_DOMAIN, table_named
from .errors import PermanentError
from .transforms import EMAIL_REGEX

ENTITY = "profiles_auth_link"  # its quarantine rows' entity (not a registry table: no check counts them)
COLUMN = "auth_user_id"
INVALID, TAKEN = "AUTH_EMAIL_INVALID", "AUTH_EMAIL_TAKEN"
# Supabase Auth's single-instance id (GoTrue writes it into every user it creates)
INSTANCE = "00000000-0000-0000-0000-000000000000"


class NoSupabaseAuth(PermanentError):
    """The target has no ``auth.users``: not a Supabase project (permanent)."""

    kind = "NO_AUTH"
    recovery = "link-auth needs a Supabase project's database (its auth schema); nothing was changed"


_COLUMN = sql.SQL("""
    ALTER TABLE {profiles} ADD COLUMN IF NOT EXISTS auth_user_id uuid;
    CREATE UNIQUE INDEX IF NOT EXISTS profiles_auth_user_id_key ON {profiles} (auth_user_id);
    DO $$ BEGIN
      IF NOT EXISTS (SELECT FROM pg_constraint WHERE conname = 'profiles_auth_user_id_fkey'
                     AND conrelid = {profiles_name}::regclass) THEN
        ALTER TABLE {profiles} ADD CONSTRAINT profiles_auth_user_id_fkey FOREIGN KEY (auth_user_id)
          REFERENCES auth.users (id) ON DELETE SET NULL;
      END IF;
    END $$""")

# the profiles to link: their email as Auth would hold it, and whether Auth can take it
_CANDIDATES = sql.SQL("""
    CREATE TEMP TABLE _link ON COMMIT DROP AS
    SELECT p.id, (p.metadata->>'legacy_id')::bigint AS legacy_id, lower(p.email) AS email,
           lower(p.email) ~ {regex} AND split_part(lower(p.email), '@', 2) <> {placeholder} AS valid
    FROM {profiles} p WHERE p.auth_user_id IS NULL""")

_MATCH = sql.SQL("""
    UPDATE {profiles} p SET auth_user_id = u.id
    FROM _link l JOIN auth.users u ON lower(u.email) = l.email
    WHERE p.id = l.id AND l.valid
      AND NOT EXISTS (SELECT FROM {profiles} o WHERE o.auth_user_id = u.id)""")

_CREATE = sql.SQL("""
    WITH made AS (
      INSERT INTO auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
                              raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
      SELECT {instance}::uuid, gen_random_uuid(), 'authenticated', 'authenticated', l.email, NULL, NULL,
             '{{"provider": "email", "providers": ["email"]}}'::jsonb,
             jsonb_build_object('profile_id', l.id, 'legacy_id', l.legacy_id), now(), now()
      FROM _link l JOIN {profiles} p ON p.id = l.id
      WHERE l.valid AND p.auth_user_id IS NULL
        AND NOT EXISTS (SELECT FROM auth.users u WHERE lower(u.email) = l.email)
      RETURNING id, (raw_user_meta_data->>'profile_id')::uuid AS profile_id)
    UPDATE {profiles} p SET auth_user_id = made.id FROM made WHERE p.id = made.profile_id""")

_QUARANTINE = sql.SQL("""
    INSERT INTO {quarantine} AS q (entity, legacy_id, reason, detail, raw, first_run_id, last_run_id)
    SELECT {entity}, l.legacy_id,
           CASE WHEN l.valid THEN {taken} ELSE {invalid} END,
           CASE WHEN l.valid THEN 'the Auth user with this email is linked to another profile'
                ELSE 'not an email address Supabase Auth can take (invalid, or the recovery''s placeholder)' END,
           jsonb_build_object('profile_id', l.id, 'email', l.email), {run}, {run}
    FROM _link l JOIN {profiles} p ON p.id = l.id
    WHERE p.auth_user_id IS NULL
    ON CONFLICT (entity, legacy_id) DO UPDATE SET reason = EXCLUDED.reason, detail = EXCLUDED.detail,
      raw = EXCLUDED.raw, last_run_id = EXCLUDED.last_run_id, last_seen_at = now(), resolved = false,
      resolved_at = NULL, resolved_run_id = NULL, resolution = NULL
    WHERE q.resolved OR (q.reason, q.raw) IS DISTINCT FROM (EXCLUDED.reason, EXCLUDED.raw)""")

_RESOLVE = sql.SQL("""
    UPDATE {quarantine} q SET resolved = true, resolved_at = now(), resolved_run_id = {run},
                              resolution = 'linked to an Auth user'
    FROM {profiles} p
    WHERE q.entity = {entity} AND NOT q.resolved AND p.auth_user_id IS NOT NULL
      AND (p.metadata->>'legacy_id')::bigint = q.legacy_id""")


def link(conn: psycopg.Connection, run_id: str, schema: str) -> dict[str, int]:
    """Link the profiles (the registry's table in ``schema``, MIGRATION_TARGET_SCHEMA) in the
    caller's transaction (the caller commits); returns what it did: matched, created, quarantined
    (open after this run), linked (in all)."""
    if conn.execute("SELECT to_regclass('auth.users')").fetchone()[0] is None:
        raise NoSupabaseAuth("the target has no auth.users table: it is not a Supabase project's database")
    quarantine = sql.Identifier(CONTROL_SCHEMA, "quarantine")
    profiles = table_named("profiles", schema)
    params = {"quarantine": quarantine, "entity": sql.Literal(ENTITY), "run": sql.Literal(run_id), "profiles": profiles}
    conn.execute(_COLUMN.format(profiles=profiles, profiles_name=sql.Literal(profiles.as_string(conn))))
    conn.execute(_CANDIDATES.format(regex=sql.Literal(EMAIL_REGEX), placeholder=sql.Literal(PLACEHOLDER_DOMAIN),
                                    profiles=profiles))
    matched = conn.execute(_MATCH.format(profiles=profiles)).rowcount
    created = conn.execute(_CREATE.format(instance=sql.Literal(INSTANCE), profiles=profiles)).rowcount
    conn.execute(_QUARANTINE.format(taken=sql.Literal(TAKEN), invalid=sql.Literal(INVALID), **params))
    conn.execute(_RESOLVE.format(**params))
    (held,) = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE entity = {} AND NOT resolved").format(
        quarantine, sql.Literal(ENTITY))).fetchone()
    (linked,) = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE auth_user_id IS NOT NULL").format(
        profiles)).fetchone()
    return {"matched": matched, "created": created, "quarantined": held, "linked": linked}
