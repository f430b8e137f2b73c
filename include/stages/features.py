"""DAG task ``build_features``: customer features in the warehouse as of the date."""

from __future__ import annotations

import logging
from typing import Any

from include.runtime.run import RunInfo
from include.runtime.warehouse import Warehouse

log = logging.getLogger(__name__)


def build_features(run: RunInfo) -> dict[str, Any]:
    """Compute ``customer_features`` for the as-of date in the warehouse."""
    from include.features.build import build_customer_features
    from include.runtime import tracking

    with Warehouse(run.warehouse_url) as wh:
        metrics = build_customer_features(wh, run.as_of_date, run.settings.support_cost_by_channel)
    tracking.log_metrics(run.mlflow_run(), metrics)
    return {"customers": int(metrics["features_customers"])}

