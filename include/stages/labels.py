"""DAG task ``label_segments``: the date's segment ids, names and quality gate (:mod:`include.labels`)."""

from __future__ import annotations

import json
import logging
from typing import Any

from include.runtime.run import RunInfo
from include.runtime.warehouse import Warehouse

log = logging.getLogger(__name__)


def label_segments(run: RunInfo) -> dict[str, Any]:
    """Write ``segment_labels`` and ``label_runs`` for the date (and the stable ids of later dates).

    Run after ``segment_customers``, ``fit_clv`` (its scores are a witness; without them the
    names say CLV was not available) and ``backtest_claims`` (claims it found false are withheld),
    before ``publish_segments``. Withheld claims and a failed gate are logged as warnings and set
    as the MLflow tags ``claims_withheld`` and ``gate_failure``.
    """
    from include.labels.build import label_date
    from include.runtime import tracking

    with Warehouse(run.warehouse_url) as wh:
        out = label_date(wh, run.as_of_date, run.settings.max_match_distance)
    mlflow_run = run.mlflow_run()
    labels = out.labels.drop_duplicates("label_group")
    withheld = json.loads(out.run["claims_withheld"])
    metrics = {"labels": float(len(labels)), "labels.merged_fit_segments": float(len(out.labels) - len(labels)),
               "labels.claims_withheld": float(len(withheld)), "labels.gate_passed": float(out.run["gate_passed"]),
               "labels.validity_passed": float(out.run["validity_passed"]),
               "labels.matched_to_previous": float(labels["match_distance"].notna().sum())}
    for r in labels.itertuples():
        metrics[f"labels.customers.segment_{r.segment_id}"] = float(r.customers)
    tracking.log_metrics(mlflow_run, metrics)
    tracking.log_table(mlflow_run, out.labels, "labels/segment_labels.csv")
    client = tracking.client()
    if withheld:
        client.set_tag(mlflow_run, "claims_withheld", "; ".join(f"{c}: {why}" for c, why in withheld.items())[:5000])
    if out.run["gate_reason"]:
        client.set_tag(mlflow_run, "gate_failure", str(out.run["gate_reason"])[:5000])
    if out.relabelled:
        log.info("stable ids re-folded for later dates: %s", ", ".join(d.isoformat() for d in out.relabelled))
    return {"labels": labels[["segment_id", "segment_name", "customers"]].to_dict("records"),
            "gate_passed": bool(out.run["gate_passed"]), "gate_reason": out.run["gate_reason"],
            "claims_withheld": sorted(withheld), "merged": out.run["merged"],
            "relabelled": [d.isoformat() for d in out.relabelled]}
