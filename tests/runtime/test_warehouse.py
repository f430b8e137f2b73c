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



def test_held_open_keeps_one_database_for_the_process_and_lets_go_after(tmp_path):
    import duckdb

    path = tmp_path / "held_open.duckdb"
    with Warehouse(f"duckdb:///{path}") as wh:
        wh.run_script("CREATE TABLE t (v INTEGER)")
        with wh.held_open():
            with pytest.raises(duckdb.ConnectionException, match="different configuration"):
                duckdb.connect(str(path), read_only=True)  # the file is open in this process, read-write
            wh.replace_partition("t", pd.DataFrame({"v": [1, 2]}), {"v": 1})
            with pytest.raises(RuntimeError), wh.transaction() as tx:  # still all or nothing
                tx.replace_partition("t", pd.DataFrame({"v": [3]}), {"v": 3})
                raise RuntimeError("stage failed")
            assert wh.scalar("SELECT SUM(v) FROM t") == 3
    with duckdb.connect(str(path), read_only=True) as con:  # closed and checkpointed: opens with any config
        assert con.execute("SELECT SUM(v) FROM t").fetchone()[0] == 3

# -- one transaction per stage -------------------------------------------------------------------------------------
D = dt.date(2026, 1, 4)


def _two_tables(wh: Warehouse) -> pd.DataFrame:
    wh.run_script("CREATE TABLE a (as_of_date DATE, v INTEGER);\nCREATE TABLE b (as_of_date DATE, v INTEGER)")
    frame = pd.DataFrame({"as_of_date": [D] * 3, "v": [1, 2, 3]})
    wh.replace_partition("a", frame, {"as_of_date": D})
    wh.replace_partition("b", frame, {"as_of_date": D})
    return frame


def _counts(wh: Warehouse) -> tuple[int, int]:
    return wh.scalar("SELECT COUNT(*) FROM a"), wh.scalar("SELECT COUNT(*) FROM b")


@pytest.mark.parametrize("kind", ["duckdb", "snowflake"])
def test_a_transaction_commits_every_table_together_or_none(tmp_path, kind):
    from tests.warehouses import warehouse

    with warehouse(kind, tmp_path) as wh:
        frame = _two_tables(wh)
        with pytest.raises(RuntimeError, match="stage failed"), wh.transaction() as tx:
            tx.replace_partition("a", frame.iloc[:1], {"as_of_date": D})
            tx.run_script("DELETE FROM b WHERE v = 3")
            # The bound warehouse reads its own uncommitted writes.
            assert (tx.scalar("SELECT COUNT(*) FROM a"), len(tx.query_df("SELECT * FROM b"))) == (1, 2)
            raise RuntimeError("stage failed")
        assert _counts(wh) == (3, 3)  # both rolled back
        with wh.transaction() as tx:
            tx.replace_partition("a", frame.iloc[:1], {"as_of_date": D})
            with tx.begin() as conn:  # joins, does not commit early
                tx.replace_partition("b", frame.iloc[:2], {"as_of_date": D}, conn=conn)
            with tx.transaction() as inner:  # nested transaction() joins as well
                assert inner.scalar("SELECT COUNT(*) FROM b") == 2
        assert _counts(wh) == (1, 2)


def test_ddl_inside_a_snowflake_transaction_commits_it(tmp_path):
    """Why the Snowflake bulk path keeps DDL out of the caller's transaction (fakesnow models Snowflake's rule)."""
    import sqlalchemy as sa

    from tests.warehouses import warehouse

    with warehouse("snowflake", tmp_path) as wh:
        _two_tables(wh)
        with pytest.raises(RuntimeError), wh.begin() as conn:
            conn.execute(sa.text("DELETE FROM a"))
            conn.execute(sa.text("CREATE TABLE c (x INTEGER)"))  # what write_pandas's CREATE STAGE does
            raise RuntimeError
        assert _counts(wh) == (0, 3)  # the DELETE was committed by the DDL, not rolled back


def test_the_snowflake_scratch_table_path_stays_in_the_transaction(tmp_path, monkeypatch):
    from include.runtime.warehouse import SnowflakeWarehouse
    from tests.warehouses import warehouse

    monkeypatch.setattr(SnowflakeWarehouse, "inline_rows", 0)  # every frame through a scratch table
    with warehouse("snowflake", tmp_path) as wh:
        frame = _two_tables(wh)
        with pytest.raises(RuntimeError), wh.transaction() as tx:
            tx.replace_partition("a", frame.assign(v=9), {"as_of_date": D})
            assert tx.scalar("SELECT SUM(v) FROM a") == 27
            raise RuntimeError
        assert wh.scalar("SELECT SUM(v) FROM a") == 6
        wh.replace_partition("a", frame.assign(v=9).iloc[:2], {"as_of_date": D})
        assert wh.query_df("SELECT v FROM a")["v"].tolist() == [9, 9]
        tables = wh.query_df("SHOW TABLES")["name"].str.upper().tolist()
        assert not [t for t in tables if t.startswith(SnowflakeWarehouse.SCRATCH_PREFIX)], tables


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys, datetime as dt
    import pandas as pd
    from include.runtime.warehouse import Warehouse

    with Warehouse(sys.argv[1]) as wh, wh.transaction() as tx:
        frame = pd.DataFrame({"as_of_date": [dt.date(2026, 1, 4)] * 5, "v": range(5)})
        tx.replace_partition("a", frame, {"as_of_date": dt.date(2026, 1, 4)})
        tx.replace_partition("b", frame.iloc[:0], {"as_of_date": dt.date(2026, 1, 4)})
        os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_process_killed_inside_a_duckdb_transaction_leaves_the_old_state(tmp_path):
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    with Warehouse(url) as wh:
        _two_tables(wh)
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, url], capture_output=True, text=True, env=_env(),
                          timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    with Warehouse(url) as wh:
        assert _counts(wh) == (3, 3)


@pytest.mark.parametrize("kind", ["duckdb", "snowflake"])
def test_a_discarded_transaction_computes_with_sql_and_leaves_nothing(tmp_path, kind):
    from tests.warehouses import warehouse

    with warehouse(kind, tmp_path) as wh:
        _two_tables(wh)
        with wh.transaction(discard=True) as preview:
            preview.run_script("INSERT INTO a SELECT as_of_date, v * 10 FROM b")
            assert preview.scalar("SELECT SUM(v) FROM a") == 66
        assert wh.scalar("SELECT SUM(v) FROM a") == 6
        with wh.transaction() as tx, pytest.raises(ValueError, match="cannot be nested"), tx.transaction(discard=True):
            pass
