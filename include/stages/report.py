"""DAG task ``render_report``: the self-contained HTML report."""

from __future__ import annotations

import logging
from typing import Any

from include.runtime.currency import run_currency
from include.runtime.run import RunInfo
from include.runtime.warehouse import Warehouse

log = logging.getLogger(__name__)


def render_report(run: RunInfo) -> dict[str, Any]:
    """Write the self-contained HTML segment report, log it to MLflow and log its path."""
    from include.report.html import write_report
    from include.runtime import tracking
    from include.runtime.paths import reports_dir

    mlflow_run = run.mlflow_run()
    with Warehouse(run.warehouse_url) as wh:
        currency_code, currency_symbol = run_currency(wh, run.settings.currency_code, run.settings.currency_symbol)
        path = write_report(wh, run.as_of_date, reports_dir(), currency=currency_symbol, currency_code=currency_code)
    tracking.client().log_artifact(mlflow_run, str(path), "report")
    log.info("segment report: %s (also in MLflow run %s under report/)", path, mlflow_run)
    return {"report": str(path)}

