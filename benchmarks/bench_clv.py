"""Benchmark the CLV stage at scale: summary SQL + fits + scoring + holdout validation.

    .venv/bin/python benchmarks/bench_clv.py --customers 480000

Simulates a buy-till-you-die order history (BG/NBD process, 3 years, about 4
orders per customer) straight into ``stg_orders`` / ``identity_map`` of a
scratch DuckDB warehouse, then times each step of the CLV stage the way
``include.stages.clv.fit_clv`` runs it. PyTensor's compile cache is used as it is
in production (run twice to see the warm figure).
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

AS_OF = dt.date(2026, 11, 14)


def simulate_orders(n: int, seed: int = 0) -> pd.DataFrame:
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


def main() -> None:
    from include.clv.models import (
        BetaGeoNBD,
        ClvSettings,
        GammaGammaSpend,
        build_clv_summary,
        score_customers,
        validate_holdout,
    )
    from include.runtime.warehouse import Warehouse

    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=480_000)
    args = parser.parse_args()
    orders = simulate_orders(args.customers)
    keys = np.array([f"K{i:07d}" for i in range(args.customers)])
    stg = pd.DataFrame({"as_of_date": AS_OF, "order_id": np.arange(len(orders)).astype(str), "source_system": "web",
                        "source_id": keys[orders["customer"]], "order_ts": orders["order_ts"],
                        "amount": orders["amount"], "discount": 0.0, "returned_amount": 0.0, "channel": "web",
                        "category": "x"})
    ids = pd.DataFrame({"as_of_date": AS_OF, "source_system": "web", "source_id": keys, "customer_key": keys,
                        "cluster_confidence": 1.0, "match_method": "bench"})
    settings = ClvSettings()
    with tempfile.TemporaryDirectory() as tmp, Warehouse(f"duckdb:///{tmp}/bench.duckdb") as wh:
        wh.ensure_schema()
        wh.replace_partition("stg_orders", stg, {"as_of_date": AS_OF})
        wh.replace_partition("identity_map", ids, {"as_of_date": AS_OF})
        t0 = time.perf_counter()
        build_clv_summary(wh, AS_OF, settings)
        full = wh.query_df("SELECT * FROM clv_summary WHERE period = 'full' ORDER BY customer_key")
        calibration = wh.query_df("SELECT * FROM clv_summary WHERE period = 'calibration' ORDER BY customer_key")
        t1 = time.perf_counter()
    bg_cal = BetaGeoNBD.fit(calibration)
    metrics, _ = validate_holdout(bg_cal, calibration, settings.holdout_days / settings.unit_days)
    t2 = time.perf_counter()
    bg = BetaGeoNBD.fit(full)
    t3 = time.perf_counter()
    gg, _ = GammaGammaSpend.fit(full)
    t4 = time.perf_counter()
    scores = score_customers(bg, gg, full, settings)
    t5 = time.perf_counter()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024
    print(f"{args.customers:,} customers, {len(stg):,} orders: summary SQL {t1 - t0:.1f} s; "
          f"calibration fit + holdout {t2 - t1:.1f} s; BG/NBD fit {t3 - t2:.1f} s; Gamma-Gamma fit {t4 - t3:.1f} s; "
          f"scoring {t5 - t4:.1f} s; total {t5 - t0:.1f} s; peak RSS {rss:.2f} GB")
    print(f"holdout aggregate error {metrics['holdout_aggregate_error_pct']:+.2f}%, MAE {metrics['holdout_mae']:.3f}, "
          f"corr {metrics['holdout_correlation']:.3f}; mean CLV 365d {scores['clv_365d'].mean():.2f}")


if __name__ == "__main__":
    main()
