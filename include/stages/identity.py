"""DAG task ``resolve_identity``: identity records into customers (Splink or the exact rule)."""

from __future__ import annotations

import logging
from typing import Any

from include.runtime.run import RunInfo
from include.runtime.warehouse import Warehouse

log = logging.getLogger(__name__)


def resolve_identity(run: RunInfo) -> dict[str, Any]:
    """Link identity records into customers; reuse or train and log the Splink model.

    The model is the one trained for this as-of date (trained on its first
    run, reused by a re-run while it compares the same linkage columns as the
    run has data in), so no date's customers depend on which date ran last. A degraded
    run (Splink untrainable, exact rule used) is logged at WARNING and tagged
    ``identity_degraded`` with the reason; ``identity_runs`` holds the same.
    """
    from include.identity import linkage as identity_splink
    from include.identity.resolve import resolve_identities
    from include.runtime import tracking

    settings = run.settings
    mlflow_run = run.mlflow_run()
    model, source = None, "exact rule"
    if settings.identity_method == "splink" and not settings.identity_retrain:
        found = tracking.identity_model_for(run.as_of_date)
        if found is not None:
            source, model = f"reused from MLflow run {found[0]} (trained for this as-of date)", found[1]
    with Warehouse(run.warehouse_url) as wh:
        wh.ensure_schema()
        out = resolve_identities(wh, run.as_of_date, method=settings.identity_method,
                                 threshold=settings.identity_match_threshold, model=model,
                                 seed=settings.seed, u_max_pairs=settings.identity_u_max_pairs,
                                 phone_country=settings.phone_country)
    refused = f"; {source} not reused: {out.model_refused_reason}" if out.model_refused_reason else ""
    if out.degraded_reason:
        source = f"none: exact rule{refused}"
    metrics = dict(out.result.metrics)
    metrics["model_reused"] = float(model is not None and not out.model_trained and out.model is not None
                                    and out.model_refused_reason is None)
    tags = {"identity_method": settings.identity_method, "identity_linkage_columns": ",".join(out.columns)}
    if out.degraded_reason:
        # Loud on purpose: the run continues on the exact rule, and everyone reading it must know.
        tags["identity_degraded"] = out.degraded_reason[:500]
        log.warning("identity DEGRADED this run: %s", out.degraded_reason)
    if out.model is not None:
        if out.model_trained:
            missing, minor = identity_splink.untrained_levels(out.model)
            if minor:
                log.warning("identity model: rare levels left at Splink defaults: %s", "; ".join(minor))
            f1 = metrics.get("eval.splink.pairwise_f1")
            accepted = not missing and (f1 is None or f1 >= settings.identity_min_f1)
            reason = ("untrained exact-match levels: " + "; ".join(missing) if missing else
                      f"F1 {f1:.4f} vs min {settings.identity_min_f1}" if f1 is not None else "trained")
            model_run = tracking.log_identity_model(mlflow_run, out.model, accepted, run.as_of_date, reason)
            # The column set travels with the model: a later run with other columns retrains.
            tracking.client().set_tag(model_run, "identity_model_columns",
                                      ",".join(identity_splink.model_columns(out.model)))
            source = (f"trained here (MLflow run {model_run}, {'accepted' if accepted else 'NOT accepted'}: "
                      f"{reason}){refused}")
        tracking.log_table(mlflow_run, identity_splink.m_u_table(out.model), "identity/m_u_parameters.csv")
        tracking.client().log_text(mlflow_run, identity_splink.match_weights_chart_html(out.model),
                                   "identity/match_weights_chart.html")
    tags["identity_model_source"] = source[:500]
    for key, value in tags.items():
        tracking.client().set_tag(mlflow_run, key, value)
    if out.evaluation is not None:
        tracking.log_table(mlflow_run, out.evaluation, "identity/evaluation.csv")
        log.info("identity evaluation against generator truth:\n%s", out.evaluation.round(4).to_string(index=False))
    tracking.log_metrics(mlflow_run, metrics, prefix="identity.")
    log.info("identity model: %s", source)
    summary = {k: round(v, 4) for k, v in metrics.items() if not k.startswith("eval.") or k.endswith("f1")}
    summary["model"] = source
    if out.degraded_reason:
        summary["degraded"] = out.degraded_reason
    return summary

