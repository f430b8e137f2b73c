"""Benchmark the ``fit_clv`` stage as the DAG runs it, in a fresh process: wall, CPU, peak memory, phases.

    .venv/bin/python benchmarks/bench_clv.py --source data/warehouse.duckdb --as-of 2026-11-14
    .venv/bin/python benchmarks/bench_clv.py --source /work/bench-data/run-scheduler-480000/warehouse.duckdb \\
        --as-of 2026-11-07 --compare-full-fit
    .venv/bin/python benchmarks/bench_clv.py --customers 480000      # simulated orders, no source needed

Copies what ``fit_clv`` reads (the date's ``stg_orders`` and ``identity_map``, and
the demo's ``truth_*`` tables when present) from ``--source`` (opened read-only)
into a scratch DuckDB file, or simulates a buy-till-you-die order history
(``--customers``), creates an MLflow store with the DAG run's parent run (as
the earlier tasks of a run do), then runs :func:`include.stages.clv.fit_clv` in
a child process, and prints the child's wall time, CPU
seconds (``/usr/bin/time``-style, children included), peak RSS and the stage's
own phase timings (``clv.seconds.*``: summary SQL, fits, scoring, write, MLflow).
``--compare-full-fit`` also fits the chosen model on every customer and
reports how far the sample fit's CLV is from it (totals and per customer).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

AS_OF = dt.date(2026, 11, 14)


def simulate_orders(n: int, seed: int = 0) -> pd.DataFrame:
    """A BG/NBD order history of ``n`` customers over three years before ``AS_OF`` (about 4 orders each)."""
    rng = np.random.default_rng(seed)
    start = np.datetime64(AS_OF) - np.timedelta64(3 * 365, "D")
    birth = rng.integers(0, 3 * 365 - 1, n)
    lam = rng.gamma(0.8, 1 / 25.0, n)  # purchases per day
    p = rng.beta(0.8, 3.0, n)
    span = 3 * 365 - birth
    counts = np.minimum(rng.poisson(lam * span), rng.geometric(p))  # BG/NBD: dropout after a repeat purchase
    rep = np.repeat(np.arange(n), counts)
    days = birth[rep] + (rng.random(len(rep)) * span[rep]).astype(int)
    cust = np.concatenate([np.arange(n), rep])
    day = np.concatenate([birth, days])
    spend = rng.gamma(6.0, rng.gamma(3.0, 10.0, n)[cust] / 6.0)
    ts = start + day.astype("timedelta64[D]")
    return pd.DataFrame({"customer": cust, "order_ts": ts.astype("datetime64[us]"), "amount": spend.round(2)})


def prepare(path: Path, source: str | None, as_of: dt.date, customers: int) -> None:
    """Write the stage's inputs for ``as_of`` into a new warehouse at ``path``."""
    import duckdb

    from include.runtime.warehouse import Warehouse

    with Warehouse(f"duckdb:///{path}") as wh:
        wh.ensure_schema()
        if source is None:
            orders = simulate_orders(customers)
            keys = np.array([f"K{i:07d}" for i in range(customers)])
            stg = pd.DataFrame({"as_of_date": as_of, "order_id": np.arange(len(orders)).astype(str),
                                "source_system": "web", "source_id": keys[orders["customer"]],
                                "order_ts": orders["order_ts"], "amount": orders["amount"], "discount": 0.0,
                                "returned_amount": 0.0, "channel": "web", "category": "x"})
            ids = pd.DataFrame({"as_of_date": as_of, "source_system": "web", "source_id": keys, "customer_key": keys,
                                "cluster_confidence": 1.0, "match_method": "bench", "key_since": as_of})
            wh.replace_partition("stg_orders", stg, {"as_of_date": as_of})
            wh.replace_partition("identity_map", ids, {"as_of_date": as_of})
            return
    con = duckdb.connect(str(path))
    con.execute(f"ATTACH '{source}' AS src (READ_ONLY)")
    for table in ("stg_orders", "identity_map"):
        columns = ", ".join(r[0] for r in con.execute(f"DESCRIBE {table}").fetchall())
        con.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM src.{table} WHERE as_of_date = ?", [as_of])
    present = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'src'").fetchall()}
    for table in ("truth_future_orders", "truth_identity"):
        if table in present:
            con.execute(f"CREATE TABLE {table} AS SELECT * FROM src.{table}")
    con.execute("DETACH src")
    con.close()


def run_stage(scratch: Path, as_of: dt.date, settings: dict) -> None:
    """Child process: run ``fit_clv`` and print its result and MLflow metrics as JSON."""
    from include.runtime import tracking
    from include.runtime.run import RunInfo
    from include.runtime.settings import PipelineSettings
    from include.stages.clv import fit_clv

    run = RunInfo("bench_clv", f"bench-{as_of}", as_of, PipelineSettings(**settings),
                  f"duckdb:///{scratch / 'warehouse.duckdb'}")
    started = time.perf_counter()
    result = fit_clv(run)
    stage_wall = time.perf_counter() - started
    metrics = tracking.client().get_run(run.mlflow_run()).data.metrics
    print("RESULT " + json.dumps({"result": result, "stage_wall": stage_wall, "metrics": metrics}))


def compare_full_fit(scratch: Path, as_of: dt.date, settings: dict) -> None:
    """Fit the chosen model and Gamma-Gamma on every customer; compare the stage's (sample) scores with theirs."""
    from include.clv.models import ClvSettings, GammaGammaSpend, score_customers
    from include.clv.registry import PURCHASE_MODEL_CLASSES
    from include.runtime.settings import PipelineSettings
    from include.runtime.warehouse import Warehouse

    s = PipelineSettings(**settings)
    clv_settings = ClvSettings(unit_days=s.clv_unit_days, holdout_days=s.clv_holdout_days,
                               gross_margin=s.gross_margin, annual_discount_rate=s.annual_discount_rate)
    with Warehouse(f"duckdb:///{scratch / 'warehouse.duckdb'}") as wh:
        full = wh.query_df("SELECT * FROM clv_summary WHERE as_of_date = :d AND period = 'full' ORDER BY customer_key",
                           {"d": as_of})
        staged = wh.query_df("SELECT customer_key, clv_model, clv_365d, expected_purchases_365d FROM customer_clv "
                             "WHERE as_of_date = :d ORDER BY customer_key", {"d": as_of})
    model_cls = next(c for c in PURCHASE_MODEL_CLASSES.values() if c.LABEL == staged["clv_model"].iloc[0])
    started = time.process_time()
    everyone = score_customers(model_cls.fit(full), GammaGammaSpend.fit(full)[0], full, clv_settings)
    cpu = time.process_time() - started
    merged = staged.merge(everyone, on="customer_key", suffixes=("_sample", "_all"))
    worth = merged["clv_365d_all"] >= 0.01 * merged["clv_365d_all"].mean()
    rel = (merged["clv_365d_sample"] / merged["clv_365d_all"] - 1).abs()[worth]
    print(f"full fit ({len(full):,} customers, {cpu:.1f} CPU-s incl. scoring) vs the stage's sample fit: "
          f"total CLV {100 * (merged['clv_365d_sample'].sum() / merged['clv_365d_all'].sum() - 1):+.2f}%, "
          f"total purchases {100 * (merged['expected_purchases_365d_sample'].sum() / merged['expected_purchases_365d_all'].sum() - 1):+.2f}%, "
          f"per-customer CLV error median {100 * rel.median():.2f}%, p90 {100 * rel.quantile(0.9):.2f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", help="warehouse file to copy the date's orders and identity map from (read-only)")
    parser.add_argument("--as-of", type=dt.date.fromisoformat, default=AS_OF)
    parser.add_argument("--customers", type=int, default=480_000, help="simulated customers when no --source")
    parser.add_argument("--sample-size", type=int, default=None, help="clv_fit_sample_size (default: the setting's)")
    parser.add_argument("--compare-full-fit", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    settings = {} if args.sample_size is None else {"clv_fit_sample_size": args.sample_size}
    if args.child:
        run_stage(Path(args.child), args.as_of, settings)
        return
    with tempfile.TemporaryDirectory(prefix="bench-clv-") as tmp:
        scratch = Path(tmp)
        prepare(scratch / "warehouse.duckdb", args.source, args.as_of, args.customers)
        env = {**os.environ, "SEGMENTATION_DATA_DIR": str(scratch), "MLFLOW_TRACKING_URI": f"sqlite:///{scratch}/mlflow.db",
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        # The DAG run's MLflow store and parent run exist before fit_clv runs (earlier tasks made them).
        os.environ.update(env)
        from include.runtime import tracking

        tracking.parent_run_id("bench_clv", f"bench-{args.as_of}", args.as_of)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        child = subprocess.run([sys.executable, __file__, "--child", str(scratch), "--as-of", str(args.as_of),
                                *(["--sample-size", str(args.sample_size)] if args.sample_size else [])],
                               env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
        if child.returncode or not lines:
            sys.exit(f"fit_clv failed:\n{child.stderr[-4000:]}")
        out = json.loads(lines[-1][len("RESULT "):])
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        m = out["metrics"]
        phases = ", ".join(f"{k.removeprefix('clv.seconds.')} {v:.2f}" for k, v in m.items() if k.startswith("clv.seconds."))
        load = os.getloadavg()[0]
        print(f"fit_clv, {int(m['clv.clv_customers']):,} customers (fitted on {int(m.get('clv.fit_customers', 0)):,}), "
              f"{out['result']['clv_model']}: stage {out['stage_wall']:.1f} s wall; fresh process {wall:.1f} s wall, "
              f"{cpu:.1f} CPU-s, peak RSS {after.ru_maxrss / 1024 ** 2:.2f} GB; load average {load:.1f}")
        print(f"phases (wall s): {phases}")
        print(f"holdout aggregate error {m['clv.holdout_aggregate_error_pct']:+.2f}%, MAE {m['clv.holdout_mae']:.3f}, "
              f"corr {m['clv.holdout_correlation']:.3f}; CLV 365d total {m['clv.clv_365d_total']:,.0f}")
        if args.compare_full_fit:
            compare_full_fit(scratch, args.as_of, settings)


if __name__ == "__main__":
    main()
