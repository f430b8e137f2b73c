"""DAG tasks ``track_migration`` and ``check_migration``: transitions, Markov view and the outflow alert."""

from __future__ import annotations

import logging
from typing import Any

from include.runtime.errors import MigrationAlert
from include.runtime.run import RunInfo
from include.runtime.warehouse import Warehouse

log = logging.getLogger(__name__)


def track_migration(run: RunInfo) -> dict[str, Any]:
    """Transitions between consecutive published snapshots (this date's and every later pair) and the Markov view."""
    import pandas as pd

    from include.migration.hysteresis import markov_view, run_dates, transitions
    from include.runtime import tracking

    mlflow_run = run.mlflow_run()
    s = run.settings
    with Warehouse(run.warehouse_url) as wh:
        wh.ensure_schema()
        dates = run_dates(wh, "customer_segments")
        if run.as_of_date not in dates:
            log.info("migration: nothing published for %s yet (no earlier labels to carry forward)", run.as_of_date)
            return {"transition_rows": 0, "markov_runs": 0, "recomputed_pairs": 0}
        i = dates.index(run.as_of_date)

        def snapshot(date):
            snap = wh.query_df("SELECT customer_key, segment_id, segment_name FROM customer_segments "
                               "WHERE as_of_date = :d", {"d": date})
            clv = wh.query_df("SELECT customer_key, clv_365d FROM customer_clv WHERE as_of_date = :d", {"d": date})
            names = snap.drop_duplicates("segment_id").set_index("segment_id")["segment_name"].to_dict()
            return snap, names, clv.set_index("customer_key")["clv_365d"] if len(clv) else None

        current = None
        for k in range(max(i, 1), len(dates)):
            before, after = snapshot(dates[k - 1]), snapshot(dates[k])
            frame = transitions(before[0], after[0], before[1], after[1], before[2], after[2])
            frame.insert(0, "to_date", dates[k])
            frame.insert(0, "from_date", dates[k - 1])
            wh.replace_partition("segment_transitions", frame, {"to_date": dates[k]})
            if k == i:
                current = frame
        window = wh.query_df(
            "SELECT * FROM segment_transitions WHERE to_date <= :d AND to_date > :lo ORDER BY to_date",
            {"d": run.as_of_date, "lo": dates[max(0, i - s.markov_window_runs)]}) if i > 0 else pd.DataFrame()
        snap, names, clv = snapshot(run.as_of_date)
    mix = snap.groupby("segment_id").size()
    mean_clv = (snap.assign(clv=snap["customer_key"].map(clv) if clv is not None else 0.0)
                .groupby("segment_id")["clv"].mean())
    frames = [g for _, g in window.groupby("to_date")] if len(window) else []
    view = markov_view(frames, mix, mean_clv, s.markov_periods)
    metrics = {"markov.current_value": view["current_value"], "markov.projected_value": view["projected_value"],
               "markov.window_runs": float(len(frames))}
    for seg in view["matrix"].index:
        metrics[f"markov.steady_state.segment_{seg}"] = float(view["steady_state"][seg])
        metrics[f"markov.projected_share.segment_{seg}"] = float(view["projected_mix"][seg] / max(mix.sum(), 1))
        metrics[f"markov.stay_probability.segment_{seg}"] = float(view["matrix"].loc[seg, seg])
    tracking.log_metrics(mlflow_run, metrics)
    matrix = view["matrix"].copy()
    matrix.index = [f"{i} {names.get(i, '')}" for i in matrix.index]
    matrix.columns = [f"{c} {names.get(c, '')}" for c in matrix.columns]
    tracking.log_table(mlflow_run, matrix.reset_index(names="from_segment"), "migration/markov_matrix.csv")
    if current is not None:
        tracking.log_table(mlflow_run, current, "migration/transitions.csv")
    log.info("migration: %d transition rows for %s; Markov over %d runs: value %.0f -> %.0f in %d periods",
             0 if current is None else len(current), run.as_of_date, len(frames), view["current_value"],
             view["projected_value"], s.markov_periods)
    return {"transition_rows": 0 if current is None else len(current), "markov_runs": len(frames),
            "recomputed_pairs": max(0, len(dates) - max(i, 1))}


def check_migration(run: RunInfo) -> dict[str, Any]:
    """Fail when more than ``alert_top_outflow`` of the top segment left it in this period.

    The top segment is the published segment with the highest mean 365-day revenue.
    This is the DAG's last task: it marks the MLflow run finished before any alert.
    """
    from include.migration.hysteresis import top_segment_outflow
    from include.runtime import tracking

    mlflow_run = run.mlflow_run()
    with Warehouse(run.warehouse_url) as wh:
        frame = wh.query_df("SELECT * FROM segment_transitions WHERE to_date = :d", {"d": run.as_of_date})
        # The top segment of the earlier snapshot: customers can only leave a segment that had them.
        top = wh.query_df(
            "SELECT p.segment_id, p.segment_name FROM segment_profiles p JOIN (SELECT DISTINCT segment_id "
            "FROM customer_segments WHERE as_of_date = (SELECT MAX(from_date) FROM segment_transitions "
            "WHERE to_date = :d)) c ON c.segment_id = p.segment_id "
            "WHERE p.as_of_date = (SELECT MAX(as_of_date) FROM segmentation_runs WHERE as_of_date <= :d AND published) "
            "ORDER BY p.monetary DESC", {"d": run.as_of_date}) if len(frame) else frame
    tracking.finish_run(mlflow_run)
    if frame.empty or top.empty:
        log.info("migration check: no previous snapshot to compare with")
        return {"checked": False}
    top_id, top_name = int(top["segment_id"].iloc[0]), top["segment_name"].iloc[0]
    outflow = top_segment_outflow(frame, top_id)
    tracking.log_metrics(mlflow_run, {"migration.top_segment_outflow": outflow})
    log.info("migration check: %.1f%% of segment %d '%s' left it (alert above %.1f%%)", 100 * outflow, top_id,
             top_name, 100 * run.settings.alert_top_outflow)
    if outflow > run.settings.alert_top_outflow:
        raise MigrationAlert(f"{outflow:.1%} of the top segment {top_id} '{top_name}' left it between "
                             f"{str(frame['from_date'].iloc[0])[:10]} and {run.as_of_date} "
                             f"(threshold alert_top_outflow={run.settings.alert_top_outflow:.0%})")
    return {"checked": True, "top_segment": top_name, "outflow": round(outflow, 4)}

