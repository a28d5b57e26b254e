"""Issue 38's second lever, measured: the binary COPY of the largest target table (system_messages,
from a scale-1.0 target such as bench.cutover leaves, bench_cut_target) into an unlogged table
without indexes, with its jsonb metadata (parsed by the server row by row), without it, and with
legacy_id, source_hash and the recoveries as typed columns from which a STORED generated column
builds the metadata (through an IMMUTABLE SQL function: jsonb_build_object is only stable).
    .venv/bin/python bench/experiments/metadata_copy.py [TARGET_URL]"""
import io, statistics, sys, tempfile, time
import psycopg
url = sys.argv[1] if len(sys.argv) > 1 else "postgresql://postgres@127.0.0.1:5432/bench_cut_target"
with psycopg.connect(url) as conn:
    cols = [r[0] for r in conn.execute("SELECT column_name FROM information_schema.columns WHERE table_schema='public' "
                                       "AND table_name='system_messages' ORDER BY ordinal_position")]
    plain = [c for c in cols if c != "metadata"]
    def dump(columns):
        f = tempfile.TemporaryFile()
        with conn.cursor().copy(f"COPY (SELECT {', '.join(columns)} FROM system_messages) TO STDOUT (FORMAT binary)") as cp:
            for chunk in cp:
                f.write(chunk)
        f.seek(0)
        return f
    files = {"with metadata jsonb": (cols, dump(cols)), "without metadata": (plain, dump(plain))}
    conn.commit()
    results = {k: [] for k in files}
    for rnd in range(3):
        for name, (columns, f) in files.items():
            conn.execute("DROP TABLE IF EXISTS _c")
            conn.execute(f"CREATE UNLOGGED TABLE _c (LIKE system_messages INCLUDING DEFAULTS)")
            if "metadata" not in columns:
                conn.execute("ALTER TABLE _c DROP COLUMN metadata")
            conn.commit()
            f.seek(0)
            t = time.perf_counter()
            with conn.cursor().copy(f"COPY _c ({', '.join(columns)}) FROM STDIN (FORMAT binary)") as cp:
                while chunk := f.read(1 << 20):
                    cp.write(chunk)
            conn.commit()
            results[name].append(time.perf_counter() - t)
    conn.execute("DROP TABLE IF EXISTS _c"); conn.commit()
    (meta_bytes,) = conn.execute("SELECT avg(pg_column_size(metadata))::int FROM system_messages").fetchone()
    f = tempfile.TemporaryFile()
    q = (f"COPY (SELECT {', '.join(plain)}, (metadata->>'legacy_id')::bigint, (metadata->>'source_hash')::bigint, "
         f"metadata->'recovered' FROM system_messages) TO STDOUT (FORMAT binary)")
    with conn.cursor().copy(q) as cp:
        for chunk in cp:
            f.write(chunk)
    conn.commit()
    generated = []
    for rnd in range(3):
        conn.execute("DROP TABLE IF EXISTS _g")
        conn.execute("CREATE OR REPLACE FUNCTION pg_temp._mk(bigint, bigint, jsonb) RETURNS jsonb LANGUAGE sql "
                     "IMMUTABLE PARALLEL SAFE AS $$ SELECT jsonb_strip_nulls(jsonb_build_object('legacy_id', $1, "
                     "'source_hash', $2, 'recovered', $3)) $$")
        conn.execute("CREATE UNLOGGED TABLE _g (LIKE system_messages INCLUDING DEFAULTS)")
        conn.execute("ALTER TABLE _g DROP COLUMN metadata, ADD COLUMN legacy_id bigint, ADD COLUMN source_hash bigint, "
                     "ADD COLUMN recovered jsonb, ADD COLUMN metadata jsonb GENERATED ALWAYS AS "
                     "(pg_temp._mk(legacy_id, source_hash, recovered)) STORED")
        conn.commit()
        f.seek(0)
        t = time.perf_counter()
        with conn.cursor().copy(f"COPY _g ({', '.join(plain)}, legacy_id, source_hash, recovered) FROM STDIN "
                                "(FORMAT binary)") as cp:
            while chunk := f.read(1 << 20):
                cp.write(chunk)
        conn.commit()
        generated.append(time.perf_counter() - t)
    conn.execute("DROP TABLE IF EXISTS _g"); conn.commit()
    results["typed columns + generated metadata"] = generated

for k, v in results.items():
    print(f"{k}: median {statistics.median(v):.2f}s of {['%.2f' % x for x in v]}")
print("rows 2,180,094; metadata avg bytes", meta_bytes)
