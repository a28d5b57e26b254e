"""Legacy-database simulator: the legacy schema of the registry's entities, filled with deterministic,
realistically dirty data, generated on the server.

    python -m migration_assets.simulator --scale 0.01 --seed 7          # create + fill
    python -m migration_assets.simulator mutate --fraction 0.01 --round 1

Data flow: for every entity one ``INSERT ... SELECT ... FROM generate_series(1, n)`` builds all
rows on the server (no Python row loop); the primary key and the change-tracking index are built
after the insert, which is what makes scale 1.0 (about 4.5M rows) take well under 3 minutes.
Randomness is ``hashint8extended(row id, seed-and-column salt)``: pure functions of (seed, table,
column, row), so the same scale and seed give byte-identical tables on any PostgreSQL >= 11.

Dirty data (rates are per value of an eligible column, see :class:`DirtyRates`):

=====================  =========================================================================
invalid_email          'user12@@mail.test', 'user12 at mail.test', 'user12@mail' ...
duplicate_email        the previous row's email, sometimes in capitals or with stray spaces
messy_email            stray whitespace and capitals in an otherwise valid email (transform fixes)
orphan_fk              a foreign key pointing past the parent's last id
null_required          NULL in a column the target requires
duplicate_natural_key  the previous row's natural key (order numbers, SKUs, licence numbers ...)
bad_date               'N/A', '2021-13-45', '2021-02-30', '31/12/2020', or an epoch past 2100
=====================  =========================================================================

The legacy side has primary keys but no foreign keys (as in the system being replaced), which is
why orphans exist at all.
"""

from __future__ import annotations

import argparse
import math
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import psycopg
from psycopg import sql

from .connections import connect
from .registry import ENTITIES, Entity, entity
from .transforms import Column, Kind

FIRST_NAMES = ["Ana", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kenji",
               "Lena", "Mateo", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tara", "Uma", "Victor"]
LAST_NAMES = ["Garcia", "Smith", "Nguyen", "Kowalski", "Okafor", "Rossi", "Schmidt", "Tanaka", "Dubois",
              "Novak", "Silva", "Hansen", "Murphy", "Cohen", "Larsen", "Moreau", "Petrov", "Haddad"]
WORDS = ["aligner", "bracket", "retainer", "scan", "refinement", "impression", "molar", "incisor", "arch",
         "wire", "elastic", "attachment", "staging", "review", "fitting", "consult", "model", "tray"]
CITIES = ["Lyon", "Austin", "Porto", "Leeds", "Osaka", "Graz", "Tucson", "Bergen", "Kraków", "Quebec"]
DOMAINS = ["mail.test", "example.com", "clinic.org", "ortho.net"]
BAD_EMAILS = ["{u}@@{d}", "{u} at {d}", "{u}@", "{u}@mail", "@{d}", "{u}@{d}."]
BAD_DATES = ["N/A", "2021-13-45", "2021-02-30", "31/12/2020", "0000-00-00", "19-07-2020"]
BAD_EPOCHS = [99999999999, -86400, 5000000000]
GEN_START = "2015-01-01"
GEN_SPAN_SECONDS = 9 * 365 * 86400


@dataclass(frozen=True)
class DirtyRates:
    invalid_email: float = 0.004
    duplicate_email: float = 0.002
    messy_email: float = 0.10
    orphan_fk: float = 0.0005
    null_required: float = 0.0003
    duplicate_natural_key: float = 0.001
    bad_date: float = 0.0005

    @classmethod
    def clean(cls) -> "DirtyRates":
        return cls(0, 0, 0, 0, 0, 0, 0)


def rows_at_scale(e: Entity, scale: float) -> int:
    return max(1, round(e.expected_rows * scale))


class _Gen:
    """Builds the generator SQL of one entity's columns for one seed."""

    def __init__(self, e: Entity, scale: float, seed: int, rates: DirtyRates, salt_round: int = 0):
        self.e, self.scale, self.seed, self.rates, self.round = e, scale, seed, rates, salt_round

    def rnd(self, tag: str, modulus: int, i: "str | sql.Composable" = "i") -> sql.Composable:
        """Deterministic pseudo-random integer in [0, modulus) for row ``i`` (an SQL expression)."""
        salt = (zlib.crc32(f"{self.e.name}.{tag}.{self.round}".encode()) + self.seed * 1_000_003) % (2**62)
        row = sql.SQL(i) if isinstance(i, str) else i
        return sql.SQL("((hashint8extended({}::bigint, {}) & 9223372036854775807) % {})").format(
            row, sql.Literal(salt), sql.Literal(modulus))

    def chance(self, tag: str, rate: float, i: "str | sql.Composable" = "i") -> sql.Composable:
        return sql.SQL("({} < {})").format(self.rnd(tag, 1_000_000, i), sql.Literal(int(rate * 1_000_000)))

    @staticmethod
    def pick(values: list, index: sql.Composable) -> sql.Composable:
        arr = sql.SQL("ARRAY[{}]").format(sql.SQL(", ").join(sql.Literal(v) for v in values))
        return sql.SQL("({})[1 + {}]").format(arr, index)

    # ---- clean values
    def text_value(self, c: Column, i: str) -> sql.Composable:
        g, t = c.gen, c.target
        I = sql.SQL(i)
        if g == "code":
            prefix = (self.e.name[:3] + t[:2]).upper()
            return sql.SQL("{} || lpad({}::text, 8, '0')").format(sql.Literal(prefix + "-"), I)
        if g in ("word", "company") and c.unique:
            return sql.SQL("initcap({}) || ' ' || {}").format(self.pick(WORDS, self.rnd(t, len(WORDS), i)), I)
        if g == "word":
            return sql.SQL("initcap({})").format(self.pick(WORDS, self.rnd(t, len(WORDS), i)))
        if g == "company":
            return sql.SQL("{} || ' Orthodontics ' || {}").format(
                self.pick(LAST_NAMES, self.rnd(t, len(LAST_NAMES), i)), I)
        if g == "first_name":
            return self.pick(FIRST_NAMES, self.rnd(t, len(FIRST_NAMES), i))
        if g == "last_name":
            return self.pick(LAST_NAMES, self.rnd(t, len(LAST_NAMES), i))
        if g == "phone":
            return sql.SQL("'+1-555-' || lpad({}::text, 7, '0')").format(self.rnd(t, 10_000_000, i))
        if g == "street":
            return sql.SQL("(1 + {})::text || ' ' || {} || ' Street'").format(
                self.rnd(t + "n", 9999, i), self.pick(LAST_NAMES, self.rnd(t, len(LAST_NAMES), i)))
        if g == "city":
            return self.pick(CITIES, self.rnd(t, len(CITIES), i))
        if g == "zip":
            return sql.SQL("lpad({}::text, 5, '0')").format(self.rnd(t, 100_000, i))
        if g == "title":
            return sql.SQL("initcap({}) || ' ' || {} || ' #' || {}").format(
                self.pick(WORDS, self.rnd(t, len(WORDS), i)), self.pick(WORDS, self.rnd(t + "b", len(WORDS), i)), I)
        if g == "file_name":
            return sql.SQL("{} || '_' || {} || {}").format(
                self.pick(WORDS, self.rnd(t, len(WORDS), i)), I,
                self.pick([".stl", ".pdf", ".jpg", ".png", ".dcm"], self.rnd(t + "x", 5, i)))
        if g == "path":
            return sql.SQL("'store/' || ({} / 1000)::text || '/' || md5({}::text || {})").format(
                I, I, sql.Literal(str(self.seed)))
        if g == "sentence":
            w = [self.pick(WORDS, self.rnd(f"{t}{k}", len(WORDS), i)) for k in range(6)]
            return sql.SQL("'Please check the ' || {} || ' and the ' || {} || ' of ' || {} || "
                           "' before the ' || {} || '; the ' || {} || ' needs a ' || {} || '.'").format(*w)
        raise ValueError(f"{self.e.name}.{t}: unknown text generator {g!r}")

    def value(self, c: Column, i: str = "i", parent_rows: dict[str, int] | None = None) -> sql.Composable:
        """Clean legacy value of column ``c`` for row ``i``, then the dirty variants."""
        t, k, r = c.target, c.kind, self.rates
        I = sql.SQL(i)
        if k is Kind.FK:
            n_parent = (parent_rows or {}).get(c.parent) or rows_at_scale(entity(c.parent), self.scale)
            clean = sql.SQL("1 + {}").format(self.rnd(t, n_parent, i))
            orphan = sql.SQL("{} + 1 + {}").format(sql.Literal(n_parent + 1000), self.rnd(t + "o", 1000, i))
            v = sql.SQL("CASE WHEN {} THEN {} ELSE {} END").format(self.chance(t + "orphan", r.orphan_fk, i), orphan,
                                                                   clean)
            if not c.required:
                v = sql.SQL("CASE WHEN {} THEN NULL ELSE {} END").format(self.chance(t + "optnull", 0.3, i), v)
        elif k in (Kind.TEXT, Kind.LONG_TEXT):
            v = self.text_value(c, i)
            if c.unique:
                prev = self.text_value(c, f"({i} - 1)")
                v = sql.SQL("CASE WHEN {} > 1 AND {} THEN {} ELSE {} END").format(
                    I, self.chance(t + "dupnk", r.duplicate_natural_key, i), prev, v)
        elif k is Kind.EMAIL:
            v = self.email_value(c, i)
        elif k in (Kind.INTEGER, Kind.BIGINT):
            mod = {"small": 20, "teeth": 3, "tooth": 32, "bytes": 50_000_000}[c.gen]
            base = {"teeth": 14, "bytes": 1000}.get(c.gen, 1)
            v = sql.SQL("{} + {}").format(sql.Literal(base), self.rnd(t, mod, i))
        elif k is Kind.YN:
            v = self.pick(["Y", "N", "Y", "y", "N", "n"], self.rnd(t, 6, i))
        elif k in (Kind.CODE_INT, Kind.CODE_CHAR):
            v = self.pick(list(c.codes), self.rnd(t, len(c.codes), i))
        elif k is Kind.CENTS:
            v = self.rnd(t, 500_000, i)
        elif k is Kind.EPOCH:
            clean = sql.SQL("{} + {}").format(sql.Literal(1420070400), self.rnd(t, GEN_SPAN_SECONDS, i))
            v = sql.SQL("CASE WHEN {} THEN {} ELSE {} END").format(
                self.chance(t + "bad", r.bad_date, i), self.pick(BAD_EPOCHS, self.rnd(t + "b", 3, i)), clean)
        elif k is Kind.TEXT_DATE:
            clean = sql.SQL("to_char(date {} + {}::int, 'YYYY-MM-DD')").format(
                sql.Literal(GEN_START), self.rnd(t, 3000, i))
            v = sql.SQL("CASE WHEN {} THEN {} ELSE {} END").format(
                self.chance(t + "bad", r.bad_date, i), self.pick(BAD_DATES, self.rnd(t + "b", len(BAD_DATES), i)),
                clean)
        elif k is Kind.TIMESTAMP:
            v = sql.SQL("timestamp {} + make_interval(secs => {})").format(
                sql.Literal(GEN_START), self.rnd(t, GEN_SPAN_SECONDS, i))
        else:
            raise AssertionError(k)
        if c.required and k is not Kind.TIMESTAMP:
            v = sql.SQL("CASE WHEN {} THEN NULL ELSE {} END").format(self.chance(t + "null", r.null_required, i), v)
        return v

    def email_value(self, c: Column, i: str) -> sql.Composable:
        t, r = c.target, self.rates
        user = sql.SQL("lower({}) || '.' || {}").format(
            self.pick(FIRST_NAMES, self.rnd(t + "u", len(FIRST_NAMES), i)), sql.SQL(i))
        # the user part embeds the row id, so clean emails are unique within the table
        domain = self.pick(DOMAINS, self.rnd(t + "d", len(DOMAINS), i))

        def clean(j: str) -> sql.Composable:
            u = sql.SQL("lower({}) || '.' || {}").format(
                self.pick(FIRST_NAMES, self.rnd(t + "u", len(FIRST_NAMES), j)), sql.SQL(j))
            d = self.pick(DOMAINS, self.rnd(t + "d", len(DOMAINS), j))
            return sql.SQL("{} || '@' || {}").format(u, d)

        bad = sql.SQL("replace(replace({}, '{{u}}', {}), '{{d}}', {})").format(
            self.pick(BAD_EMAILS, self.rnd(t + "bad", len(BAD_EMAILS), i)), user, domain)
        prev = clean(f"({i} - 1)")
        messy = sql.SQL("CASE {} WHEN 0 THEN upper({}) WHEN 1 THEN ' ' || {} || '  ' ELSE initcap({}) END")
        v = sql.SQL("CASE WHEN {i} > 1 AND {dup} THEN {dupv} WHEN {inv} THEN {bad} WHEN {messy} THEN {messyv} "
                    "ELSE {clean} END").format(
            i=sql.SQL(i), dup=self.chance(t + "dup", r.duplicate_email, i),
            dupv=messy.format(self.rnd(t + "dv", 3, i), prev, prev, prev),
            inv=self.chance(t + "inv", r.invalid_email, i), bad=bad,
            messy=self.chance(t + "messy", r.messy_email, i),
            messyv=messy.format(self.rnd(t + "mv", 3, i), clean(i), clean(i), clean(i)),
            clean=clean(i))
        if not c.required:
            v = sql.SQL("CASE WHEN {} THEN NULL ELSE {} END").format(self.chance(t + "optnull", 0.05, i), v)
        return v

    def select_rows(self, first: str, last: str, parent_rows=None, change_value: sql.Composable | None = None):
        cols = [sql.SQL("i")]
        for c in self.e.columns:
            if change_value is not None and c.target == self.e.change_column:
                cols.append(change_value)
            else:
                cols.append(self.value(c, "i", parent_rows))
        return sql.SQL("SELECT {} FROM generate_series({}::bigint, {}::bigint) AS i").format(
            sql.SQL(", ").join(cols), sql.SQL(first), sql.SQL(last))


def legacy_ident(e: Entity, schema: str) -> sql.Identifier:
    return sql.Identifier(schema, e.legacy_table)


def legacy_columns(e: Entity) -> list[str]:
    return [e.legacy_pk] + [c.legacy_name for c in e.columns]


def create_table_sql(e: Entity, schema: str) -> sql.Composable:
    cols = [sql.SQL("{} integer NOT NULL").format(sql.Identifier(e.legacy_pk))]
    cols += [sql.SQL("{} {}").format(sql.Identifier(c.legacy_name), sql.SQL(c.kind.legacy_type)) for c in e.columns]
    return sql.SQL("CREATE TABLE {} ({})").format(legacy_ident(e, schema), sql.SQL(", ").join(cols))


def _index_sql(e: Entity, schema: str) -> list[sql.Composable]:
    t = legacy_ident(e, schema)
    return [
        sql.SQL("ALTER TABLE {} ADD PRIMARY KEY ({})").format(t, sql.Identifier(e.legacy_pk)),
        sql.SQL("CREATE INDEX {} ON {} ({})").format(
            sql.Identifier(f"{e.legacy_table}_chg_idx"), t, sql.Identifier(e.legacy_change_column)),
    ]


MARKER = "_simulator"  # the table the simulator writes into every database it fills


class NotASimulatedDatabase(RuntimeError):
    """The database holds tables the simulator did not create: it refuses to drop or write them."""


def _guard(conn, schema: str, force: str | None) -> None:
    """Refuse a database that holds tables but no simulator marker (a real legacy database,
    say), unless ``force`` names that very database."""
    dbname, tables, marked = conn.execute(
        "SELECT current_database(), (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind IN ('r', 'p')), to_regclass(%s) IS NOT NULL",
        [schema, sql.Identifier(schema, MARKER).as_string(conn)]).fetchone()
    if tables and not marked and force != dbname:
        raise NotASimulatedDatabase(
            f"database {dbname} holds {tables} tables in schema {schema} that the simulator did not create; it never "
            f"drops or writes them. To replace them with simulated data anyway: --force {dbname}")


def generate(conninfo: str, scale: float = 0.01, seed: int = 7, rates: DirtyRates = DirtyRates(),
             schema: str = "public", workers: int = 2, log=print, force: str | None = None) -> dict[str, int]:
    """(Re)create the legacy schema in ``schema`` and fill it. Returns rows per legacy table.

    Only in a database with no tables in ``schema`` or one the simulator filled before (its
    marker table ``_simulator``), unless ``force`` names the database."""
    started = time.perf_counter()
    with connect(conninfo, autocommit=True) as conn:
        _guard(conn, schema, force)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        for e in ENTITIES:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(legacy_ident(e, schema)))
            conn.execute(create_table_sql(e, schema))
        conn.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} (key text PRIMARY KEY, value jsonb NOT NULL)").format(
                sql.Identifier(schema, MARKER)))
        conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(schema, MARKER)))
        conn.execute(sql.SQL("INSERT INTO {} VALUES ('params', %s::jsonb)").format(sql.Identifier(schema, MARKER)),
                     [psycopg.types.json.Jsonb({"scale": scale, "seed": seed, "rates": asdict(rates)})])

    def fill(e: Entity) -> tuple[str, int]:
        n = rows_at_scale(e, scale)
        g = _Gen(e, scale, seed, rates)
        with connect(conninfo, autocommit=True) as c:
            c.execute("SET jit = off")
            c.execute(sql.SQL("INSERT INTO {} ({}) {}").format(
                legacy_ident(e, schema), sql.SQL(", ").join(map(sql.Identifier, legacy_columns(e))),
                g.select_rows("1", str(n))))
            for stmt in _index_sql(e, schema):
                c.execute(stmt)
            c.execute(sql.SQL("ANALYZE {}").format(legacy_ident(e, schema)))
        return e.legacy_table, n

    # biggest tables first so the two workers finish together
    order = sorted(ENTITIES, key=lambda e: -e.expected_rows)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        counts = dict(pool.map(fill, order))
    log(f"legacy database generated: {sum(counts.values()):,} rows in {len(counts)} tables "
        f"(scale {scale}, seed {seed}) in {time.perf_counter() - started:.1f}s")
    return counts


@dataclass(frozen=True)
class MutationCounts:
    updated: int
    inserted: int
    deleted: int


def mutate(conninfo: str, fraction: float = 0.01, round_no: int = 1, seed: int = 7, schema: str = "public",
           entities: list[str] | None = None, log=print) -> dict[str, MutationCounts]:
    """Change about ``fraction`` of every table, as a live legacy system would.

    Of the changed rows, 60% are updates (a mutable column edited where the entity has one, and the
    change-tracking column advanced to now()), 30% inserts (new ids past the current maximum, with
    the change-tracking column at now()), 10% deletes. Deterministic for (seed, round) except the
    timestamps, which are the server's clock as a live system's would be.
    """
    out: dict[str, MutationCounts] = {}
    with connect(conninfo, autocommit=False) as conn:
        dbname, marked = conn.execute("SELECT current_database(), to_regclass(%s) IS NOT NULL",
                                      [sql.Identifier(schema, MARKER).as_string(conn)]).fetchone()
        if not marked:
            raise NotASimulatedDatabase(f"database {dbname} was not generated by the simulator (no {MARKER} table): "
                                        "mutate only changes simulated legacy databases")
        params = conn.execute(sql.SQL("SELECT value FROM {} WHERE key = 'params'").format(
            sql.Identifier(schema, "_simulator"))).fetchone()[0]
        scale = params["scale"]
        rates = DirtyRates(**params["rates"])
        targets = [entity(n) for n in entities] if entities else list(ENTITIES)
        max_ids = {}
        for e in ENTITIES:
            max_ids[e.name] = conn.execute(sql.SQL("SELECT coalesce(max({}), 0) FROM {}").format(
                sql.Identifier(e.legacy_pk), legacy_ident(e, schema))).fetchone()[0]
        for e in targets:
            t, pk = legacy_ident(e, schema), sql.Identifier(e.legacy_pk)
            g = _Gen(e, scale, seed, rates, salt_round=round_no)
            chg = sql.Identifier(e.legacy_change_column)
            sets = [sql.SQL("{} = localtimestamp").format(chg)]
            for c in e.columns:
                if c.mutable:
                    sets.append(sql.SQL("{} = {}").format(sql.Identifier(c.legacy_name), _mutated(c, g, round_no, pk)))
            cur = conn.execute(sql.SQL("UPDATE {} SET {} WHERE {}").format(
                t, sql.SQL(", ").join(sets), g.chance("mut_upd", fraction * 0.6, i=pk)))
            updated = cur.rowcount
            n_ins = math.ceil(max_ids[e.name] * fraction * 0.3) if fraction > 0 else 0
            first, last = max_ids[e.name] + 1, max_ids[e.name] + n_ins
            inserted = 0
            if n_ins:
                cur = conn.execute(sql.SQL("INSERT INTO {} ({}) {}").format(
                    t, sql.SQL(", ").join(map(sql.Identifier, legacy_columns(e))),
                    g.select_rows(str(first), str(last), parent_rows=max_ids,
                                  change_value=sql.SQL("localtimestamp"))))
                inserted = cur.rowcount
            cur = conn.execute(sql.SQL("DELETE FROM {} WHERE {} AND {} <= {}").format(
                t, g.chance("mut_del", fraction * 0.1, i=pk), pk, sql.Literal(max_ids[e.name])))
            out[e.name] = MutationCounts(updated, inserted, cur.rowcount)
        conn.commit()
    log(f"mutated round {round_no}: " + ", ".join(
        f"{k} +{v.inserted}/~{v.updated}/-{v.deleted}" for k, v in out.items() if v.inserted + v.updated + v.deleted))
    return out


def _mutated(c: Column, g: _Gen, round_no: int, pk: sql.Identifier) -> sql.Composable:
    col = sql.Identifier(c.legacy_name)
    if c.kind in (Kind.TEXT, Kind.LONG_TEXT):
        return sql.SQL("{} || {}").format(col, sql.Literal(f" (rev {round_no})"))
    if c.kind is Kind.CENTS:
        return sql.SQL("{} + 100").format(col)
    if c.kind in (Kind.CODE_INT, Kind.CODE_CHAR):
        return g.pick(list(c.codes), g.rnd(c.target + "mut", len(c.codes), i=pk))
    raise AssertionError(f"{c.target}: {c.kind} is not mutable")


def main(argv: list[str] | None = None) -> None:
    from .config import resolve_databases

    p = argparse.ArgumentParser(prog="python -m migration_assets.simulator", description=__doc__.split("\n\n")[0])
    p.add_argument("command", nargs="?", default="generate", choices=["generate", "mutate"])
    p.add_argument("--scale", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--clean", action="store_true", help="no dirty data")
    p.add_argument("--fraction", type=float, default=0.01, help="mutate: share of rows changed")
    p.add_argument("--round", type=int, default=1, help="mutate: round number (salt)")
    p.add_argument("--force", metavar="DATABASE", help="generate: replace the tables of DATABASE even though the "
                                                        "simulator did not create them")
    a = p.parse_args(argv)
    dbs = resolve_databases()
    if a.command == "generate":
        generate(dbs.source.conninfo(), a.scale, a.seed, DirtyRates.clean() if a.clean else DirtyRates(),
                 force=a.force)
    else:
        mutate(dbs.source.conninfo(), a.fraction, a.round, a.seed)


if __name__ == "__main__":
    main()
