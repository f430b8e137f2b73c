"""The DAG's tasks as plain functions: stage + warehouse + MLflow, no Airflow.

Each function takes a :class:`RunInfo` (built from the Airflow task context by
:meth:`RunInfo.from_context`, or by hand in tests and scripts), runs one stage
for the run's as-of date against the warehouse, logs to the DAG run's MLflow
run and returns a small JSON-able summary (which Airflow keeps as XCom).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from include.config import PipelineSettings, default_warehouse_url
from include.warehouse import Warehouse

log = logging.getLogger(__name__)


def resolve_as_of_date(param: str | dt.date | None, data_interval_end: dt.datetime | None,
                       run_after: dt.datetime | None) -> dt.date:
    """The run's as-of date: the ``as_of_date`` param, else the last full day before the run.

    Scheduled and backfill runs use their data interval end; runs with no logical
    date (triggered through the REST API with ``logical_date: null``, or by an
    asset) have no data interval, so their ``run_after`` is used instead.
    """
    if isinstance(param, dt.date):
        return param
    if param:
        try:
            return dt.date.fromisoformat(str(param).strip())
        except ValueError as exc:
            raise ValueError(f"param as_of_date={param!r} is not an ISO date (YYYY-MM-DD)") from exc
    moment = data_interval_end or run_after
    if moment is None:
        raise ValueError("cannot derive the as-of date: no as_of_date param, data interval or run_after")
    return moment.date() - dt.timedelta(days=1)


@dataclass(frozen=True)
class RunInfo:
    """What a task needs to know about its DAG run."""

    dag_id: str
    run_id: str
    as_of_date: dt.date
    settings: PipelineSettings
    warehouse_url: str

    @classmethod
    def from_context(cls, context: Mapping[str, Any], warehouse_url: str | None = None) -> RunInfo:
        """Build from an Airflow task context (read as a plain mapping)."""
        params = dict(context.get("params") or {})
        dag_run = context.get("dag_run")
        as_of = resolve_as_of_date(
            params.get("as_of_date"),
            context.get("data_interval_end"),
            getattr(dag_run, "run_after", None),
        )
        return cls(
            dag_id=context["dag"].dag_id,
            run_id=context["run_id"],
            as_of_date=as_of,
            settings=PipelineSettings.from_params(params),
            warehouse_url=warehouse_url or default_warehouse_url(),
        )

    def mlflow_run(self) -> str:
        from include import tracking

        return tracking.parent_run_id(self.dag_id, self.run_id, self.as_of_date)


def extract_validate(run: RunInfo) -> dict[str, Any]:
    """Validate raw tables into staging and quarantine; fail above the bad-row threshold."""
    from include import tracking
    from include.extract import BadDataError, extract_and_validate

    mlflow_run = run.mlflow_run()
    settings = dataclasses.asdict(run.settings)
    tracking.log_params(mlflow_run, {k: json.dumps(v) if isinstance(v, dict) else v for k, v in settings.items()})
    with Warehouse(run.warehouse_url) as wh:
        try:
            reports = extract_and_validate(
                wh, run.as_of_date, max_bad_share=run.settings.max_bad_share,
                retention_runs=run.settings.staging_retention_runs,
            )
            failed = None
        except BadDataError as exc:
            failed = exc
            reports = None
        quarantine = wh.query_df(
            "SELECT source_table, reason, COUNT(*) AS rows FROM quarantine WHERE as_of_date = :d "
            "GROUP BY source_table, reason ORDER BY source_table, reason", {"d": run.as_of_date})
        extract_log = wh.query_df("SELECT * FROM extract_log WHERE as_of_date = :d ORDER BY source_table",
                                  {"d": run.as_of_date})
    metrics = {}
    for row in extract_log.itertuples(index=False):
        metrics[f"rows_staged.{row.source_table}"] = row.rows_staged
        metrics[f"rows_quarantined.{row.source_table}"] = row.rows_quarantined
    for row in quarantine.itertuples(index=False):
        metrics[f"quarantine.{row.source_table}.{row.reason}"] = row.rows
    tracking.log_metrics(mlflow_run, metrics)
    tracking.log_table(mlflow_run, quarantine, "extract/quarantine_counts.csv")
    if failed is not None:
        tracking.finish_run(mlflow_run, "FAILED")
        raise failed
    return {"as_of_date": run.as_of_date.isoformat(), "mlflow_run_id": mlflow_run,
            "quarantined": int(quarantine["rows"].sum()) if len(quarantine) else 0,
            "tables": {r.table: r.rows_staged for r in reports}}


def resolve_identity(run: RunInfo) -> dict[str, Any]:
    """Build the identity map and golden customer records for the as-of date."""
    from include import tracking
    from include.identity import resolve_identities

    with Warehouse(run.warehouse_url) as wh:
        metrics = resolve_identities(wh, run.as_of_date)
    tracking.log_metrics(run.mlflow_run(), metrics, prefix="identity.")
    return {k: int(v) for k, v in metrics.items()}


def build_features(run: RunInfo) -> dict[str, Any]:
    """Compute ``customer_features`` for the as-of date in the warehouse."""
    from include import tracking
    from include.features import build_customer_features

    with Warehouse(run.warehouse_url) as wh:
        metrics = build_customer_features(wh, run.as_of_date, run.settings.support_cost_by_channel)
    tracking.log_metrics(run.mlflow_run(), metrics)
    return {"customers": int(metrics["features_customers"])}


def segment_customers(run: RunInfo) -> dict[str, Any]:
    """Fit segments on the date's features; write model labels and profiles.

    Every candidate k is a nested MLflow run, so the MLflow UI compares them.
    """
    import pandas as pd

    from include import tracking
    from include.features import load_features
    from include.segmentation import fit_segments, segment_profiles

    mlflow_run = run.mlflow_run()
    s = run.settings
    with Warehouse(run.warehouse_url) as wh:
        features = load_features(wh, run.as_of_date)
        if features.empty:
            raise ValueError(f"customer_features has no rows for as_of_date={run.as_of_date}")
        tracking.log_dataset(mlflow_run, features.drop(columns=["as_of_date"]),
                             name=f"customer_features@{run.as_of_date.isoformat()}",
                             context="segmentation", table="customer_features", as_of_date=run.as_of_date)
        result = fit_segments(features, k_min=s.k_min, k_max=s.k_max, k=s.k, seed=s.seed,
                              silhouette_sample=s.silhouette_sample)
        for row in result.candidates.to_dict("records"):
            child = tracking.child_run(mlflow_run, f"k={int(row['k'])}", {"as_of_date": run.as_of_date.isoformat()})
            tracking.log_params(child, {"k": int(row["k"]), "algorithm": "kmeans", "seed": s.seed})
            tracking.log_metrics(child, {m: v for m, v in row.items() if m != "k"})
            tracking.finish_run(child)
        profiles = segment_profiles(features, result.labels, run.as_of_date)
        profiles["model_run_id"] = mlflow_run
        names = profiles.set_index("segment_id")["segment_name"]
        assignments = pd.DataFrame({
            "as_of_date": run.as_of_date, "customer_key": features["customer_key"],
            "segment_id": result.labels.astype("int64"), "segment_name": names.reindex(result.labels).to_numpy(),
            "model_run_id": mlflow_run,
        })
        wh.replace_partition("segment_assignments", assignments, {"as_of_date": run.as_of_date})
        wh.replace_partition("segment_profiles", profiles, {"as_of_date": run.as_of_date})
        wh.replace_partition("segmentation_runs", pd.DataFrame([{
            "as_of_date": run.as_of_date, "model_run_id": mlflow_run, "algorithm": "kmeans", "k": result.k,
            "silhouette": result.metrics["chosen_silhouette"],
            "davies_bouldin": result.metrics["chosen_davies_bouldin"],
            "customers": len(assignments), "published": False,
        }]), {"as_of_date": run.as_of_date})
    tracking.log_metrics(mlflow_run, result.metrics)
    for row in result.candidates.to_dict("records"):
        tracking.log_metrics(mlflow_run, {f"{m}_by_k": v for m, v in row.items() if m != "k"}, step=int(row["k"]))
    tracking.log_table(mlflow_run, result.candidates, "segmentation/k_candidates.csv")
    tracking.log_table(mlflow_run, profiles, "segmentation/segment_profiles.csv")
    log.info("segmentation: k=%d silhouette=%.3f on %d customers", result.k,
             result.metrics["chosen_silhouette"], len(assignments))
    return {"k": result.k, "customers": len(assignments),
            "segments": profiles[["segment_id", "segment_name", "customers"]].to_dict("records")}


def publish_segments(run: RunInfo) -> dict[str, Any]:
    """Publish the date's model labels as ``customer_segments`` and close the MLflow run."""
    from include import tracking

    mlflow_run = run.mlflow_run()
    params = {"as_of_date": run.as_of_date}
    with Warehouse(run.warehouse_url) as wh:
        n = wh.scalar("SELECT COUNT(*) FROM segment_assignments WHERE as_of_date = :as_of_date", params)
        if not n:
            raise ValueError(f"segment_assignments has no rows for as_of_date={run.as_of_date}; run segmentation first")
        with wh.begin() as conn:
            import sqlalchemy as sa

            conn.execute(sa.text("DELETE FROM customer_segments WHERE as_of_date = :as_of_date"), params)
            conn.execute(sa.text(
                "INSERT INTO customer_segments (as_of_date, customer_key, segment_id, segment_name, model_run_id) "
                "SELECT as_of_date, customer_key, segment_id, segment_name, model_run_id "
                "FROM segment_assignments WHERE as_of_date = :as_of_date"), params)
            conn.execute(sa.text("UPDATE segmentation_runs SET published = TRUE WHERE as_of_date = :as_of_date"), params)
        sizes = wh.query_df(
            "SELECT segment_id, segment_name, COUNT(*) AS customers FROM customer_segments "
            "WHERE as_of_date = :as_of_date GROUP BY segment_id, segment_name ORDER BY segment_id", params)
    tracking.log_metrics(mlflow_run, {"published_customers": float(n)})
    tracking.finish_run(mlflow_run)
    for row in sizes.itertuples(index=False):
        log.info("published segment %d %-20s %8d customers", row.segment_id, row.segment_name, row.customers)
    summary = {"as_of_date": run.as_of_date.isoformat(), "published_customers": int(n),
               "mlflow_run_id": mlflow_run, "warehouse_url": _redact(run.warehouse_url)}
    log.info("results: %s", json.dumps(summary))
    return summary


def _redact(url: str) -> str:
    """The URL without its password, for logs."""
    import sqlalchemy as sa

    return sa.engine.make_url(url).render_as_string(hide_password=True)
