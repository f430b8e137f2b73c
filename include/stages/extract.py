"""DAG task ``extract_validate``: raw tables into staging and quarantine."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import pandas as pd

from include.runtime.errors import BadDataError
from include.runtime.run import RunInfo
from include.runtime.warehouse import Warehouse, named_sql

log = logging.getLogger(__name__)

SQL = named_sql("stage_reads.sql")


def extract_validate(run: RunInfo) -> dict[str, Any]:
    """Validate raw tables into staging and quarantine; fail above the bad-row threshold."""
    from include.erasure import remove_erased_rows
    from include.extract.validate import PlausibilityRules, extract_and_validate
    from include.runtime import tracking

    # The warehouse work first: MLflow (imported and opened by RunInfo.prefetch_mlflow_run beside it) after.
    with Warehouse(run.warehouse_url) as wh:
        remove_erased_rows(wh)  # an erased person is never staged again, whatever the raw tables hold
        try:
            reports = extract_and_validate(
                wh, run.as_of_date, max_bad_share=run.settings.max_bad_share,
                retention_runs=run.settings.staging_retention_runs,
                date_order=run.settings.date_order, rules=PlausibilityRules.from_settings(run.settings),
            )
            failed = None
        except BadDataError as exc:
            failed = exc
            reports = None
        d = {"as_of_date": run.as_of_date}
        quarantine = wh.query_df(SQL["quarantine_counts"], d)
        extract_log = wh.query_df(SQL["extract_log"], d)
        field_issues = wh.query_df(SQL["field_issue_counts"], d)
        flags = wh.query_df(SQL["extract_flag_counts"], d)
        returns = wh.query_df(SQL["return_attribution"], d)
    mlflow_run = run.mlflow_run()
    settings = dataclasses.asdict(run.settings)
    tracking.log_params(mlflow_run, {k: json.dumps(v) if isinstance(v, dict) else v for k, v in settings.items()})
    metrics = {}
    for row in extract_log.itertuples(index=False):
        metrics[f"rows_staged.{row.source_table}"] = row.rows_staged
        metrics[f"rows_quarantined.{row.source_table}"] = row.rows_quarantined
        metrics[f"fields_nulled.{row.source_table}"] = row.fields_nulled
        metrics[f"rows_flagged.{row.source_table}"] = row.rows_flagged
    for row in quarantine.itertuples(index=False):
        metrics[f"quarantine.{row.source_table}.{row.reason}"] = row.rows
    for row in field_issues.itertuples(index=False):
        metrics[f"field_issues.{row.source_table}.{row.column_name}.{row.reason}"] = row.rows
    for row in flags.itertuples(index=False):
        metrics[f"flags.{row.source_table}.{row.column_name}.{row.rule}"] = row.rows
    for name, value in (returns.iloc[0].items() if len(returns) else ()):
        if name != "as_of_date" and not pd.isna(value):  # an empty date gives NA shares, not 0
            metrics[f"returns.{name}"] = float(value)
    tracking.log_metrics(mlflow_run, metrics)
    tracking.log_table(mlflow_run, quarantine, "extract/quarantine_counts.csv")
    tracking.log_table(mlflow_run, field_issues, "extract/field_issue_counts.csv")
    tracking.log_table(mlflow_run, flags, "extract/extract_flag_counts.csv")
    if failed is not None:
        raise failed
    return {"as_of_date": run.as_of_date.isoformat(), "mlflow_run_id": mlflow_run,
            "quarantined": int(quarantine["rows"].sum()) if len(quarantine) else 0,
            "fields_nulled": int(field_issues["rows"].sum()) if len(field_issues) else 0,
            "tables": {r.table: r.rows_staged for r in reports}}

