"""Benchmark ``push_outbox`` at scale: change detection, outbox insert, state and audit writes.

    .venv/bin/python benchmarks/bench_push.py --customers 480000

Builds published labels (``customer_segments``, ``customer_clv``,
``customer_priority``) for two weekly dates in a scratch DuckDB file, then
times ``PushSegmentsOperator(target="outbox").execute()`` the way the DAG
task runs it (its ``batch_size=1000`` is ignored by the outbox):

1. first push: every customer is new;
2. re-run of the same date: nothing changed, nothing written;
3. next week, ``--moved`` of the customers changed segment and ``--merged`` of them
   were merged into another customer (their key vanished: identity maps of both
   weeks are written, and each vanished key's record gets its survivor's labels);
4. re-run of the first (older) date: the newest labels are already delivered.

Each step reports its wall time, the CPU time of the process (all DuckDB
threads; on a shared machine the wall time includes waiting for a core) and
the rows the CRM tables hold after it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

WEEK1, WEEK2 = dt.date(2026, 11, 7), dt.date(2026, 11, 14)
NAMES = ["High-value core", "Loyal potential", "New promising", "At risk", "Hibernating", "Discount seekers"]


def publish(url: str, date: dt.date, segment: np.ndarray, clv: np.ndarray, keep: np.ndarray | None = None,
            owner: np.ndarray | None = None) -> None:
    """Labels of the customers ``keep`` (default all) and, with ``owner``, ``identity_map``: record i -> key owner[i]."""
    from include.runtime.warehouse import Warehouse

    keep = np.ones(len(segment), dtype=bool) if keep is None else keep
    keys = np.array([f"{i:016x}" for i in range(len(segment))], dtype=object)
    if owner is not None:
        with Warehouse(url) as wh:
            wh.ensure_schema()
            wh.replace_partition("identity_map", pd.DataFrame({
                "as_of_date": date, "source_system": "web", "source_id": [f"W{i}" for i in range(len(segment))],
                "customer_key": keys[owner], "cluster_confidence": 1.0, "match_method": "bench"}),
                {"as_of_date": date})
    keys, segment, clv = keys[keep].tolist(), segment[keep], clv[keep]
    names = np.array(NAMES)[segment - 1]
    with Warehouse(url) as wh:
        wh.ensure_schema()
        wh.replace_partition("customer_segments", pd.DataFrame({
            "as_of_date": date, "customer_key": keys, "segment_id": segment, "segment_name": names,
            "model_run_id": "bench"}), {"as_of_date": date})
        wh.replace_partition("customer_clv", pd.DataFrame({
            "as_of_date": date, "customer_key": keys, "p_alive": 0.7, "clv_365d": clv}), {"as_of_date": date})
        wh.replace_partition("customer_priority", pd.DataFrame({
            "as_of_date": date, "customer_key": keys, "segment_id": segment, "segment_name": names,
            "priority": np.where(segment <= 2, "high", "medium"), "priority_rank": 2,
            "action": [f"Journey for {n}" for n in names]}), {"as_of_date": date})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=480_000)
    parser.add_argument("--moved", type=float, default=0.05, help="share of customers changing segment in week 2")
    parser.add_argument("--merged", type=float, default=0.0,
                        help="share of customers merged into another customer in week 2 (their key vanishes)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="bench-push-") as tmp:
        os.environ.setdefault("AIRFLOW_HOME", str(Path(tmp) / "airflow"))
        from include.runtime.warehouse import Warehouse
        from segmentation_providers.operators.push_segments import PushSegmentsOperator

        url = f"duckdb:///{Path(tmp) / 'bench.duckdb'}"
        rng = np.random.default_rng(0)
        n = args.customers
        segment = rng.integers(1, len(NAMES) + 1, n)
        clv = rng.gamma(1.5, 200.0, n)
        start = time.perf_counter()
        publish(url, WEEK1, segment, clv, owner=np.arange(n) if args.merged else None)
        moved = rng.random(n) < args.moved
        segment2 = segment.copy()
        segment2[moved] = segment2[moved] % len(NAMES) + 1
        merged = (rng.random(n) < args.merged) & (np.arange(n) > 0)
        owner = np.where(merged, np.arange(n) - 1, np.arange(n))  # a merged customer's record joins the one before
        while merged[owner].any():  # survivors are customers that were not merged themselves
            owner = np.where(merged[owner], owner - 1, owner)
        with_identity = owner if args.merged else None
        print(f"{n:,} customers published for two dates in {time.perf_counter() - start:.1f} s "
              f"({moved.sum():,} move in week 2, {merged.sum():,} merged into another customer)")

        def push(date: dt.date, label: str, run: str) -> None:
            op = PushSegmentsOperator(task_id="push_outbox", target="outbox", as_of_date=date.isoformat(),
                                      batch_size=1000, warehouse_url=url)
            t0, c0 = time.perf_counter(), time.process_time()
            summary = op.execute({"run_id": run})
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
            with Warehouse(url) as wh:
                rows = {t: wh.scalar(f"SELECT COUNT(*) FROM {t}") for t in ("crm_outbox", "crm_push_state",
                                                                             "crm_push_log")}
            print(f"{label:30s} {elapsed:6.2f} s wall {cpu:6.2f} s CPU  sent {summary['changed']:>8,} (labels of {summary.get('label_date', date)})"
                  f"  outbox {rows['crm_outbox']:>9,}  state {rows['crm_push_state']:>8,}"
                  f"  log {rows['crm_push_log']:>3}  "
                  + ", ".join(f"{summary.get(c, 0):,} {c}" for c in ("new", "moved", "renamed", "updated", "merged")))

        push(WEEK1, "1. first push, all new", "r1")
        push(WEEK1, "2. re-run, nothing changed", "r2")
        publish(url, WEEK2, segment2, clv, keep=~merged, owner=with_identity)
        push(WEEK2, "3. next week, changed only", "r3")
        push(WEEK1, "4. re-run of the older week", "r4")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:,.0f} MB")


if __name__ == "__main__":
    main()
