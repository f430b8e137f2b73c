"""Time ``extract_and_validate`` (and ``build_customer_features``) statement by statement.

    .venv/bin/python benchmarks/bench_extract.py --raw /work/bench-data/raw-480000-s7.duckdb
    .venv/bin/python benchmarks/bench_extract.py --raw ... --weeks 2 --dump /tmp/out   # both weeks, tables kept
    .venv/bin/python benchmarks/bench_extract.py --raw ... --explain raw_orders         # EXPLAIN ANALYZE its check
    .venv/bin/python benchmarks/bench_extract.py --features /path/run/warehouse.duckdb  # features of its dates

Copies the raw warehouse (as ``benchmarks/bench_dag.py`` generates it) into a scratch
file and runs the extract stage for ``--as-of`` (and, with ``--weeks 2``, for the week
after on the same file, as the DAG's second week does). Each week runs in its own
process, as a task does: its wall and CPU seconds (DuckDB's threads count in CPU time, a
steadier figure on a loaded machine) and peak resident memory, then the slowest statements.
``--dump DIR`` writes every table the stage writes, the date's rows sorted, as Parquet
under ``DIR/<date>/``: two runs' folders compare table by table (``--compare A B``).

``--features WAREHOUSE`` instead copies a warehouse a DAG run left (staging, identity map
and customers of its dates, e.g. ``bench_dag.py``'s ``warehouse.duckdb``) and times
``build_customer_features`` for each of its dates (``customer_features`` and
``customer_rfm`` dumped with ``--dump``).

With ``--explain`` it prints DuckDB's ``EXPLAIN ANALYZE`` of one raw table's validation
query instead.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from include.extract import validate  # noqa: E402
from include.runtime.warehouse import Warehouse  # noqa: E402

#: Every table ``extract_validate`` writes, by the column that holds the date.
EXTRACT_TABLES = ([spec.staged for spec in validate.TABLE_SPECS]
                  + ["stg_identity_identifiers", "quarantine", "field_issues", "extract_flags",
                     "return_attribution", "extract_log"])
FEATURE_TABLES = ["customer_features", "customer_rfm"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", type=Path, help="a generated raw warehouse (left untouched)")
    parser.add_argument("--features", type=Path, metavar="WAREHOUSE",
                        help="time build_customer_features on a copy of this run's warehouse")
    parser.add_argument("--scratch", type=Path, default=None, help="working copy (default: next to the source)")
    parser.add_argument("--as-of", type=dt.date.fromisoformat, default=dt.date(2026, 11, 7))
    parser.add_argument("--weeks", type=int, default=1, help="extract: dates one week apart, on the same file")
    parser.add_argument("--dump", type=Path, help="write the stage's tables, sorted, as Parquet here")
    parser.add_argument("--compare", type=Path, nargs=2, metavar=("A", "B"), help="compare two --dump folders")
    parser.add_argument("--explain", metavar="RAW_TABLE", help="EXPLAIN ANALYZE this table's validation query")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--child", choices=["extract", "features", "dump-extract", "dump-features"],
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.compare:
        sys.exit(compare(*args.compare))
    if args.child:
        run_child(args)
        return
    source = args.features or args.raw
    if source is None:
        parser.error("--raw or --features is required")
    scratch = args.scratch or source.with_name(source.stem + "-bench.duckdb")
    shutil.copy(source, scratch)
    Path(f"{scratch}.wal").unlink(missing_ok=True)
    try:
        if args.explain:
            with Warehouse(f"duckdb:///{scratch}") as wh:
                explain(wh, args.explain, args.as_of)
            return
        if args.features:
            with Warehouse(f"duckdb:///{scratch}") as wh:
                dates = [pd.Timestamp(d).date() for d in
                         wh.query_df("SELECT DISTINCT as_of_date FROM identity_map ORDER BY 1")["as_of_date"]]
        else:
            dates = [args.as_of + dt.timedelta(days=7 * i) for i in range(args.weeks)]
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        for date in dates:
            stage = "features" if args.features else "extract"
            cmd = [sys.executable, __file__, "--child", stage, "--scratch", str(scratch), "--as-of", date.isoformat(),
                   "--top", str(args.top)]
            wall = time.perf_counter()
            proc = subprocess.Popen(cmd)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - wall
            if status:
                raise SystemExit(f"{date}: the child failed ({status})")
            print(f"== {date}: {wall:.1f} s wall, {usage.ru_utime + usage.ru_stime:.1f} CPU-s (process), "
                  f"peak RSS {usage.ru_maxrss / 1024 ** 2:.2f} GB; load average {os.getloadavg()[0]:.1f}\n")
            if args.dump:  # in a process of its own, so the sorts stay out of the stage's figures
                subprocess.run([sys.executable, __file__, "--child", f"dump-{stage}", "--scratch", str(scratch),
                                "--as-of", date.isoformat(), "--dump", str(args.dump)], check=True)
    finally:
        scratch.unlink(missing_ok=True)
        Path(f"{scratch}.wal").unlink(missing_ok=True)


def run_child(args: argparse.Namespace) -> None:
    """One week of one stage on the scratch file, in this process: statement timings and the dump."""
    wh = Warehouse(f"duckdb:///{args.scratch}")
    if args.child.startswith("dump-"):
        try:
            dump(wh, args.as_of, EXTRACT_TABLES if args.child == "dump-extract" else FEATURE_TABLES, args.dump)
        finally:
            wh.close()
        return
    timings: list[tuple[float, float, str]] = []  # (wall, CPU of all threads, statement)

    def before(conn, cursor, statement, parameters, context, executemany):
        conn.info["t0"] = (time.perf_counter(), time.process_time())

    def after(conn, cursor, statement, parameters, context, executemany):
        wall, cpu = conn.info.pop("t0")
        timings.append((time.perf_counter() - wall, time.process_time() - cpu, statement))

    sa.event.listen(wh.engine, "before_cursor_execute", before)
    sa.event.listen(wh.engine, "after_cursor_execute", after)
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        if args.child == "extract":
            reports = validate.extract_and_validate(wh, args.as_of, max_bad_share=1.0)
        else:
            from include.features.build import build_customer_features
            from include.runtime.settings import DEFAULT_SUPPORT_COST_BY_CHANNEL

            metrics = build_customer_features(wh, args.as_of, DEFAULT_SUPPORT_COST_BY_CHANNEL)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"{args.child} {args.as_of}: {wall:.1f} s wall, {cpu:.1f} s CPU (the stage's call), "
              f"{len(timings)} statements taking {sum(t[0] for t in timings):.1f} s wall, "
              f"{sum(t[1] for t in timings):.1f} s CPU")
        if args.child == "extract":
            for r in reports:
                print(f"  {r.table:22s} in scope {r.rows_in_scope:>11,} staged {r.rows_staged:>11,} "
                      f"quarantined {r.rows_quarantined:>8,} nulled {r.fields_nulled:>7,}")
        else:
            print(f"  {json.dumps(metrics)}")
        print("    wall      CPU  statement (slowest first)")
        for wall_s, cpu_s, statement in sorted(timings, reverse=True)[: args.top]:
            first = re.sub(r"\s+", " ", statement.strip())[:100]
            print(f"{wall_s:8.2f} {cpu_s:8.2f}  {first}")
    finally:
        wh.close()


def dump(wh: Warehouse, as_of: dt.date, tables: list[str], folder: Path) -> None:
    """The date's rows of ``tables``, sorted by every column, as ``folder/<date>/<table>.parquet``."""
    out = folder / as_of.isoformat()
    out.mkdir(parents=True, exist_ok=True)
    with wh.engine.connect() as conn:
        raw = conn.connection.driver_connection
        for table in tables:
            target = out / f"{table}.parquet"
            target.unlink(missing_ok=True)
            raw.execute(f"COPY (SELECT * FROM {table} WHERE as_of_date = $d ORDER BY ALL) TO '{target}' "
                        "(FORMAT PARQUET)", {"d": as_of})


def compare(a: Path, b: Path) -> int:
    """Compare two ``--dump`` folders table by table (exact, NULL = NULL); 1 when any differs."""
    import duckdb

    conn = duckdb.connect()
    differ = 0
    files = sorted({p.relative_to(a) for p in a.rglob("*.parquet")} | {p.relative_to(b) for p in b.rglob("*.parquet")})
    for rel in files:
        pa, pb = a / rel, b / rel
        if not (pa.exists() and pb.exists()):
            print(f"{rel}: only in {'A' if pa.exists() else 'B'}")
            differ = 1
            continue
        n_a = conn.execute(f"SELECT COUNT(*) FROM '{pa}'").fetchone()[0]
        n_b = conn.execute(f"SELECT COUNT(*) FROM '{pb}'").fetchone()[0]
        only_a = conn.execute(f"SELECT COUNT(*) FROM (SELECT * FROM '{pa}' EXCEPT ALL SELECT * FROM '{pb}')").fetchone()[0]
        only_b = conn.execute(f"SELECT COUNT(*) FROM (SELECT * FROM '{pb}' EXCEPT ALL SELECT * FROM '{pa}')").fetchone()[0]
        same = only_a == 0 and only_b == 0
        note = "identical" if same else f"{only_a:,} only in A, {only_b:,} only in B"
        if not same and n_a == n_b:
            # DuckDB's parallel SUM of DOUBLEs depends on the order threads add partial sums: the last
            # digits of a sum over millions of rows differ between two runs of the same code.
            cols = conn.execute(f"DESCRIBE SELECT * FROM '{pa}'").fetchall()
            sel = ", ".join(f"ROUND({c[0]}, 6)" if c[1] == "DOUBLE" else c[0] for c in cols)
            rounded = conn.execute(f"SELECT COUNT(*) FROM (SELECT {sel} FROM '{pa}' EXCEPT ALL "
                                   f"SELECT {sel} FROM '{pb}')").fetchone()[0]
            if rounded == 0:
                same, note = True, note + "; identical with DOUBLEs rounded to 6 decimals"
        differ |= not same
        print(f"{rel}: {n_a:,} / {n_b:,} rows, {note}")
    return differ


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
        bind = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")  # not the ':00' of a '+00:00' literal
        used = set(bind.findall(query))
        plan = raw.execute("EXPLAIN ANALYZE " + bind.sub(r"$\1", query),
                           {k: v for k, v in params.items() if k in used}).fetchall()
    for row in plan:
        print(row[-1])


if __name__ == "__main__":
    main()
