"""DAG task ``compare_schemes``: legacy labels, behavioural segments and the RFM map side by side."""

from __future__ import annotations

import logging
import re
from typing import Any

from include.runtime.errors import WarehouseError
from include.runtime.run import RunInfo
from include.runtime.warehouse import Warehouse, named_sql

log = logging.getLogger(__name__)

SQL = named_sql("comparison.sql")
#: Tables this stage replaces for its as-of date, all in one transaction.
TABLES = ("customer_legacy_labels", "legacy_crosstab", "scheme_variance", "legacy_label_summary")


def compare_schemes(run: RunInfo) -> dict[str, Any]:
    """Resolve legacy labels to customers; write the crosstab and the variance explained per scheme.

    Without legacy labels (``raw_legacy_labels`` absent, or nothing of it staged for the
    date) the stage says so and compares the behavioural segments with the RFM map only.
    """
    import pandas as pd

    from include.comparison.schemes import compare_schemes as compare
    from include.comparison.schemes import verdict
    from include.runtime import tracking

    d = {"as_of_date": run.as_of_date}
    with Warehouse(run.warehouse_url) as wh:
        customers = wh.query_df(SQL["customer_values"], d)
        if customers.empty:
            raise WarehouseError(f"customer_economics has no rows for as_of_date={run.as_of_date}: "
                                 "build_economics must run before compare_schemes")
        legacy = wh.query_df(SQL["resolved_labels"], d)
        staged = wh.query_df(SQL["records_staged"], d)
        quarantined = wh.query_df(SQL["legacy_quarantined"], d)
        result = compare(customers, legacy)
        summary = result.summary.merge(staged, on="scheme", how="left")
        summary["records_staged"] = summary["records_staged"].fillna(0).astype("int64")
        with wh.begin() as conn:
            wh.replace_partition("customer_legacy_labels", legacy.assign(as_of_date=run.as_of_date), d, conn=conn)
            wh.replace_partition("legacy_crosstab", result.crosstab.assign(as_of_date=run.as_of_date), d, conn=conn)
            wh.replace_partition("scheme_variance", result.variance.assign(as_of_date=run.as_of_date), d, conn=conn)
            wh.replace_partition("legacy_label_summary", summary.assign(as_of_date=run.as_of_date), d, conn=conn)

    if legacy.empty:
        log.info("no legacy labels for %s (raw_legacy_labels absent, empty or all quarantined): "
                 "comparing the behavioural segments with the RFM map only", run.as_of_date)
    for row in summary.itertuples():
        log.info("legacy scheme %r: %d labels, %d of %d customers labelled (%.1f%%), %d with conflicting "
                 "records, %d label rows staged", row.scheme, row.labels, row.customers_labelled,
                 row.customers_total, 100 * row.coverage, row.conflicts, row.records_staged)
    for reason, rows in zip(quarantined["reason"], quarantined["rows"], strict=True):
        log.info("raw_legacy_labels: %d rows quarantined as %s", rows, reason)
    for measure, why in result.measures_unavailable.items():
        log.info("variance of %s not compared: %s", measure, why)
    sentence = verdict(result.variance)
    if sentence:
        log.info("%s", sentence)

    mlflow_run = run.mlflow_run()
    metrics: dict[str, float] = {}
    for r in result.variance.itertuples():
        name = r.scheme_kind if r.scheme_kind != "legacy" else f"legacy.{_metric_name(r.scheme)}"
        measure = r.measure if r.basis == "amount" else f"{r.measure}_rank"
        metrics[f"{name}.{measure}.eta_squared"] = r.eta_squared
        metrics[f"{name}.{measure}.omega_squared"] = r.omega_squared
    for r in summary.itertuples():
        metrics[f"legacy.{_metric_name(r.scheme)}.coverage"] = r.coverage
        metrics[f"legacy.{_metric_name(r.scheme)}.conflicts"] = r.conflicts
    tracking.log_metrics(mlflow_run, metrics, prefix="comparison.")
    tracking.log_table(mlflow_run, result.variance, "comparison/variance_explained.csv")
    if len(result.crosstab):
        tracking.log_table(mlflow_run, result.crosstab, "comparison/legacy_crosstab.csv")
        tracking.log_table(mlflow_run, summary, "comparison/legacy_label_summary.csv")
    variance = {f"{r.scheme}/{r.measure}/{r.basis}": round(float(r.omega_squared), 4)
                for r in result.variance.itertuples() if not pd.isna(r.omega_squared)}
    return {"as_of_date": run.as_of_date.isoformat(), "legacy_labels": not legacy.empty,
            "schemes": sorted(result.summary["scheme"]), "skipped": result.skipped,
            "omega_squared": variance, "verdict": sentence}


def _metric_name(scheme: str) -> str:
    # MLflow metric names allow letters, digits, _ - . / and spaces; a scheme name comes from the data.
    return re.sub(r"[^A-Za-z0-9_\-]+", "_", scheme).strip("_") or "scheme"
