"""DAG task ``publish_segments``: labels with hysteresis, behind the quality gate (:mod:`include.migration.publish`)."""

from __future__ import annotations

import json
import logging
from typing import Any

from include.runtime.errors import QualityGateError
from include.runtime.run import RunInfo
from include.runtime.warehouse import Warehouse, redact_url

log = logging.getLogger(__name__)


def publish_segments(run: RunInfo) -> dict[str, Any]:
    """Publish labels with hysteresis as ``customer_segments``; this date and every later one are recomputed.

    Reads the labeller's ids, names and gate (``segment_labels``, ``label_runs``: run
    ``label_segments`` first). A date whose quality gate failed carries the previous labels
    forward; the log and the MLflow tag ``gate_failure`` say what failed (stability or validity)
    and why. With nothing to carry forward the task fails (``QualityGateError``).
    """
    from include.migration.publish import publish_from
    from include.runtime import tracking

    mlflow_run = run.mlflow_run()
    with Warehouse(run.warehouse_url) as wh:
        try:
            results = publish_from(wh, run.as_of_date, run.settings.hysteresis_runs)
        except QualityGateError as exc:
            tracking.client().set_tag(mlflow_run, "gate_failure", str(exc)[:5000])
            raise
    this = results[0]
    if not this.gate_passed:
        log.warning("not publishing new labels for %s: %s", this.as_of_date, this.gate_reason)
        tracking.client().set_tag(mlflow_run, "gate_failure", this.gate_reason[:5000])
    summary = {"as_of_date": this.as_of_date.isoformat(), "published": this.gate_passed,
               "published_customers": len(this.labels), "raw_moves": this.raw_moves,
               "held_back_share": round(this.held_back_share, 4),
               "republished": [r.as_of_date.isoformat() for r in results[1:]],
               "mlflow_run_id": mlflow_run, "warehouse_url": redact_url(run.warehouse_url)}
    tracking.log_metrics(mlflow_run, {"published_customers": float(len(this.labels)),
                                      "published": float(this.gate_passed),
                                      "hysteresis_raw_moves": float(this.raw_moves),
                                      "hysteresis_held_back_share": summary["held_back_share"]})
    tracking.client().set_tag(mlflow_run, "published", str(this.gate_passed).lower())
    for (seg, name), n in this.labels.groupby(["segment_id", "segment_name"]).size().items():
        log.info("published segment %d %-20s %8d customers", seg, name, n)
    if summary["republished"]:
        log.info("republished later dates so the hysteresis fold stays in order: %s", ", ".join(summary["republished"]))
    log.info("hysteresis (%d runs): %d raw moves, %.1f%% held back", run.settings.hysteresis_runs, this.raw_moves,
             100 * this.held_back_share)
    log.info("results: %s", json.dumps(summary))
    return summary
