"""Benchmark ``compare_schemes`` at scale: label resolution in SQL, variance explained, one transaction of writes.

    .venv/bin/python benchmarks/bench_comparison.py --customers 480000

Builds, in a scratch DuckDB file, what the stage reads for one as-of date:
``identity_map`` (1.8 records per customer), ``stg_legacy_labels`` (a ``tier``
scheme on every record with a second, older row on half of them and 5% of
customers whose records disagree; a ``persona`` scheme on each customer's first
record), ``customer_segments``, ``customer_economics`` and ``customer_clv``.
Then runs the stage's work without MLflow (the SQL read, the resolution, the
statistics on amounts and ranks, the four replaced partitions) and reports
wall time, the process's CPU time and its peak memory for each step.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

AS_OF = dt.date(2026, 11, 14)


def build(url: str, customers: int, seed: int) -> None:
    from include.runtime.warehouse import Warehouse

    rng = np.random.default_rng(seed)
    keys = np.array([f"c{i:08d}" for i in range(customers)])
    records = np.repeat(np.arange(customers), np.where(rng.random(customers) < 0.8, 2, 1))
    source_id = np.array([f"r{i:09d}" for i in range(len(records))])
    system = rng.choice(["web", "app", "call_centre"], len(records))
    ids = pd.DataFrame({"as_of_date": AS_OF, "source_system": system, "source_id": source_id,
                        "customer_key": keys[records]})
    spend = rng.lognormal(4, 1.2, customers)
    tier = np.where(spend > np.quantile(spend, 0.9), "Gold", np.where(spend > np.quantile(spend, 0.65), "Silver",
                                                                      "Bronze"))
    rec_tier = tier[records].astype(object)
    flip = rng.random(len(records)) < 0.05
    rec_tier[flip] = rng.choice(["Gold", "Silver", "Bronze"], int(flip.sum()))
    current = pd.DataFrame({"source_system": system, "source_id": source_id, "scheme": "tier", "label": rec_tier,
                            "valid_from": dt.date(2026, 1, 1)})
    older = current.sample(frac=0.5, random_state=seed).assign(valid_from=dt.date(2025, 1, 1), label="Bronze")
    first = ~pd.Series(records).duplicated().to_numpy()
    persona = pd.DataFrame({"source_system": system[first], "source_id": source_id[first], "scheme": "persona",
                            "label": rng.choice([f"Persona {i}" for i in range(9)], int(first.sum())),
                            "valid_from": None})
    labels = pd.concat([current, older, persona], ignore_index=True).assign(as_of_date=AS_OF)
    segment = np.clip((np.log(spend) - 1).astype(int), 0, 6)
    segs = pd.DataFrame({"as_of_date": AS_OF, "customer_key": keys, "segment_id": segment,
                         "segment_name": [f"Segment {s}" for s in segment], "model_run_id": "bench",
                         "rfm_segment": rng.choice(["Champions", "Loyal", "At risk", "Lost"], customers)})
    econ = segs[["as_of_date", "customer_key", "segment_id", "segment_name"]].assign(
        profit=0.35 * spend - rng.gamma(2, 5, customers))
    clv = pd.DataFrame({"as_of_date": AS_OF, "customer_key": keys, "clv_365d": spend * rng.lognormal(0, 0.5, customers)})
    with Warehouse(url) as wh:
        wh.ensure_schema()
        with wh.begin() as conn:
            for table, frame in (("identity_map", ids), ("stg_legacy_labels", labels), ("customer_segments", segs),
                                 ("customer_economics", econ), ("customer_clv", clv)):
                wh.replace_partition(table, frame, {"as_of_date": AS_OF}, conn=conn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=480_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    from include.comparison.schemes import compare_schemes, verdict
    from include.runtime.warehouse import Warehouse, named_sql

    sql = named_sql("comparison.sql")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"duckdb:///{Path(tmp) / 'bench.duckdb'}"
        build(url, args.customers, args.seed)
        d = {"as_of_date": AS_OF}
        steps = {}

        def timed(name, fn):
            wall, cpu = time.perf_counter(), time.process_time()
            out = fn()
            steps[name] = (time.perf_counter() - wall, time.process_time() - cpu)
            return out

        with Warehouse(url) as wh:
            customers = timed("read customer values", lambda: wh.query_df(sql["customer_values"], d))
            legacy = timed("resolve labels (SQL)", lambda: wh.query_df(sql["resolved_labels"], d))
            result = timed("variance + crosstab", lambda: compare_schemes(customers, legacy))

            def write():
                with wh.begin() as conn:
                    wh.replace_partition("customer_legacy_labels", legacy.assign(as_of_date=AS_OF), d, conn=conn)
                    wh.replace_partition("legacy_crosstab", result.crosstab.assign(as_of_date=AS_OF), d, conn=conn)
                    wh.replace_partition("scheme_variance", result.variance.assign(as_of_date=AS_OF), d, conn=conn)
                    wh.replace_partition("legacy_label_summary", result.summary.assign(as_of_date=AS_OF), d,
                                         conn=conn)

            timed("write (one transaction)", write)
    print(f"{args.customers:,} customers, {len(legacy):,} resolved labels, "
          f"{int(legacy['conflict'].sum()):,} conflicts")
    for name, (wall, cpu) in steps.items():
        print(f"{name:28s} {wall:7.2f} s wall {cpu:7.2f} s CPU")
    print(f"{'total':28s} {sum(w for w, _ in steps.values()):7.2f} s wall "
          f"{sum(c for _, c in steps.values()):7.2f} s CPU")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2:.2f} GB (includes building the data)")
    print(verdict(result.variance))


if __name__ == "__main__":
    main()
