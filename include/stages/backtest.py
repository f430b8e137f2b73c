"""DAG task ``backtest_claims``: the run's published logic as of D - H, checked against what customers did next."""

from __future__ import annotations

import logging
from typing import Any

from include.runtime.run import RunInfo
from include.runtime.warehouse import Warehouse

log = logging.getLogger(__name__)


def backtest_claims(run: RunInfo) -> dict[str, Any]:
    """Write ``claims_backtest`` (and ``backtest_features``) for the date; log them to MLflow.

    H is ``clv_holdout_days``; k, algorithm and seed are this run's (``segmentation_runs``, so run
    ``segment_customers`` first). A failed claim is logged as a warning and in the MLflow tag
    ``claims_backtest_failed``; the labeller withholds it (``label_segments``).
    """
    from include.backtest.run import BacktestSettings, backtest_metrics
    from include.backtest.run import backtest_claims as run_backtest
    from include.runtime import tracking
    from include.runtime.errors import WarehouseError

    s = run.settings
    with Warehouse(run.warehouse_url) as wh:
        fit = wh.query_df("SELECT k, algorithm FROM segmentation_runs WHERE as_of_date = :d", {"d": run.as_of_date})
        if fit.empty:
            raise WarehouseError(f"segmentation_runs has no row for as_of_date={run.as_of_date}; "
                                 "run segment_customers first")
        settings = BacktestSettings(horizon_days=s.clv_holdout_days, k=int(fit["k"].iloc[0]),
                                    algorithm=str(fit["algorithm"].iloc[0]), seed=s.seed, n_init=s.n_init,
                                    silhouette_sample=s.silhouette_sample, playbook_path=s.playbook_path)
        out = run_backtest(wh, run.as_of_date, settings)
    mlflow_run = run.mlflow_run()
    tracking.log_metrics(mlflow_run, {**backtest_metrics(out.claims),
                                      **{f"backtest.cpu_seconds.{k}": v for k, v in out.seconds.items()}})
    tracking.log_params(mlflow_run, {"backtest.date": out.backtest_date.isoformat(),
                                     "backtest.horizon_days": settings.horizon_days})
    tracking.log_table(mlflow_run, out.claims, "backtest/claims_backtest.csv")
    failed = out.claims[out.claims["verdict"] == "failed"]
    if len(failed):
        tracking.client().set_tag(mlflow_run, "claims_backtest_failed", "; ".join(
            f"{r.claim}{' (' + r.segment_name + ')' if isinstance(r.segment_name, str) else ''}: {r.detail}"
            for r in failed.itertuples())[:5000])
    return {"backtest_date": out.backtest_date.isoformat(), "customers": out.customers,
            "held": int((out.claims["verdict"] == "held").sum()), "failed": sorted(set(failed["claim"])),
            "not_checked": int((out.claims["verdict"] == "not checked").sum())}
