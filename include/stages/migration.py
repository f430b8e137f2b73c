"""DAG tasks ``track_migration`` and ``check_migration`` (:mod:`include.migration.track`)."""

from __future__ import annotations

import logging
from typing import Any

from include.runtime.errors import MigrationAlert
from include.runtime.run import RunInfo
from include.runtime.warehouse import Warehouse

log = logging.getLogger(__name__)


def track_migration(run: RunInfo) -> dict[str, Any]:
    """Transitions between consecutive published snapshots (this date's and every later pair) and the Markov view."""
    from include.migration.track import track
    from include.runtime import tracking

    s = run.settings
    with Warehouse(run.warehouse_url) as wh:
        migration = track(wh, run.as_of_date, s.markov_window_runs, s.markov_periods)
    if migration is None:
        log.info("migration: nothing published for %s yet (no earlier labels to carry forward)", run.as_of_date)
        return {"transition_rows": 0, "markov_runs": 0, "recomputed_pairs": 0}
    mlflow_run = run.mlflow_run()
    tracking.log_metrics(mlflow_run, migration.metrics())
    tracking.log_table(mlflow_run, migration.named_matrix(), "migration/markov_matrix.csv")
    rows = 0 if migration.transitions is None else len(migration.transitions)
    if migration.transitions is not None:
        tracking.log_table(mlflow_run, migration.transitions, "migration/transitions.csv")
    log.info("migration: %d transition rows for %s; Markov over %d runs: value %.0f -> %.0f in %d periods",
             rows, run.as_of_date, migration.window_runs, migration.view["current_value"],
             migration.view["projected_value"], s.markov_periods)
    return {"transition_rows": rows, "markov_runs": migration.window_runs,
            "recomputed_pairs": migration.recomputed_pairs}


def check_migration(run: RunInfo) -> dict[str, Any]:
    """Fail when more than ``alert_top_outflow`` of the top segment left it in this period (labels stay written)."""
    from include.migration.track import top_outflow
    from include.runtime import tracking

    threshold = run.settings.alert_top_outflow
    with Warehouse(run.warehouse_url) as wh:
        outflow = top_outflow(wh, run.as_of_date)
    if outflow is None:
        log.info("migration check: no previous snapshot to compare with")
        return {"checked": False}
    tracking.log_metrics(run.mlflow_run(), {"migration.top_segment_outflow": outflow.share})
    log.info("migration check: %.1f%% of segment %d '%s' left it (alert above %.1f%%)", 100 * outflow.share,
             outflow.segment_id, outflow.segment_name, 100 * threshold)
    if outflow.share > threshold:
        raise MigrationAlert(f"{outflow.share:.1%} of the top segment {outflow.segment_id} '{outflow.segment_name}' "
                             f"left it between {outflow.from_date} and {run.as_of_date} "
                             f"(threshold alert_top_outflow={threshold:.0%})")
    return {"checked": True, "top_segment": outflow.segment_name, "outflow": round(outflow.share, 4)}
