"""DAG task ``render_report``: the self-contained HTML report, and again those of later dates a backfill changed."""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from include.runtime.currency import run_currency
from include.runtime.run import RunInfo
from include.runtime.warehouse import Warehouse

log = logging.getLogger(__name__)


def render_report(run: RunInfo) -> dict[str, Any]:
    """Write the self-contained HTML segment report, log it to MLflow and log its path.

    Publishing a date republishes every later one, and the stages after it
    recompute them (transitions, economics, the experiment record), so a
    backfill can change what a later date's report says. Every later published
    date's report is therefore rendered again; the ones whose content changed
    (or whose file is missing here) are written over the old files, logged to
    this run's MLflow run under ``report/later_dates/`` and named in a warning,
    so no report contradicts the warehouse. A weekly run has no later dates.
    """
    from include.report.html import write_report
    from include.runtime import tracking
    from include.runtime.paths import reports_dir

    mlflow_run = run.mlflow_run()
    folder = reports_dir()
    with Warehouse(run.warehouse_url) as wh:
        currency_code, currency_symbol = run_currency(wh, run.settings.currency_code, run.settings.currency_symbol)
        path = write_report(wh, run.as_of_date, folder, currency=currency_symbol, currency_code=currency_code)
        later = [pd.Timestamp(d).date() for d in wh.query_df(
            "SELECT DISTINCT as_of_date FROM customer_segments WHERE as_of_date > :d ORDER BY as_of_date",
            {"d": run.as_of_date})["as_of_date"]]
        changed = _render_changed(later, folder, lambda date, into: write_report(
            wh, date, into, currency=currency_symbol, currency_code=currency_code))
    tracking.client().log_artifact(mlflow_run, str(path), "report")
    log.info("segment report: %s (also in MLflow run %s under report/)", path, mlflow_run)
    for later_path in changed.values():
        tracking.client().log_artifact(mlflow_run, str(later_path), "report/later_dates")
    if changed:
        log.warning("backfilling %s changed the reports of %d later date(s), written again: %s", run.as_of_date,
                    len(changed), ", ".join(str(p) for p in changed.values()))
    elif later:
        log.info("the reports of the %d later date(s) are unchanged by this run", len(later))
    return {"report": str(path), "later_reports_changed": [d.isoformat() for d in changed]}


def _render_changed(dates: list[dt.date], folder: Path, render) -> dict[dt.date, Path]:
    """Render each date's report aside; replace the file in ``folder`` where it differs. Returns those paths."""
    changed = {}
    with tempfile.TemporaryDirectory(prefix="later-reports-") as scratch:
        for date in dates:
            fresh = render(date, Path(scratch))
            target = folder / fresh.name
            page = fresh.read_bytes()
            if not target.exists() or target.read_bytes() != page:
                tmp = target.with_name(f".{target.name}.tmp")
                tmp.write_bytes(page)
                tmp.replace(target)  # a reader never sees half a report
                changed[date] = target
    return changed
