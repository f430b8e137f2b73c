"""DAG task ``publish_segments``: labels with hysteresis, behind the quality gate."""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from include.runtime.run import RunInfo
from include.runtime.warehouse import Warehouse

log = logging.getLogger(__name__)


def publish_segments(run: RunInfo) -> dict[str, Any]:
    """Publish labels with hysteresis as ``customer_segments`` (raw label, published label, RFM map).

    Published labels are a fold over the raw labels in as-of order
    (:mod:`include.migration`), so this date and every later one are
    recomputed. A date whose quality gate failed carries the previous published
    labels forward, and the log and MLflow say which segment failed and why.
    """
    import pandas as pd

    from include.migration.hysteresis import apply_hysteresis, run_dates
    from include.runtime import tracking

    mlflow_run = run.mlflow_run()
    n_runs = run.settings.hysteresis_runs
    summary: dict[str, Any] = {}
    with Warehouse(run.warehouse_url) as wh:
        wh.ensure_schema()
        dates = run_dates(wh)
        if run.as_of_date not in dates:
            raise ValueError(f"segmentation_runs has no row for as_of_date={run.as_of_date}; run segmentation first")
        start = dates.index(run.as_of_date)
        previous = _published(wh, dates[start - 1]) if start > 0 else None
        for date in dates[start:]:
            d = {"as_of_date": date}
            status = wh.query_df("SELECT gate_passed, gate_reason, model_run_id FROM segmentation_runs "
                                 "WHERE as_of_date = :as_of_date", d).iloc[0]
            raw = wh.query_df("SELECT customer_key, segment_id AS raw_segment_id FROM segment_assignments "
                              "WHERE as_of_date = :as_of_date", d)
            rfm = wh.query_df("SELECT customer_key, rfm_r, rfm_f, rfm_m, rfm_segment FROM customer_rfm "
                              "WHERE as_of_date = :as_of_date", d)
            names = wh.query_df("SELECT segment_id, segment_name FROM segment_profiles WHERE as_of_date = :as_of_date",
                                d).set_index("segment_id")["segment_name"].to_dict()
            gate_passed = bool(status["gate_passed"])
            if gate_passed:
                step = apply_hysteresis(raw, previous, n_runs)
                published, model_run_id = step.published, status["model_run_id"]
            else:
                if date == run.as_of_date:
                    log.warning("not publishing new labels for %s: %s", date, status["gate_reason"])
                    tracking.client().set_tag(mlflow_run, "gate_failure", str(status["gate_reason"])[:5000])
                step = None
                # Carry the previous labels forward; its RFM columns are replaced by this date's.
                carried = ["raw_segment_id", "rfm_r", "rfm_f", "rfm_m", "rfm_segment", "as_of_date",
                           "segment_name", "model_run_id"]
                published = (previous.drop(columns=carried, errors="ignore") if previous is not None
                             else pd.DataFrame(columns=["customer_key", "segment_id", "pending_segment_id",
                                                        "pending_runs"]))
                published = published.merge(raw, on="customer_key", how="left")
                model_run_id = previous["model_run_id"].iloc[0] if previous is not None and len(previous) else None
            old_names = ({} if previous is None else
                         previous.drop_duplicates("segment_id").set_index("segment_id")["segment_name"].to_dict())
            published = published.assign(
                as_of_date=date, model_run_id=model_run_id,
                segment_name=[names.get(i, old_names.get(i)) for i in published["segment_id"]],
            ).merge(rfm, on="customer_key", how="left")
            cols = ["as_of_date", "customer_key", "segment_id", "segment_name", "model_run_id", "rfm_r", "rfm_f",
                    "rfm_m", "rfm_segment", "raw_segment_id", "pending_segment_id", "pending_runs"]
            published = published[cols]
            wh.replace_partition("customer_segments", published, d)
            wh.run_script("UPDATE segmentation_runs SET published = :p WHERE as_of_date = :as_of_date",
                          {**d, "p": gate_passed})
            if date == run.as_of_date:
                held = step.held_back / step.raw_moves if step and step.raw_moves else 0.0
                summary = {"as_of_date": date.isoformat(), "published": gate_passed,
                           "published_customers": len(published), "raw_moves": step.raw_moves if step else 0,
                           "held_back_share": round(held, 4)}
                sizes = published.groupby(["segment_id", "segment_name"]).size()
            previous = published
        recomputed = [x.isoformat() for x in dates[start + 1:]]
    tracking.log_metrics(mlflow_run, {"published_customers": float(summary["published_customers"]),
                                      "published": float(summary["published"]),
                                      "hysteresis_raw_moves": float(summary["raw_moves"]),
                                      "hysteresis_held_back_share": summary["held_back_share"]})
    tracking.client().set_tag(mlflow_run, "published", str(summary["published"]).lower())
    for (seg, name), n in sizes.items():
        log.info("published segment %d %-20s %8d customers", seg, name, n)
    if recomputed:
        log.info("republished later dates so the hysteresis fold stays in order: %s", ", ".join(recomputed))
    log.info("hysteresis (%d runs): %d raw moves, %.1f%% held back", n_runs, summary["raw_moves"],
             100 * summary["held_back_share"])
    from include.report.html import report_path
    from include.runtime.paths import reports_dir

    report = report_path(reports_dir(), run.as_of_date)
    summary.update({"mlflow_run_id": mlflow_run, "warehouse_url": _redact(run.warehouse_url),
                    "republished": recomputed, "report": str(report)})
    log.info("results: %s", json.dumps(summary))
    log.info("segment report for this run (written by render_report, also logged to MLflow): %s", report)
    return summary


def _published(wh: Warehouse, date: dt.date):
    frame = wh.query_df("SELECT customer_key, segment_id, segment_name, model_run_id, raw_segment_id, "
                        "pending_segment_id, pending_runs FROM customer_segments WHERE as_of_date = :d", {"d": date})
    if frame.empty:
        return None
    frame["pending_segment_id"] = frame["pending_segment_id"].astype("Int64")
    return frame


def _redact(url: str) -> str:
    """The URL without its password, for logs."""
    import sqlalchemy as sa

    return sa.engine.make_url(url).render_as_string(hide_password=True)

