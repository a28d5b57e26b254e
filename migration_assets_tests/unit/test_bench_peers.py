"""bench.peers' measuring parts, without a database: a pipeline of clients is timed, each
client's peak RSS is its own, a failing client is named with its stderr; URLs for the clients
that take no libpq keyword string keep what the conninfo says; the report reads the results
bench.differential saves in the shape it saves them."""

import json
import statistics

import pytest

from bench.peers import HERE, _differential_floor, _pg_url, run_clients


def test_a_pipeline_runs_end_to_end_and_reports_the_largest_peak():
    # the second client holds ~60 MB: the peak reported is at least that, not the shell's
    seconds, rss = run_clients([["sh", "-c", "printf 'a\\nb\\n'"],
                                ["python3", "-c", "import sys; b = bytearray(60 << 20); "
                                 "assert sys.stdin.read() == 'a\\nb\\n'"]])
    assert seconds > 0
    assert rss >= 60


def test_a_failing_client_is_named_with_its_stderr():
    with pytest.raises(RuntimeError, match=r"python3 exited with 3: .*broken on purpose"):
        run_clients([["sh", "-c", "echo data"],
                     ["python3", "-c", "import sys; sys.stderr.write('broken on purpose'); sys.exit(3)"]])


def test_urls_keep_user_password_host_port_and_database():
    assert _pg_url("host=db.example port=6543 user=u password=p dbname=d") == "postgresql://u:p@db.example:6543/d"
    assert _pg_url("host=h user=u password='p@ss:/w' dbname=d") == "postgresql://u:p%40ss%3A%2Fw@h:5432/d"
    assert _pg_url("host=127.0.0.1 user=postgres dbname=x") == "postgresql://postgres@127.0.0.1:5432/x"


def test_the_differential_report_splits_each_refresh_at_the_floor_of_its_own_round():
    from bench.differential import report

    def rnd(floor, small, large, wrong=()):
        one = lambda s: {"wall_s": s, "orchestration_s": 1.0, "phases": {"deletes": s / 2, "merge": s / 4}}
        return {"0.0": one(floor), "0.001": one(small), "0.01": one(large), "wrong": list(wrong)}

    def mode(rounds):
        return {"full_s": 50.0, "peak_rss_mb": 250.0, "lag_s": 3.25, "rounds": rounds}

    lines = report({"1.0": {"rows": 4_530_501,
                            "watermark": mode([rnd(4.0, 6.0, 10.0), rnd(5.0, 6.5, 12.0), rnd(4.5, 9.0, 11.0)]),
                            "logical": {**mode([rnd(2.0, 2.5, 3.0)]), "wal_retained_mb": 12.5}}})
    rows = {tuple(line.split(" | ")[2:5:2]): line.split(" | ") for line in lines if line.startswith("| 1.0 |")}
    assert rows[("watermark", "0.0%")][5:8] == ["4.50", "9.0%", "-"]
    # medians of the rounds' own differences (2.0, 1.5, 4.5 and 6.0, 7.0, 6.5), not of the medians
    assert rows[("watermark", "0.1%")][5:8] == ["6.50", "13.0%", "2.00"]
    assert rows[("watermark", "1.0%")][5:8] == ["11.00", "22.0%", "6.50"]
    assert rows[("watermark", "1.0%")][8] == "deletes 5.5 s, merge 2.8 s"
    assert rows[("watermark", "1.0%")][9] == "yes |"
    assert rows[("logical", "1.0%")][5:8] == ["3.00", "6.0%", "1.00"]
    assert lines[-2:] == ["- scale 1.0, watermark: lag 3.2 s, peak RSS of the full migration 250 MB",
                          "- scale 1.0, logical: lag 3.2 s, peak RSS of the full migration 250 MB, WAL retained after "
                          "the full migration 12.5 MB"]
    broken = report({"1.0": {"rows": 1, "watermark": mode([rnd(4.0, 6.0, 10.0, wrong=["tasks: 1 of 2"])])}})
    assert [line for line in broken if line.startswith("| 1.0 |")][-1].endswith("| NO |")


@pytest.mark.parametrize("scale", ["0.1", "1.0"])
def test_the_report_quotes_the_no_change_refresh_bench_differential_saved_in_watermark_mode(scale):
    # bench.differential saves its results per scale and per change source; the report of the
    # targets quotes the watermark mode, the one bench.peers' own refresh runs in
    saved = json.loads((HERE / "differential.json").read_text())[scale]["watermark"]
    floor = statistics.median(r["0.0"]["wall_s"] for r in saved["rounds"])
    orchestration = statistics.median(r["0.0"]["orchestration_s"] for r in saved["rounds"])
    assert _differential_floor(scale) == (
        f"; with nothing changed it takes {floor:.1f} s = {floor / saved['full_s']:.1%} of the full "
        f"materialization, {orchestration:.1f} s of it orchestration (bench.differential)")
