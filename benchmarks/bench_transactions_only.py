"""Run a transactions-only shop through the stages and print its segments, playbook and timings.

    .venv/bin/python benchmarks/bench_transactions_only.py --customers 30000 --out /tmp/shop

Issue #14's shape: one identity record per customer, 18 months of orders in US
dollars, nothing else. Runs extract -> identity (exact) -> features -> segments
-> CLV -> backtest -> labels -> cross-check -> publish -> migration -> economics -> report for two
weekly dates and prints, per date, each segment's name, size, standing and
playbook treatment, the features found empty, and the wall time of each stage.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STAGES = ("extract_validate", "resolve_identity", "build_features", "segment_customers", "fit_clv", "backtest_claims",
          "label_segments", "crosscheck_clv", "publish_segments", "track_migration", "build_economics", "render_report")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=30_000)
    parser.add_argument("--out", required=True, help="folder for the warehouse, MLflow store and report")
    parser.add_argument("--end-date", type=dt.date.fromisoformat, default=dt.date(2026, 11, 14))
    parser.add_argument("--boot", type=int, default=10, help="bootstrap refits for the stability gate")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SEGMENTATION_DATA_DIR", str(out / "data"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    from include.demo.transactions_only import CURRENCY_CODE, CURRENCY_SYMBOL, generate_transactions_only
    from include.runtime.run import RunInfo
    from include.runtime.settings import PipelineSettings
    from include.runtime.warehouse import Warehouse
    from include.stages import stage

    url = f"duckdb:///{out / 'shop.duckdb'}"
    tables = generate_transactions_only(args.customers, end_date=args.end_date)
    with Warehouse(url) as wh:
        for name in ("raw_identity_records", "raw_orders"):
            wh.replace_table(name, tables[name])
    print(f"{args.customers:,} customers, {len(tables['raw_orders']):,} orders")
    settings = PipelineSettings(identity_method="exact", n_bootstrap=args.boot, currency_code=CURRENCY_CODE,
                                currency_symbol=CURRENCY_SYMBOL)
    for date in (args.end_date - dt.timedelta(days=7), args.end_date):
        run = RunInfo("bench_transactions_only", f"bench-{date}", date, settings, url)
        times = {}
        for name in STAGES:
            start = time.perf_counter()
            stage(name)(run)
            times[name] = time.perf_counter() - start
        with Warehouse(url) as wh:
            d = {"d": date}
            profiles = wh.query_df("SELECT l.segment_id, MIN(l.segment_name) AS segment_name, SUM(p.customers) AS "
                                   "customers, SUM(p.customer_share) AS customer_share, MIN(l.revenue_per_customer) "
                                   "AS monetary, SUM(p.recency_days * p.customers) / SUM(p.customers) AS recency_days, "
                                   "MIN(l.value_standing) AS value_standing, MIN(l.standing) AS standing "
                                   "FROM segment_labels l JOIN segment_profiles p ON p.as_of_date = l.as_of_date "
                                   "AND p.fit_segment = l.fit_segment WHERE l.as_of_date = :d GROUP BY l.segment_id "
                                   "ORDER BY l.segment_id", d)
            runs = wh.query_df("SELECT k, gate_passed, features_unavailable FROM segmentation_runs "
                               "WHERE as_of_date = :d", d).iloc[0]
            treated = wh.query_df("SELECT segment_name, value_tier, action, priority, COUNT(*) AS n "
                                  "FROM customer_priority WHERE as_of_date = :d GROUP BY ALL ORDER BY 1, 4", d)
            withheld = json.loads(wh.query_df("SELECT claims_withheld FROM label_runs WHERE as_of_date = :d",
                                              d)["claims_withheld"].iloc[0])
        print(f"\n== {date}: k={runs['k']}, gate passed {runs['gate_passed']}, features not available: "
              f"{', '.join(json.loads(runs['features_unavailable']))}")
        for r in profiles.itertuples():
            st = json.loads(r.standing)
            print(f"  {r.segment_id:>3} {r.segment_name:45s} {r.customers:>7,d} ({r.customer_share:5.1%}) "
                  f"revenue/12m ${r.monetary:8,.0f} recency {r.recency_days:5.0f} d  value {r.value_standing:4s} "
                  f"recency {st['recency']}, {st['frequency']}")
        for claim, why in withheld.items():
            print(f"  claim '{claim}' {why}")
        for r in treated.itertuples():
            print(f"    {r.segment_name:45s} {r.value_tier:8s} {r.priority:8s} {r.n:>7,d}  {r.action}")
        print("  stage times: " + ", ".join(f"{k} {v:.0f}s" for k, v in times.items()))


if __name__ == "__main__":
    main()
