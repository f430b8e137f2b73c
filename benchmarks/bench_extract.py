"""Time ``extract_and_validate`` statement by statement on a generated warehouse.

    .venv/bin/python benchmarks/bench_extract.py --raw /work/bench-data/raw-480000-s7.duckdb
    .venv/bin/python benchmarks/bench_extract.py --raw ... --explain raw_orders   # EXPLAIN ANALYZE its check

Copies the raw warehouse (as ``benchmarks/bench_dag.py`` generates it) into a scratch
file, runs the extract stage for ``--as-of`` and prints the stage's wall and CPU
time, then the slowest statements (wall and CPU seconds: DuckDB's threads
count in the process's CPU time, a steadier figure on a loaded machine). With ``--explain`` it
prints DuckDB's ``EXPLAIN ANALYZE`` of one raw table's validation query instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import sys
import time
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from include.extract import validate  # noqa: E402
from include.runtime.warehouse import Warehouse  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", type=Path, required=True, help="a generated raw warehouse (left untouched)")
    parser.add_argument("--scratch", type=Path, default=None, help="working copy (default: next to --raw)")
    parser.add_argument("--as-of", type=dt.date.fromisoformat, default=dt.date(2026, 11, 7))
    parser.add_argument("--explain", metavar="RAW_TABLE", help="EXPLAIN ANALYZE this table's validation query")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args(argv)

    scratch = args.scratch or args.raw.with_name(args.raw.stem + "-extract.duckdb")
    shutil.copy(args.raw, scratch)
    Path(f"{scratch}.wal").unlink(missing_ok=True)
    wh = Warehouse(f"duckdb:///{scratch}")
    try:
        if args.explain:
            explain(wh, args.explain, args.as_of)
            return
        timings: list[tuple[float, float, str]] = []  # (wall, CPU of all threads, statement)

        def before(conn, cursor, statement, parameters, context, executemany):
            conn.info["t0"] = (time.perf_counter(), time.process_time())

        def after(conn, cursor, statement, parameters, context, executemany):
            wall, cpu = conn.info.pop("t0")
            timings.append((time.perf_counter() - wall, time.process_time() - cpu, statement))

        sa.event.listen(wh.engine, "before_cursor_execute", before)
        sa.event.listen(wh.engine, "after_cursor_execute", after)
        wall, cpu = time.perf_counter(), time.process_time()
        reports = validate.extract_and_validate(wh, args.as_of, max_bad_share=1.0)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rows = sum(r.rows_in_scope + r.rows_after_as_of for r in reports)
        print(f"extract_and_validate: {rows:,} raw rows, {wall:.1f} s wall, {cpu:.1f} s CPU (this process), "
              f"{len(timings)} statements taking {sum(t[0] for t in timings):.1f} s wall, "
              f"{sum(t[1] for t in timings):.1f} s CPU")
        for r in reports:
            print(f"  {r.table:22s} in scope {r.rows_in_scope:>11,} staged {r.rows_staged:>11,} "
                  f"quarantined {r.rows_quarantined:>8,} nulled {r.fields_nulled:>7,}")
        print("    wall      CPU  statement (slowest first)")
        for wall_s, cpu_s, statement in sorted(timings, reverse=True)[: args.top]:
            first = re.sub(r"\s+", " ", statement.strip())[:100]
            print(f"{wall_s:8.2f} {cpu_s:8.2f}  {first}")
    finally:
        wh.close()
        scratch.unlink(missing_ok=True)
        Path(f"{scratch}.wal").unlink(missing_ok=True)


def explain(wh: Warehouse, raw_table: str, as_of: dt.date) -> None:
    """Print DuckDB's EXPLAIN ANALYZE of the validation query of ``raw_table``."""
    wh.ensure_schema()
    present = validate.check_contract(wh)
    spec = next(s for s in validate.TABLE_SPECS if s.raw == raw_table)
    sql = validate.build_validation_sql(spec, present[raw_table])
    params = validate.validation_params(as_of)
    query = sql["create"].split(" AS\n", 1)[1]
    with wh.engine.connect() as conn:
        raw = conn.connection.driver_connection
        used = set(re.findall(r":(\w+)", query))
        plan = raw.execute("EXPLAIN ANALYZE " + re.sub(r":(\w+)", r"$\1", query),
                           {k: v for k, v in params.items() if k in used}).fetchall()
    for row in plan:
        print(row[-1])


if __name__ == "__main__":
    main()
