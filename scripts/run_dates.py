"""Run a DAG for several logical dates, one after the other, in one process.

    python scripts/run_dates.py customer_segmentation 2026-10-25 2026-11-01 -c '{"crm_targets": ["outbox"]}'

Each date is what ``airflow dags test <dag> <date> -c <conf>`` runs (``DAG.test``:
every task in this process, one at a time, recorded in the metadata database),
but the DAG is parsed, and Airflow, pandas, MLflow, PyMC and scikit-learn are
imported, once instead of once per date: that start-up was 10-20 s of each
``airflow dags test`` of the demo. Stops at the first failed run (exit status 1).

Tasks run one at a time, so each may use every core: the thread pools are sized once, before
NumPy and scikit-learn load (:func:`include.runtime.threads.apply_to_process`). SIGTERM or
SIGINT stops the running stage within seconds (its transaction rolls back, the run's MLflow run
is closed KILLED: :mod:`include.runtime.stops`), the run fails and no later date starts
(exit status 128 + the signal's number).
Progress lines (date, state, seconds) go to file descriptor 3 when it is open,
else to standard error, so the caller can send Airflow's task logs elsewhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time


def _progress_stream():
    try:
        return os.fdopen(3, "w", buffering=1)
    except OSError:
        return sys.stderr


@contextlib.contextmanager
def _warehouse_held_open():
    """The embedded DuckDB warehouse kept open for the whole run: every task runs in this process, one at a time.

    Each stage opens the file per operation so that tasks in parallel processes (the scheduler's
    workers) can take turns; here nothing runs beside them, and reopening cost ~16 CPU-s of the
    demo (:meth:`include.runtime.warehouse.DuckDBWarehouse.held_open`). Other warehouses: nothing held.
    """
    from include.runtime.warehouse import DuckDBWarehouse, Warehouse
    from segmentation_providers.hooks.warehouse import WarehouseHook

    with Warehouse(WarehouseHook().get_sqlalchemy_url()) as wh:
        if not isinstance(wh, DuckDBWarehouse):
            yield
            return
        with wh.held_open():
            yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dag_id")
    parser.add_argument("dates", nargs="+", help="logical dates (YYYY-MM-DD), run in this order")
    parser.add_argument("-c", "--conf", default="{}", help="run conf (JSON) of every run")
    args = parser.parse_args(argv)
    conf = json.loads(args.conf)
    progress = _progress_stream()

    from include.runtime import stops, threads

    threads.apply_to_process(concurrent_tasks=1)

    from airflow.sdk import timezone
    from airflow.utils.cli import get_bagged_dag
    from airflow.utils.providers_configuration_loader import providers_configuration_loaded

    @providers_configuration_loaded
    def run_all() -> int:
        dag = get_bagged_dag(bundle_names=None, dag_id=args.dag_id)  # raises when missing or not parsed
        with _warehouse_held_open():
            return run_dates(dag)

    def run_dates(dag) -> int:
        for day in args.dates:
            started = time.perf_counter()
            run = dag.test(logical_date=timezone.parse(day), run_conf=conf)
            state = str(getattr(run, "state", "unknown"))
            print(f"   {args.dag_id} {day}: {state} in {time.perf_counter() - started:.0f} s", file=progress)
            if stops.stop_requested():
                print(f"   stopped by {signal.Signals(stops.stop_requested()).name}", file=progress)
                return 128 + stops.stop_requested()
            if state != "success":
                return 1
        return 0

    return run_all()


if __name__ == "__main__":
    sys.exit(main())
