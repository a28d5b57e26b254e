"""bench.peers' measuring parts, without a database: a pipeline of clients is timed, each
client's peak RSS is its own, a failing client is named with its stderr; URLs for the clients
that take no libpq keyword string keep what the conninfo says."""

import pytest

from bench.peers import _pg_url, run_clients


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
