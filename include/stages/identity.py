"""DAG task ``resolve_identity``: identity records into customers (Splink or the exact rule)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from include.runtime.run import RunInfo
from include.runtime.warehouse import Warehouse

log = logging.getLogger(__name__)

#: MLflow tags of a logged identity model: its id (include.identity.incremental.model_id) and training date.
MODEL_ID_TAG, TRAINED_FOR_TAG = "identity_model_id", "identity_model_trained_for"


def _model_by_id(model_id: str) -> tuple[str, dict] | None:
    """The accepted identity model logged with ``model_id``: ``(run_id, model)``, or ``None``."""
    import json

    from include.runtime import tracking

    found = tracking.client().search_runs(
        [tracking.experiment_id()],
        filter_string=f"tags.{MODEL_ID_TAG} = '{model_id}' and tags.identity_model_accepted = 'true'",
        order_by=["attributes.start_time DESC"], max_results=1)
    if not found:
        return None
    run_id = found[0].info.run_id
    text = tracking._mlflow().artifacts.load_text(f"runs:/{run_id}/{tracking.IDENTITY_MODEL_ARTIFACT}")
    return run_id, json.loads(text)


def _choose_model(run: RunInfo, base) -> tuple[dict | None, str, Any]:
    """``(model, where it came from, the date it was trained for)`` for this run, or no model (train one).

    Incremental chains: the model of the run this one builds on (``base``), found
    in MLflow by the id ``identity_runs`` recorded, unless it is older than
    ``identity_model_max_age_days``. Without a base: the model trained for this
    as-of date itself (a re-run). ``identity_retrain`` trains a new one.
    """
    from include.runtime import tracking

    settings = run.settings
    if settings.identity_method != "splink" or settings.identity_retrain:
        return None, "retrain asked for" if settings.identity_retrain else "exact rule", None
    if base is not None and base.model_id:
        age = (run.as_of_date - base.model_trained_for).days if base.model_trained_for else None
        limit = settings.identity_model_max_age_days
        if limit and age is not None and age > limit:
            return None, (f"retrained: the model of the run of {base.as_of_date} was trained for "
                          f"{base.model_trained_for}, {age} days ago (identity_model_max_age_days = {limit})"), None
        found = _model_by_id(base.model_id)
        if found is not None:
            return found[1], (f"reused from the run of {base.as_of_date} (MLflow run {found[0]}, trained for "
                              f"{base.model_trained_for})"), base.model_trained_for
    found = tracking.identity_model_for(run.as_of_date)
    if found is not None:
        tags = tracking.client().get_run(found[0]).data.tags
        trained_for = tags.get(TRAINED_FOR_TAG) or run.as_of_date.isoformat()
        return (found[1], f"reused from MLflow run {found[0]} (trained for this as-of date)",
                dt.date.fromisoformat(trained_for))
    return None, "no model to reuse", None


def resolve_identity(run: RunInfo) -> dict[str, Any]:
    """Link identity records into customers; reuse or train and log the Splink model.

    A weekly run builds on the previous Splink run: with its model and column
    set unchanged it links only new and changed records
    (:mod:`include.identity.incremental`), otherwise everyone. The model is the
    one the previous run used (found by the id ``identity_runs`` recorded), a
    re-run's own, or a newly trained one; ``identity_retrain`` and
    ``identity_model_max_age_days`` force a new one. The truth-free quality
    estimate (:mod:`include.identity.quality`) goes to ``identity_runs``, the
    MLflow metrics ``identity.estimated_*`` and the log; a run below the bar
    is degraded or fails (``identity_below_bar``). A degraded run is logged at
    WARNING and tagged ``identity_degraded`` with the reason.
    """
    from include.identity import incremental
    from include.identity import linkage as identity_splink
    from include.identity.resolve import resolve_identities
    from include.runtime import tracking

    settings = run.settings
    mlflow_run = run.mlflow_run()
    with Warehouse(run.warehouse_url) as wh:
        wh.ensure_schema()
        base = incremental.latest_base(wh, run.as_of_date)
        model, source, trained_for = _choose_model(run, base)
        out = resolve_identities(wh, run.as_of_date, method=settings.identity_method,
                                 threshold=settings.identity_match_threshold, model=model,
                                 seed=settings.seed, u_max_pairs=settings.identity_u_max_pairs,
                                 phone_country=settings.phone_country, relink=settings.identity_relink,
                                 base=base, model_trained_for=trained_for,
                                 min_estimated_precision=settings.identity_min_estimated_precision,
                                 min_estimated_recall=settings.identity_min_estimated_recall,
                                 below_bar=settings.identity_below_bar)
    refused = f"; {source} not reused: {out.model_refused_reason}" if out.model_refused_reason else ""
    if out.model is None:
        source = f"none: {out.result.identity_map['match_method'].iloc[0]}{refused}"
    metrics = dict(out.result.metrics)
    metrics["model_reused"] = float(model is not None and not out.model_trained and out.model is not None
                                    and out.model_refused_reason is None)
    metrics["incremental"] = float(out.mode == incremental.INCREMENTAL)
    tags = {"identity_method": settings.identity_method, "identity_linkage_columns": ",".join(out.columns),
            "identity_mode": f"{out.mode}: {out.mode_reason}"[:500]}
    if out.degraded_reason:
        # Loud on purpose: the run continues, and everyone reading it must know.
        tags["identity_degraded"] = out.degraded_reason[:500]
        log.warning("identity DEGRADED this run: %s", out.degraded_reason)
    if out.model is not None:
        if out.model_trained:
            missing, minor = identity_splink.untrained_levels(out.model)
            if minor:
                log.warning("identity model: rare levels left at Splink defaults: %s", "; ".join(minor))
            f1 = metrics.get("eval.splink.pairwise_f1")
            below = out.quality_below_bar
            accepted = not missing and (f1 is None or f1 >= settings.identity_min_f1) and not below
            reason = ("untrained exact-match levels: " + "; ".join(missing) if missing else
                      f"F1 {f1:.4f} vs min {settings.identity_min_f1}" if f1 is not None else
                      below if below else "trained")
            model_run = tracking.log_identity_model(mlflow_run, out.model, accepted, run.as_of_date, reason)
            # The column set, the id and the training date travel with the model: a later run with
            # other columns retrains, an incremental run finds its base's model by id.
            for key, value in (("identity_model_columns", ",".join(identity_splink.model_columns(out.model))),
                               (MODEL_ID_TAG, incremental.model_id(out.model)),
                               (TRAINED_FOR_TAG, run.as_of_date.isoformat())):
                tracking.client().set_tag(model_run, key, value)
            source = (f"trained here (MLflow run {model_run}, {'accepted' if accepted else 'NOT accepted'}: "
                      f"{reason}; {source}){refused}")
        tracking.log_table(mlflow_run, identity_splink.m_u_table(out.model), "identity/m_u_parameters.csv")
        tracking.client().log_text(mlflow_run, identity_splink.match_weights_chart_html(out.model),
                                   "identity/match_weights_chart.html")
    if out.changes is not None and len(out.changes):
        tracking.log_table(mlflow_run, out.changes.groupby("change")["records"].agg(["count", "sum"]).reset_index(),
                           "identity/changes_summary.csv")
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
    summary["mode"] = f"{out.mode}: {out.mode_reason}"
    if out.degraded_reason:
        summary["degraded"] = out.degraded_reason
    return summary
