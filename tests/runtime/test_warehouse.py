"""The warehouse interface: dialect dispatch, bulk paths, and the DuckDB file shared by parallel processes."""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import sys
import textwrap
import time

import pandas as pd
import pytest

from include.runtime.warehouse import DuckDBWarehouse, SqlAlchemyWarehouse, Warehouse
from tests.conftest import ROOT

# One worker process: in a loop, replace its own partition of a shared table and read the whole table back.
WORKER = textwrap.dedent("""
    import sys, datetime as dt
    import pandas as pd
    from include.runtime.warehouse import Warehouse

    url, worker, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    failures = 0
    for i in range(rounds):
        try:
            with Warehouse(url) as wh:
                frame = pd.DataFrame({"worker": [worker] * 50, "round": [i] * 50, "value": range(50)})
                wh.replace_partition("shared", frame, {"worker": worker})
                seen = wh.query_df("SELECT worker, COUNT(*) AS n FROM shared GROUP BY worker")
                assert (seen["n"] == 50).all(), seen
                wh.scalar("SELECT COUNT(*) FROM shared WHERE worker = :w", {"w": worker})
        except Exception as exc:  # counted, so the test reports every failure, not just the first
            failures += 1
            print(f"worker {worker} round {i}: {type(exc).__name__}: {exc}", file=sys.stderr)
    print(failures)
""")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def test_constructor_returns_the_dialect_of_the_url(tmp_path):
    with Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}") as duck, Warehouse(f"sqlite:///{tmp_path / 'w.db'}") as lite:
        assert type(duck) is DuckDBWarehouse and duck.dialect == "duckdb"
        assert type(lite) is SqlAlchemyWarehouse and lite.dialect == "sqlite"


@pytest.mark.parametrize("scheme", ["duckdb", "sqlite"])
def test_bulk_paths_round_trip(tmp_path, scheme):
    frame = pd.DataFrame({"as_of_date": [dt.date(2026, 1, 4)] * 3, "Customer_Key": ["a", "b", "c"],
                          "value": [1.5, 2.0, None]})
    with Warehouse(f"{scheme}:///{tmp_path / 'w.db'}") as wh:
        wh.replace_table("t", frame)
        assert wh.table_columns("t") == ["as_of_date", "customer_key", "value"]
        wh.replace_partition("t", frame.iloc[:2], {"as_of_date": dt.date(2026, 1, 4)})
        got = wh.query_df("SELECT * FROM t WHERE value > :v ORDER BY 2", {"v": 1.0, "unused": 1})
        assert list(got.columns) == ["as_of_date", "customer_key", "value"]
        assert got["customer_key"].tolist() == ["a", "b"]
        assert wh.table_columns("missing") is None


def test_two_processes_share_the_duckdb_file_without_lock_failures(tmp_path):
    url = f"duckdb:///{tmp_path / 'shared.duckdb'}"
    with Warehouse(url) as wh:
        wh.run_script("CREATE TABLE shared (worker INTEGER, round INTEGER, value INTEGER)")
    rounds = 25
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, url, str(w), str(rounds)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_env()) for w in (1, 2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
        assert out.strip().splitlines()[-1] == "0", err[-3000:]  # zero failed rounds
    with Warehouse(url) as wh:
        final = wh.query_df("SELECT worker, MAX(round) AS last, COUNT(*) AS n FROM shared GROUP BY 1 ORDER BY 1")
    assert final["last"].tolist() == [rounds - 1] * 2 and final["n"].tolist() == [50, 50]


HOLDER = textwrap.dedent("""
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    con.execute("CREATE TABLE IF NOT EXISTS held (x INTEGER)")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
""")


def _hold_lock(path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_locked_file_is_waited_for_and_the_wait_is_logged(tmp_path, caplog):
    path = tmp_path / "held.duckdb"
    holder = _hold_lock(path, 2.0)
    start = time.monotonic()
    with caplog.at_level(logging.INFO, logger="include.runtime.warehouse"), Warehouse(f"duckdb:///{path}") as wh:
        assert wh.scalar("SELECT COUNT(*) FROM held") == 0
    assert time.monotonic() - start > 0.5  # it really waited for the other process
    holder.wait(timeout=30)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "locked by another process" in messages and "lock acquired after waiting" in messages


def test_the_wait_for_a_locked_file_is_bounded(tmp_path, caplog):
    path = tmp_path / "held.duckdb"
    holder = _hold_lock(path, 5.0)
    try:
        start = time.monotonic()
        with caplog.at_level(logging.INFO, logger="include.runtime.warehouse"), \
                DuckDBWarehouse(f"duckdb:///{path}", lock_timeout=0.6) as wh, pytest.raises(Exception, match="lock"):
            wh.scalar("SELECT 1")
        assert 0.5 < time.monotonic() - start < 4
        assert "giving up" in " ".join(r.getMessage() for r in caplog.records)
    finally:
        holder.wait(timeout=30)
