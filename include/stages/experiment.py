"""DAG task ``run_experiment``: holdout flags, the policy record and treated-vs-holdout lift per segment."""

from __future__ import annotations

import logging
from typing import Any

from include.runtime.run import RunInfo
from include.runtime.warehouse import Warehouse

log = logging.getLogger(__name__)


def run_experiment(run: RunInfo) -> dict[str, Any]:
    """Record the run's holdout and policy, measure lift per segment, log it to MLflow.

    A backfill recomputes every later published date; the later dates whose
    record it changed are named in a warning, in the MLflow tag
    ``later_dates_changed`` and in the result (``render_report`` renders the
    reports of later dates again).
    """
    from include.experiment.build import ExperimentSettings
    from include.experiment.build import run_experiment as run_stage
    from include.runtime import tracking

    s = run.settings
    settings = ExperimentSettings(experiment_name=s.experiment_name, holdout_share=s.holdout_share,
                                  retention_window_days=s.retention_window_days, gross_margin=s.gross_margin,
                                  servicing_cost_per_customer=s.servicing_cost_per_customer,
                                  servicing_cost_per_order=s.servicing_cost_per_order)
    with Warehouse(run.warehouse_url) as wh:
        result = run_stage(wh, run.as_of_date, settings, s.playbook_path)
    figures, lift, changed = result["figures"], result["lift"], result["later_dates_changed"]
    mlflow_run = run.mlflow_run()
    if changed:
        dates = ", ".join(d.isoformat() for d in changed)
        log.warning("backfilling %s changed the experiment record (published labels, actions, arms, policy start "
                    "or lift) of %d later date(s): %s; render_report renders their reports again",
                    run.as_of_date, len(changed), dates)
        tracking.client().set_tag(mlflow_run, "later_dates_changed", dates[:5000])
    metrics = {k: float(v) for k, v in figures.items() if isinstance(v, int | float)}
    for row in lift.itertuples():
        # Segment ids (not names: names can change) keep the metric keys stable run over run.
        base = f"segment_{row.segment_id}.{row.metric}"
        for field in ("lift", "ci_low", "ci_high", "simultaneous_low", "simultaneous_high", "family_size", "mde",
                      "n_treated", "n_holdout"):
            value = getattr(row, field)
            if value == value:  # NaN (no interval) is left out rather than logged
                metrics[f"{base}.{field}"] = float(value)
    tracking.log_metrics(mlflow_run, metrics, prefix="lift.")
    tracking.log_params(mlflow_run, {"experiment.name": settings.experiment_name,
                                     "experiment.holdout_share": settings.holdout_share,
                                     "experiment.policy_hash": figures["policy_hash"],
                                     "experiment.policy_start": figures["policy_start"]})
    tracking.log_table(mlflow_run, lift, "experiment/segment_lift.csv")
    return {**figures, "later_dates_changed": {d.isoformat(): what for d, what in changed.items()}}
