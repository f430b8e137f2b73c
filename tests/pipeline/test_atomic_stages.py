"""Issue #15, item 3: every writing stage is all-or-nothing.

For each writing stage of the DAG, on a small generated warehouse whose
upstream stages ran once (one prepared DuckDB file per stage, shared by the
module): a child process runs the stage and is killed with SIGKILL *inside*
its writes, just before its first write to the last table it writes (every
other table of the stage is already written in its transaction by then).
Right before the kill, the child reads the stage's tables from a second
connection (in-process: a DuckDB file admits one process) and records what
a reader sees. Then:

- the reader saw exactly the state before the stage (its per-date row
  counts of every table the stage writes), never part of the new date;
- the file reopens, and holds that same state;
- a re-run of the stage (same DAG run id, as an Airflow retry would) leaves
  the stage's tables equal to the uninterrupted reference run.

Fault injection lives here, not in product code: the child wraps
SQLAlchemy's ``Connection.execute`` and ``DuckDBWarehouse.insert_df`` to see
which table each write goes to. Children are spawned, not forked: a child
forked from this process (whose thread pools and DuckDB instances ran every
stage already) could wait forever on a lock held by a thread that no longer
exists in it (seen 2026-12-08: ``segment_customers``' child in a futex wait at
0 CPU). A spawned child pays a Python start-up and its imports.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import json
import multiprocessing
import os
import re
import shutil
import signal
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest
import sqlalchemy as sa

from tests.conftest import AS_OF, DATA_END, write_tables

PERSONS = 300
EARLIER = AS_OF - dt.timedelta(days=7)
SETTINGS = dict(identity_method="exact", n_bootstrap=4, k_min=3, k_max=5, n_init=2, silhouette_sample=1500)
#: The DAG's writing tasks, in an order the DAG runs them.
STAGES = ("extract_validate", "resolve_identity", "build_features", "segment_customers", "fit_clv",
          "backtest_claims", "label_segments", "crosscheck_clv", "publish_segments", "track_migration",
          "build_economics", "push_outbox")
#: Columns that differ between two correct runs: run ids (another DAG run id is another MLflow run) and clocks.
VOLATILE = re.compile(r"(run_id|_at)$")
_WRITE = re.compile(r"^\s*(?:DELETE\s+FROM|INSERT\s+INTO|UPDATE|MERGE\s+INTO|CREATE\s+OR\s+REPLACE\s+TABLE)\s+"
                    r"([A-Za-z_][\w.]*)", re.I)


def _run_stage(name: str, url: str, run_id: str, as_of_date: dt.date = AS_OF) -> None:
    from include.runtime.run import RunInfo
    from include.runtime.settings import PipelineSettings
    from include.stages import stage

    if name == "push_outbox":
        from segmentation_providers.operators.push_segments import PushSegmentsOperator

        PushSegmentsOperator(task_id="push_outbox", target="outbox", as_of_date=as_of_date.isoformat(),
                             warehouse_url=url).execute({"run_id": run_id})
        return
    stage(name)(RunInfo("atomic_stages", run_id, as_of_date, PipelineSettings(**SETTINGS), url))


@contextlib.contextmanager
def watch_writes(path: Path, before: str | None = None, on_hit: Callable[[], None] | None = None
                 ) -> Iterator[list[str]]:
    """Record the tables written in the DuckDB file ``path``, in order; call ``on_hit`` before a write to ``before``."""
    from include.runtime.warehouse import DuckDBWarehouse

    seen: list[str] = []

    def note(table: str) -> None:
        table = table.split(".")[-1].strip('"').lower()
        if on_hit is not None and table == before:
            on_hit()
        seen.append(table)

    def ours(conn: sa.Connection) -> bool:
        return conn.engine.url.database == str(path)

    execute, exec_driver_sql = sa.engine.Connection.execute, sa.engine.Connection.exec_driver_sql
    insert_df, replace_table = DuckDBWarehouse.insert_df, DuckDBWarehouse.replace_table

    def watched_execute(self, statement, *args, **kwargs):
        m = _WRITE.match(str(statement)) if ours(self) else None
        if m:
            note(m.group(1))
        return execute(self, statement, *args, **kwargs)

    def watched_driver_sql(self, statement, *args, **kwargs):
        m = _WRITE.match(str(statement)) if ours(self) else None
        if m:
            note(m.group(1))
        return exec_driver_sql(self, statement, *args, **kwargs)

    def watched_insert_df(self, table, df, conn):
        if len(df) and ours(conn):
            note(table)
        return insert_df(self, table, df, conn)

    def watched_replace_table(self, table, df):
        note(table)
        return replace_table(self, table, df)

    with mock.patch.object(sa.engine.Connection, "execute", watched_execute), \
            mock.patch.object(sa.engine.Connection, "exec_driver_sql", watched_driver_sql), \
            mock.patch.object(DuckDBWarehouse, "insert_df", watched_insert_df), \
            mock.patch.object(DuckDBWarehouse, "replace_table", watched_replace_table):
        yield seen


def partition_counts(conn: sa.Connection, tables: list[str]) -> dict[str, dict[str, int]]:
    """Rows per as-of date (or in all, for tables without one) of each table; a missing table is empty."""
    counts: dict[str, dict[str, int]] = {}
    for table in tables:
        columns = {c for (c,) in conn.execute(sa.text(
            "SELECT LOWER(column_name) FROM information_schema.columns WHERE table_schema = 'main' "
            "AND LOWER(table_name) = :t"), {"t": table})}
        if not columns:
            counts[table] = {}
        elif "as_of_date" in columns:
            counts[table] = {str(d): int(n) for d, n in conn.execute(sa.text(
                f"SELECT CAST(as_of_date AS VARCHAR), COUNT(*) FROM {table} GROUP BY 1"))}
        else:
            n = conn.execute(sa.text(f"SELECT COUNT(*) FROM {table}")).scalar()
            counts[table] = {"*": int(n)} if n else {}
    return counts


def table_contents(url: str, tables: list[str]) -> dict[str, pd.DataFrame]:
    """Each table without its volatile columns, as text (floats to 9 decimals), in a fixed row order."""
    from include.runtime.warehouse import Warehouse

    contents = {}
    with Warehouse(url) as wh:
        for table in tables:
            frame = wh.query_df(f"SELECT * FROM {table}")
            frame = frame[[c for c in frame.columns if not VOLATILE.search(c)]]
            for col in frame.select_dtypes("float").columns:
                frame[col] = frame[col].round(9)
            frame = frame.astype(str)
            contents[table] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
    return contents


def _counts_of(url: str, tables: list[str]) -> dict[str, dict[str, int]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return partition_counts(conn, tables)
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The reference run: every stage once, uninterrupted; the file before each stage; each stage's tables after it."""
    from include.demo.generate import DemoGenerator
    from include.runtime.warehouse import Warehouse

    folder = tmp_path_factory.mktemp("atomic")
    path = folder / "reference.duckdb"
    url = f"duckdb:///{path}"
    write_tables(url, DemoGenerator(PERSONS, seed=5, end_date=DATA_END).generate(show_progress=False), prefix="")
    # The week before, up to its published labels: the date under test then has an earlier date to migrate
    # from and labels to hold back.
    for name in ("extract_validate", "resolve_identity", "build_features", "segment_customers", "label_segments",
                 "publish_segments"):
        _run_stage(name, url, "earlier", EARLIER)
    cases = {}
    for name in STAGES:
        before = folder / f"before_{name}.duckdb"
        shutil.copy(path, before)
        with watch_writes(path) as seen:
            _run_stage(name, url, "reference")
        with Warehouse(url) as wh:
            existing = set(wh.schema_columns())
        tables = list(dict.fromkeys(t for t in seen if t in existing))
        assert tables, f"{name} wrote no table"
        cases[name] = {"before": before, "tables": tables, "last": tables[-1],
                       "expected": table_contents(url, tables), "before_counts": _counts_of(f"duckdb:///{before}", tables)}
    return cases


def _killed_child(path: Path, name: str, before: str, tables: list[str], report: Path) -> None:
    """Run ``name`` on ``path``; just before its first write to ``before``, record a second connection's view, die."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # one thread per pool: the parent test process runs beside it
    url = f"duckdb:///{path}"

    def read_then_die() -> None:
        report.write_text(json.dumps(_counts_of(url, tables)))
        os.kill(os.getpid(), signal.SIGKILL)

    try:
        with watch_writes(path, before, read_then_die):
            _run_stage(name, url, f"case-{name}")
    except BaseException:  # noqa: BLE001 - the child reports through its stderr and exit code only
        traceback.print_exc()
    finally:
        os._exit(3)  # not reached when the kill fired: 3 says the stage finished or failed without it


@pytest.mark.parametrize("name", STAGES)
def test_a_stage_killed_inside_its_writes_leaves_the_old_state_and_a_rerun_equals_an_uninterrupted_run(
        prepared, name, tmp_path):
    case = prepared[name]
    path = tmp_path / "killed.duckdb"
    shutil.copy(case["before"], path)
    report = tmp_path / "reader.json"
    gc.collect()  # no DuckDB instance of this file may stay open while the child writes it
    child = multiprocessing.get_context("spawn").Process(
        target=_killed_child, args=(path, name, case["last"], case["tables"], report))
    child.start()
    child.join(timeout=900)
    assert child.exitcode == -signal.SIGKILL, f"{name}: the child ended with {child.exitcode}, not killed in its writes"
    seen = json.loads(report.read_text())
    before = case["before_counts"]
    print(f"{name}: killed before writing {case['last']}; tables {case['tables']}; "
          f"reader saw {seen}; before the stage {before}")
    assert seen == before, f"{name}: a reader saw a half-written date while the stage was writing"
    url = f"duckdb:///{path}"
    assert _counts_of(url, case["tables"]) == before, f"{name}: the killed run left writes behind"
    _run_stage(name, url, f"case-{name}")
    got = table_contents(url, case["tables"])
    for table, expected in case["expected"].items():
        pd.testing.assert_frame_equal(got[table], expected, obj=f"{name}: {table} after the re-run")
