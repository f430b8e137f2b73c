"""Back-to-back scheduler backfills: no "database is locked", every task on its first try.

    .venv/bin/python benchmarks/bench_backfills.py --backfills 10 --weeks 3

Starts the stack the tests use (``scripts/ui.sh``: api-server, scheduler, dag-processor,
log server; metadata in the data folder's PostgreSQL) over a small generated warehouse
(``--persons``), then runs ``--backfills`` backfills of ``--weeks`` weekly runs each, one
after the other (``airflow backfill create ... --max-active-runs 1``, the next created as
soon as the previous one finished; each covers the weeks before the previous one's), with the test suite's small-data settings. Counts
"database is locked" in the CLI's output and in every component's log, and every task
that ended elsewhere than on try 1 with success (or skipped). Prints one line per backfill
(wall seconds of its runs, CPU seconds of the stack's processes, load average) and a summary;
exits 1 when a lock error or a retried/failed task was seen.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.airflow_stack import DAG_ID, SMALL_DATA_CONF, STACK_DATA_END, AirflowStack  # noqa: E402

LOCKED = "database is locked"


def _stack_cpu(stack: AirflowStack) -> float:
    total = 0.0
    for proc in stack.processes():
        try:
            times = proc.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except psutil.Error:
            continue
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backfills", type=int, default=10)
    parser.add_argument("--weeks", type=int, default=3)
    parser.add_argument("--persons", type=int, default=300)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--data-dir", type=Path, help="the stack's data folder (default: a fresh temporary one)")
    args = parser.parse_args(argv)

    from include.demo.generate import write_demo_data

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-backfills-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    write_demo_data(f"duckdb:///{data_dir / 'warehouse.duckdb'}", args.persons, seed=5, end_date=STACK_DATA_END,
                    show_progress=False)
    stack = AirflowStack(data_dir, components=("api-server", "scheduler", "dag-processor", "log-server"),
                         parallelism=args.parallelism, env={"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"})
    # Sundays: backfill i covers the `weeks` weeks before backfill i-1's (new runs each time, none re-run).
    last_sunday = STACK_DATA_END + dt.timedelta(days=1)
    locked = bad_tasks = 0
    started = time.monotonic()
    stack.start()
    try:
        stack.wait_for_dag(DAG_ID)
        stack.unpause(DAG_ID)
        print(f"stack up in {time.monotonic() - started:.0f} s; metadata: {stack.metadata_url().split('?')[0]}",
              flush=True)
        seen_runs: set[str] = set()
        for i in range(args.backfills):
            to_date = last_sunday - dt.timedelta(weeks=i * args.weeks)
            from_date = to_date - dt.timedelta(weeks=args.weeks - 1)
            cpu0, t0 = _stack_cpu(stack), time.monotonic()
            # The scheduler marks the previous backfill completed a loop after its last run ended; until then
            # Airflow refuses a new one for the Dag (AlreadyRunningBackfill), so creation waits for it.
            created_by = time.monotonic() + 300
            while True:
                out = stack.airflow("backfill", "create", "--dag-id", DAG_ID, "--from-date", from_date.isoformat(),
                                    "--to-date", to_date.isoformat(), "--max-active-runs", "1",
                                    "--dag-run-conf", json.dumps(SMALL_DATA_CONF))
                locked += (out.stdout + out.stderr).count(LOCKED)
                if out.returncode == 0 or "AlreadyRunningBackfill" not in out.stderr or time.monotonic() > created_by:
                    break
                time.sleep(5)
            if out.returncode != 0:
                print(f"backfill {i + 1}: airflow backfill create failed ({out.returncode}):\n{out.stderr[-3000:]}")
                return 1
            deadline = time.monotonic() + 3600
            while True:
                runs = [r for r in stack.dag_runs(DAG_ID, run_type="backfill") if r["dag_run_id"] not in seen_runs]
                if len(runs) >= args.weeks and all(r["state"] in ("success", "failed") for r in runs):
                    break
                if time.monotonic() > deadline:
                    print(f"backfill {i + 1} not finished within an hour: {[(r['dag_run_id'], r['state']) for r in runs]}")
                    return 1
                time.sleep(5)
            for run in runs:
                seen_runs.add(run["dag_run_id"])
                for task, (state, tries) in stack.task_states(DAG_ID, run["dag_run_id"]).items():
                    if state not in ("success", "skipped") or tries != 1:
                        bad_tasks += 1
                        print(f"  {run['dag_run_id']} {task}: {state} on try {tries}")
            load = os.getloadavg()
            print(f"backfill {i + 1}/{args.backfills} {from_date}..{to_date}: {len(runs)} runs "
                  f"({', '.join(r['state'] for r in runs)}) in {time.monotonic() - t0:.0f} s wall, "
                  f"{_stack_cpu(stack) - cpu0:.0f} CPU-s (stack), load {load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}",
                  flush=True)
        log_locked = sum(p.read_text(errors="replace").count(LOCKED) for p in (data_dir / "logs").rglob("*.log"))
        log_locked += sum(p.read_text(errors="replace").count(LOCKED)
                          for p in (data_dir / "airflow" / "logs").rglob("*") if p.is_file())
    finally:
        stack.stop()
    print(f"\n{args.backfills} backfills x {args.weeks} weeks in {time.monotonic() - started:.0f} s: "
          f"'{LOCKED}' {locked} times in the CLI output, {log_locked} times in the logs; "
          f"{bad_tasks} task(s) not successful on try 1")
    return 1 if locked or log_locked or bad_tasks else 0


if __name__ == "__main__":
    sys.exit(main())
