"""DAG task ``build_economics``: segment economics, profit concentration and priorities."""

from __future__ import annotations

import logging
from typing import Any

from include.runtime.currency import run_currency
from include.runtime.run import RunInfo
from include.runtime.settings import assumed
from include.runtime.warehouse import Warehouse, named_sql

log = logging.getLogger(__name__)

SQL = named_sql("stage_reads.sql")


def build_economics(run: RunInfo) -> dict[str, Any]:
    """Segment economics, profit concentration and intervention priorities for the as-of date."""
    from include.economics.build import EconomicsSettings
    from include.economics.build import build_economics as build
    from include.runtime import tracking

    with Warehouse(run.warehouse_url) as wh:
        currency_code, currency_symbol = run_currency(wh, run.settings.currency_code, run.settings.currency_symbol)
        settings = EconomicsSettings(gross_margin=run.settings.gross_margin,
                                     gross_margin_assumed=assumed(run.settings, "gross_margin"),
                                     servicing_cost_per_customer=run.settings.servicing_cost_per_customer,
                                     servicing_cost_per_order=run.settings.servicing_cost_per_order,
                                     retention_window_days=run.settings.retention_window_days,
                                     currency_code=currency_code, currency_symbol=currency_symbol)
        figures = build(wh, run.as_of_date, settings, run.settings.playbook_path)
        table = wh.query_df(SQL["segment_economics"], {"as_of_date": run.as_of_date})
    mlflow_run = run.mlflow_run()
    # Unknown figures (None: no cost data) are left out rather than logged as 0; cost_known logs as 1/0.
    tracking.log_metrics(mlflow_run, {k: float(v) for k, v in figures.items() if isinstance(v, int | float)},
                         prefix="economics.")
    tracking.log_params(mlflow_run, {"economics.currency_code": currency_code,
                                     "economics.retention_window_days": settings.retention_window_days})
    tracking.log_table(mlflow_run, table, "economics/segment_economics.csv")
    return figures

