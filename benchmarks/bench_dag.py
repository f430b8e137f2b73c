"""Benchmark the whole DAG for two consecutive weeks, the way operators run it.

    .venv/bin/python benchmarks/bench_dag.py --persons 480000                  # the scheduler (default)
    .venv/bin/python benchmarks/bench_dag.py --persons 5000 --mode dags-test   # one process, one task at a time

Generates the demo warehouse once per persons/seed (``<data-dir>/raw-<persons>-s<seed>.duckdb``,
reused by later calls), copies it into a fresh data folder, then runs
``customer_segmentation`` for the as-of date ``--as-of`` and for the week after:

- ``--mode scheduler``: ``scripts/ui.sh start api-server scheduler dag-processor``
  (LocalExecutor, ``--parallelism`` task processes, metadata in the data folder's PostgreSQL),
  runs triggered through the REST API;
- ``--mode dags-test``: ``airflow dags test`` (what ``scripts/demo.sh`` does).

The second week reuses the models (the identity model always unless retrained;
CLV with ``clv_use_champion``) and pushes only changed labels. For each run it
prints every task's wall time and peak memory (resident set of the task's process
tree sampled every 0.25 s; under ``dags test`` the one process's peak while the task ran),
its CPU seconds (user + system of the task's process tree, its threads included: on a
shared machine a steadier figure than wall time), the load average when the run ended,
the run's wall time and the peak of the resident memory summed over all the Airflow
processes (api-server, scheduler, dag-processor, workers: pages they share are counted
once per process, so the sum overstates the machine's use).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.airflow_stack import AirflowStack  # noqa: E402

DAG_ID = "customer_segmentation"
_WORKER_TITLE = re.compile(r"airflow worker -- ([0-9a-f-]{36})$")


class MemorySampler(threading.Thread):
    """Samples the resident memory of a set of processes every ``interval`` seconds.

    Keeps, per Airflow task-instance id, the peak of the task's process tree (LocalExecutor
    workers are titled ``airflow worker -- <ti id>`` while they run a task), and a time
    series of the total of every process under ``roots`` (for ``dags test``, one process).
    """

    def __init__(self, roots, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.roots = roots  # a callable returning the root processes
        self.interval = interval
        self.per_ti: dict[str, int] = {}
        self.per_ti_cpu: dict[str, float] = {}  # CPU seconds (user + system) of the task's process tree
        self.series: list[tuple[float, int]] = []
        self.cpu_series: list[tuple[float, float]] = []  # CPU seconds of everything under ``roots``
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            total = 0
            cpu_total = 0.0
            for root in self.roots():
                try:
                    tree = [root, *root.children(recursive=True)]
                except psutil.NoSuchProcess:
                    continue
                for proc in tree:
                    try:
                        rss = proc.memory_info().rss
                        total += rss
                        cpu_total += _cpu_seconds(proc)
                        match = _WORKER_TITLE.match(" ".join(proc.cmdline()).strip())
                        if match:
                            ti = match.group(1).replace("-", "")
                            children = proc.children(recursive=True)
                            tree_rss = rss + sum(c.memory_info().rss for c in children)
                            self.per_ti[ti] = max(self.per_ti.get(ti, 0), tree_rss)
                            tree_cpu = _cpu_seconds(proc) + sum(_cpu_seconds(c) for c in children)
                            self.per_ti_cpu[ti] = max(self.per_ti_cpu.get(ti, 0.0), tree_cpu)
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        continue
            now = time.time()
            self.series.append((now, total))
            self.cpu_series.append((now, cpu_total))
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def peak_between(self, start: float, end: float) -> int:
        return max((rss for t, rss in self.series if start <= t <= end), default=0)

    def peak(self) -> int:
        return max((rss for _, rss in self.series), default=0)

    def cpu_between(self, start: float, end: float) -> float:
        """CPU seconds used under ``roots`` from ``start`` to ``end`` (one process: ``dags test``)."""
        inside = [cpu for t, cpu in self.cpu_series if start <= t <= end]
        before = [cpu for t, cpu in self.cpu_series if t < start]
        return (max(inside) - (before[-1] if before else min(inside))) if inside else 0.0


def _cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU seconds of one process (its threads included, exited children not)."""
    try:
        times = proc.cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0
    return times.user + times.system


def raw_warehouse(data_dir: Path, persons: int, seed: int) -> Path:
    """The generated demo warehouse for ``persons``/``seed``, generated on first use."""
    path = data_dir / f"raw-{persons}-s{seed}.duckdb"
    if not path.exists():
        print(f"generating {persons:,} persons into {path} ...", flush=True)
        started = time.perf_counter()
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        subprocess.run([sys.executable, "-m", "include.demo.generate", "--customers", str(persons), "--seed",
                        str(seed), "--warehouse-url", f"duckdb:///{partial}", "--quiet"], check=True, cwd=ROOT)
        partial.rename(path)
        print(f"generated in {time.perf_counter() - started:.0f} s", flush=True)
    return path


def run_rows(metadata_url: str, run_id: str) -> tuple[dict, list[dict]]:
    """The DAG run and its task instances, read from the metadata database (PostgreSQL or SQLite)."""
    import sqlalchemy as sa

    engine = sa.create_engine(metadata_url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as con:
            run = dict(con.execute(sa.text("SELECT run_id, state, start_date, end_date FROM dag_run "
                                           "WHERE dag_id = :d AND run_id = :r"), {"d": DAG_ID, "r": run_id})
                       .mappings().one())
            tis = [dict(r) for r in con.execute(sa.text(
                "SELECT id, task_id, state, try_number, start_date, end_date FROM task_instance "
                "WHERE dag_id = :d AND run_id = :r ORDER BY start_date"), {"d": DAG_ID, "r": run_id}).mappings()]
    finally:
        engine.dispose()
    return run, tis


def _epoch(value: str | dt.datetime | None) -> float | None:
    if not value:
        return None
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
    return (moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)).timestamp()


def report(label: str, metadata_url: str, run_id: str, sampler: MemorySampler, mode: str) -> dict:
    run, tis = run_rows(metadata_url, run_id)
    run_start = _epoch(run["start_date"])
    rows = []
    for ti in tis:
        start, end = _epoch(ti["start_date"]), _epoch(ti["end_date"])
        seconds = (end - start) if start and end else None
        if mode == "scheduler":
            peak = sampler.per_ti.get(str(ti["id"]).replace("-", ""), 0)
            cpu = sampler.per_ti_cpu.get(str(ti["id"]).replace("-", ""), 0.0)
        else:
            peak = sampler.peak_between(start, end) if start and end else 0
            cpu = sampler.cpu_between(start, end) if start and end else 0.0
        rows.append({"task": ti["task_id"], "state": ti["state"], "try": ti["try_number"],
                     "seconds": seconds, "cpu_s": cpu, "peak_mb": peak / 2**20})
    # From the first task's start to the last task's end: ``dags test`` stamps its run's
    # start_date with the logical date, so the run's own timestamps do not measure it.
    starts = [_epoch(ti["start_date"]) for ti in tis if ti["start_date"]]
    ends = [_epoch(ti["end_date"]) for ti in tis if ti["end_date"]]
    if mode == "scheduler" and run_start:
        starts.append(run_start)
    wall = max(ends) - min(starts) if starts and ends else None
    stack_peak = sampler.peak_between(min(starts), max(ends)) / 2**20 if wall else 0
    print(f"\n== {label}: run {run_id} {run['state']}, wall {wall or float('nan'):.0f} s, "
          f"peak RSS summed over all Airflow processes {stack_peak:,.0f} MB (shared pages counted per process)")
    load = psutil.getloadavg()
    print(f"load average now (1/5/15 min): {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on "
          f"{psutil.cpu_count()} cores")
    print(f"{'task':22s} {'state':10s} {'try':>3s} {'seconds':>8s} {'CPU s':>8s} {'peak MB':>8s}")
    for row in sorted(rows, key=lambda r: -(r["seconds"] or 0)):
        print(f"{row['task']:22s} {row['state'] or '-':10s} {row['try']:>3d} "
              f"{row['seconds'] or float('nan'):>8.1f} {row['cpu_s']:>8.1f} {row['peak_mb']:>8,.0f}")
    return {"label": label, "run_id": run_id, "state": run["state"], "wall_s": wall,
            "stack_peak_mb": stack_peak, "load_average": load, "tasks": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persons", type=int, default=480_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--mode", choices=["scheduler", "dags-test"], default="scheduler")
    parser.add_argument("--as-of", type=dt.date.fromisoformat, default=dt.date(2026, 11, 7),
                        help="as-of date of the first week (the second is 7 days later)")
    parser.add_argument("--parallelism", type=int, default=2, help="LocalExecutor task processes (scheduler)")
    parser.add_argument("--conf", type=json.loads, default={}, help="run conf (JSON) for both weeks")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/bench-dag"),
                        help="holds the generated warehouses and one data folder per mode")
    parser.add_argument("--weeks", type=int, choices=[1, 2], default=2,
                        help="1: the first week only (a quicker check of the first run)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    args.data_dir.mkdir(parents=True, exist_ok=True)
    raw = raw_warehouse(args.data_dir, args.persons, args.seed)
    run_dir = args.data_dir / f"run-{args.mode}-{args.persons}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(exist_ok=True)  # a stack stopping late can leave files behind rmtree
    (run_dir / "warehouse.duckdb.wal").unlink(missing_ok=True)
    shutil.copy(raw, run_dir / "warehouse.duckdb")
    airflow_db = run_dir / "airflow" / "airflow.db"  # dags-test mode's metadata (SQLite)
    weeks = [("week 1", {**args.conf, "as_of_date": args.as_of.isoformat()}),
             ("week 2 (model reuse)", {**args.conf, "as_of_date": (args.as_of + dt.timedelta(days=7)).isoformat(),
                                       "clv_use_champion": True})][:args.weeks]
    stack = AirflowStack(run_dir, parallelism=args.parallelism,
                         env={"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False"})
    results = []
    started = time.perf_counter()
    if args.mode == "scheduler":
        stack.start()
        sampler = MemorySampler(stack.processes)
        sampler.start()
        try:
            print(f"stack up in {time.perf_counter() - started:.0f} s", flush=True)
            stack.wait_for_dag(DAG_ID)
            stack.unpause(DAG_ID)
            metadata_url = stack.metadata_url()  # the stack's PostgreSQL
            for label, conf in weeks:
                run_id = stack.trigger(DAG_ID, conf)
                stack.wait_for_run(DAG_ID, run_id, timeout=6 * 3600)
                results.append(report(label, metadata_url, run_id, sampler, args.mode))
        finally:
            sampler.stop()
            stack.stop()
    else:
        out = stack.airflow("db", "migrate")
        if out.returncode:
            sys.exit(f"airflow db migrate failed:\n{out.stderr[-3000:]}")
        for i, (label, conf) in enumerate(weeks):
            logical = dt.datetime.combine(dt.date.fromisoformat(conf["as_of_date"]) + dt.timedelta(days=1),
                                          dt.time(), dt.UTC)
            script = 'source "$0" && exec airflow "$@"'
            proc = subprocess.Popen(["bash", "-c", script, str(ROOT / "scripts" / "env.sh"), "dags", "test", DAG_ID,
                                     logical.isoformat(), "-c", json.dumps(conf)], env=stack.env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            root = psutil.Process(proc.pid)
            sampler = MemorySampler(lambda root=root: [root])
            sampler.start()
            log_text, _ = proc.communicate()
            sampler.stop()
            (run_dir / f"dags-test-week{i + 1}.log").write_text(log_text)
            if proc.returncode:
                print(log_text[-4000:])
                sys.exit(f"airflow dags test failed for {label}")
            con = sqlite3.connect(airflow_db)
            run_id = con.execute("SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1",
                                 (DAG_ID,)).fetchone()[0]
            con.close()
            results.append(report(label, f"sqlite:///{airflow_db}", run_id, sampler, args.mode))
    total = time.perf_counter() - started
    print(f"\n{args.mode}, {args.persons:,} persons: both weeks {sum(r['wall_s'] or 0 for r in results):.0f} s "
          f"of run wall time; {total:.0f} s including start-up")
    if args.out:
        args.out.write_text(json.dumps({"mode": args.mode, "persons": args.persons, "total_s": total,
                                        "runs": results}, indent=1, default=str))


if __name__ == "__main__":
    main()
