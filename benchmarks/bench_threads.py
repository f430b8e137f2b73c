"""CPU seconds of ``segment_customers`` on a transactions-only shop: bounded threads against one thread.

    .venv/bin/python benchmarks/bench_threads.py --customers 25000 --out /tmp/bench-threads
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_threads.py --customers 25000 --out /tmp/bench-threads

Prepares the shop once per ``--out`` folder (generate, ``extract_validate``, ``resolve_identity``
exact, ``build_features``; reused by later calls), then runs the ``segment_customers`` stage
adapter the way a task does and prints its wall seconds, the CPU seconds of this process (user +
system, every thread included), the thread budget the stage ran with and the load average. Run
it in the default environment and with ``OMP_NUM_THREADS=1`` (the single-thread reference): the
issue's target is the first within 1.2x of the second.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import resource
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PREPARE = ("extract_validate", "resolve_identity", "build_features")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime + children.ru_utime + children.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=25_000)
    parser.add_argument("--out", type=Path, required=True, help="folder for the shop's warehouse and MLflow store")
    parser.add_argument("--boot", type=int, default=20, help="bootstrap refits (the setting's default: 20)")
    parser.add_argument("--json", type=Path, help="append the figures as one JSON line here")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SEGMENTATION_DATA_DIR", str(out / "data"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    try:
        from include.runtime import threads
    except ImportError:  # code from before the thread budget: measure it unbounded
        threads = None
    from include.demo.transactions_only import CURRENCY_CODE, CURRENCY_SYMBOL
    from include.runtime.run import RunInfo
    from include.runtime.settings import PipelineSettings
    from include.runtime.warehouse import Warehouse
    from include.stages import stage

    prepared = out / f"shop-{args.customers}.duckdb"
    as_of = dt.date(2026, 11, 14)
    settings = PipelineSettings(identity_method="exact", n_bootstrap=args.boot, currency_code=CURRENCY_CODE,
                                currency_symbol=CURRENCY_SYMBOL)
    if not prepared.exists():
        partial = prepared.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        url = f"duckdb:///{partial}"
        from include.demo.transactions_only import generate_transactions_only

        tables = generate_transactions_only(args.customers, end_date=as_of)
        with Warehouse(url) as wh:
            for name in ("raw_identity_records", "raw_orders"):
                wh.replace_table(name, tables[name])
        run = RunInfo("bench_threads", "prepare", as_of, settings, url)
        for name in PREPARE:
            stage(name)(run)
        partial.rename(prepared)
    # Each measurement on a copy, so every run starts from the same warehouse.
    work = out / "work.duckdb"
    shutil.copy(prepared, work)
    run = RunInfo("bench_threads", f"measure-{time.time_ns()}", as_of, settings, f"duckdb:///{work}")
    adapter = stage("segment_customers")
    run.mlflow_run()  # the MLflow store's start-up is not the stage's
    budget = threads.task_thread_budget() if threads else None
    cpu0, wall0 = _cpu_seconds(), time.perf_counter()
    adapter(run)  # the adapter bounds its own thread pools
    wall, cpu = time.perf_counter() - wall0, _cpu_seconds() - cpu0
    with Warehouse(f"duckdb:///{work}") as wh:
        customers = wh.scalar("SELECT COUNT(*) FROM customer_features WHERE as_of_date = :d", {"d": as_of})
        k = wh.scalar("SELECT k FROM segmentation_runs WHERE as_of_date = :d", {"d": as_of})
    load = os.getloadavg()
    figures = {"data": f"transactions-only {args.customers}", "customers": customers,
               "k": k, "n_bootstrap": args.boot, "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
               "thread_budget": budget, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
               "load_1_5_15": [round(x, 1) for x in load], "cores": os.cpu_count()}
    print(json.dumps(figures))
    if args.json:
        with args.json.open("a") as fh:
            fh.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
