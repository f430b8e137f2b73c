"""DAG tasks ``fit_clv`` and ``crosscheck_clv``: CLV models, holdout validation and the segment cross-check."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from include.runtime.errors import NoRowsError
from include.runtime.run import RunInfo
from include.runtime.settings import SettingsError
from include.runtime.warehouse import Warehouse, named_sql

log = logging.getLogger(__name__)

SQL = named_sql("clv.sql")


def fit_clv(run: RunInfo) -> dict[str, Any]:
    """Fit BG/NBD and MBG/NBD, keep the one with the lower holdout error, fit Gamma-Gamma, score every customer.

    Both purchase models' calibration fits and holdout metrics are logged
    (``clv.bgnbd.*``, ``clv.mbgnbd.*``); the chosen one's name is the tag
    ``clv_model`` and the ``clv_model`` column of ``customer_clv``. Above
    ``clv_fit_sample_size`` customers the models are fitted on a seeded sample
    (:func:`include.clv.models.fit_sample`); the holdout validation, the model
    choice and the scores cover every customer. The phases' wall and CPU
    seconds are logged (``clv.seconds.*``) and in the task log.

    With ``clv_use_champion`` nothing is fitted: the date is scored with the
    latest accepted fit on an as-of date on or before it
    (:func:`include.clv.registry.load_champions`; params ``clv.champion.*``),
    and fails when there is none.
    """
    import tempfile

    from include.clv.models import (
        ClvSettings,
        GammaGammaSpend,
        build_clv_summary,
        calibration_plot,
        fit_sample,
        independence_check,
        score_customers,
        validate_holdout,
    )
    from include.clv.registry import load_champions, register_models
    from include.clv.selection import SELECTION_METRIC, choose_purchase_model
    from include.runtime import tracking

    s = run.settings
    settings = ClvSettings(unit_days=s.clv_unit_days, holdout_days=s.clv_holdout_days,
                           gross_margin=s.gross_margin, annual_discount_rate=s.annual_discount_rate)
    holdout_units = settings.holdout_days / settings.unit_days
    clock = _PhaseClock()
    mlflow_run = run.mlflow_run()
    clock.lap("mlflow_setup")
    d = {"as_of_date": run.as_of_date}
    with Warehouse(run.warehouse_url) as wh:
        truth = _true_future_purchases(wh, run.as_of_date)  # before the transaction: it reflects on tables
    clock.lap("truth")
    candidates: dict[str, dict[str, float]] = {}
    champion_params: dict[str, str] = {}
    # One transaction: the summaries are built once, read for the fit and written with the scores, so no
    # reader sees a date's clv_summary without its customer_clv. The fits inside it take about a second.
    with Warehouse(run.warehouse_url) as warehouse, warehouse.transaction() as tx:
        build_clv_summary(tx, run.as_of_date, settings)
        full = tx.query_df(SQL["summary_full"], d)
        calibration = tx.query_df(SQL["summary_calibration"], d)
        clock.lap("summary")
        if full.empty:
            raise NoRowsError(f"clv_summary is empty for as_of_date={run.as_of_date}: no valid orders on or before it")
        if s.clv_use_champion:
            # Score with the registered champion instead of refitting: the one fitted on this as-of date or
            # the latest before it, so that the scores do not depend on which dates ran before.
            champion = load_champions(run.as_of_date)
            bg, gg = champion.purchases, champion.spend
            if champion.unit_days != settings.unit_days:
                raise SettingsError(f"champion models use clv_unit_days={champion.unit_days}, "
                                 f"this run {settings.unit_days}")
            validation, table = validate_holdout(bg, calibration, holdout_units)
            counts = {}
            champion_params = {"clv.champion.as_of_date": champion.as_of_date.isoformat(),
                               **{f"clv.champion.{name}": v for name, v in champion.versions.items()}}
            log.info("CLV: scoring with the champion models fitted as of %s (%s): %s %s / %s",
                     champion.as_of_date, champion.versions, bg.LABEL, bg.params(), gg.params())
        else:
            full_sample = fit_sample(full, s.clv_fit_sample_size, s.seed)
            choice = choose_purchase_model(calibration, holdout_units,
                                           fit_on=fit_sample(calibration, s.clv_fit_sample_size, s.seed))
            for key, (metrics, _) in choice.validations.items():
                candidates[key] = {**metrics, **{f"calibration_{k}": v for k, v in choice.fits[key].params().items()},
                                   "chosen": float(key == choice.chosen)}
            validation, table = choice.validations[choice.chosen]
            bg = choice.model_class.fit(full_sample)
            gg, counts = GammaGammaSpend.fit(full_sample)
            counts["fit_customers"] = float(len(full_sample))
            if choice.failures:
                tracking.client().set_tag(mlflow_run, "clv_model_failures", "; ".join(
                    f"{k}: {v}" for k, v in choice.failures.items())[:5000])
        clock.lap("fit")
        corr = independence_check(full, settings.independence_warn)
        scores = score_customers(bg, gg, full, settings)
        scores.insert(0, "as_of_date", run.as_of_date)
        scores["model_run_id"] = mlflow_run
        clock.lap("score")
        tx.replace_partition("customer_clv", scores, d)
    clock.lap("write")
    one_time = full["frequency"].to_numpy() == 0
    metrics = {**validation, **counts, "gg_frequency_spend_corr": corr, "clv_customers": float(len(scores)),
               "clv_365d_total": float(scores["clv_365d"].sum()), "clv_mean_p_alive": float(scores["p_alive"].mean()),
               "one_time_buyer_share": float(one_time.mean()),
               "one_time_buyer_mean_p_alive": float(scores["p_alive"][one_time].mean()) if one_time.any() else 0.0}
    for key, figures in candidates.items():
        metrics.update({f"{key}.{k}": v for k, v in figures.items()})
    if truth is not None:
        joined = scores.merge(truth, on="customer_key", how="left").fillna({"true_purchases_365d": 0})
        actual = joined["true_purchases_365d"].sum()
        metrics["truth_365d_actual_purchases"] = float(actual)
        metrics["truth_365d_error_pct"] = float(100 * (joined["expected_purchases_365d"].sum() - actual) / max(actual, 1))
    tracking.log_params(mlflow_run, {**{f"clv.{bg.KEY}.{k}": round(v, 6) for k, v in bg.params().items()},
                                     **{f"clv.gamma_gamma.{k}": round(v, 6) for k, v in gg.params().items()},
                                     "clv.unit_days": settings.unit_days, "clv.holdout_days": settings.holdout_days,
                                     "clv.selection_metric": SELECTION_METRIC,
                                     "clv.fit_sample_size": s.clv_fit_sample_size, **champion_params})
    # A tag, not a param: a re-run of the date may choose the other model.
    tracking.client().set_tag(mlflow_run, "clv_model", bg.LABEL)
    tracking.log_table(mlflow_run, table, "clv/holdout_calibration.csv")
    if not s.clv_use_champion:
        # A fit whose holdout error is within bounds becomes the champion.
        accept = abs(validation["holdout_aggregate_error_pct"]) <= s.clv_max_holdout_error_pct
        versions = register_models(mlflow_run, bg, gg, full, settings.unit_days, run.as_of_date, champion=accept)
        tracking.log_params(mlflow_run, {f"clv.registered.{k}": v for k, v in versions.items()})
        tracking.client().set_tag(mlflow_run, "clv_champion", str(accept).lower())
        if not accept:
            log.warning("CLV holdout error %.1f%% above %.1f%%: models registered but not made champion",
                        validation["holdout_aggregate_error_pct"], s.clv_max_holdout_error_pct)
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/holdout_calibration.png"
        calibration_plot(table, path, bg.LABEL)
        tracking.client().log_artifact(mlflow_run, path, "clv")
    clock.lap("mlflow")
    tracking.log_metrics(mlflow_run, {**metrics, **clock.metrics()}, prefix="clv.")
    log.info("CLV: %s %s, Gamma-Gamma %s; holdout aggregate error %.1f%%, MAE %.2f, corr %.2f; "
             "one-time buyers %.0f%% of customers, mean P(alive) %.2f", bg.LABEL,
             {k: round(v, 3) for k, v in bg.params().items()}, {k: round(v, 3) for k, v in gg.params().items()},
             validation["holdout_aggregate_error_pct"], validation["holdout_mae"], validation["holdout_correlation"],
             100 * metrics["one_time_buyer_share"], metrics["one_time_buyer_mean_p_alive"])
    log.info("CLV timings (wall s / CPU s): %s", clock)
    return {"customers": len(scores), "clv_model": bg.LABEL,
            "holdout_aggregate_error_pct": round(validation["holdout_aggregate_error_pct"], 2)}


class _PhaseClock:
    """Wall and CPU seconds of a stage's phases, for the task log and MLflow (``seconds.<phase>``)."""

    def __init__(self) -> None:
        import time

        self._time = time
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        self.phases: dict[str, tuple[float, float]] = {}

    def lap(self, phase: str) -> None:
        wall, cpu = self._time.perf_counter(), self._time.process_time()
        self.phases[phase] = (wall - self._wall, cpu - self._cpu)
        self._wall, self._cpu = wall, cpu

    def metrics(self) -> dict[str, float]:
        return {f"seconds.{phase}": round(wall, 3) for phase, (wall, _) in self.phases.items()}

    def __str__(self) -> str:
        return ", ".join(f"{phase} {wall:.2f}/{cpu:.2f}" for phase, (wall, cpu) in self.phases.items())


def _true_future_purchases(wh: Warehouse, as_of_date: dt.date):
    """True purchase days in the 365 days after the date, from the demo's ground truth (evaluation only).

    Only when the date is the end of the generated history, where ``truth_future_orders`` starts.
    """
    if not (wh.has_table("truth_future_orders") and wh.has_table("truth_identity")):
        return None
    first = wh.scalar(SQL["truth_first_future_order"])
    if first is None or (first.date() - as_of_date).days > 1:
        return None
    return wh.query_df(SQL["truth_future_purchases"], {
        "as_of_date": as_of_date, "end_ts": dt.datetime.combine(as_of_date + dt.timedelta(days=366), dt.time())})


def crosscheck_clv(run: RunInfo) -> dict[str, Any]:
    """Cross-check the segments' value claims with their mean CLV; rename the ones CLV contradicts.

    A contradicted segment is renamed by the naming rules with CLV as a
    second witness (its value claim withdrawn), in ``segment_profiles``,
    ``segment_assignments`` and this date's published labels; the check table
    keeps the old name (``name_before``) and the reason. A contradiction that
    renaming cannot resolve fails this date's quality gate (or, where its
    labels are already published, is logged as an error). Run it before
    ``publish_segments`` so that names and the gate are final when labels go out.
    """
    from include.clv.models import crosscheck_segments
    from include.runtime import tracking
    from include.segmentation.history import rename_with_clv

    mlflow_run = run.mlflow_run()
    d = {"as_of_date": run.as_of_date}
    query = SQL["segment_value_claims"]
    # One transaction: the check table, the renames (profiles, assignments, published labels) and a failed
    # gate become visible together.
    with Warehouse(run.warehouse_url) as warehouse, warehouse.transaction() as wh:
        profiles = wh.query_df(query, d)
        clv = wh.query_df(SQL["segment_clv"], d)
        if profiles.empty or clv.empty:
            raise NoRowsError(f"segment_profiles or customer_clv is empty for as_of_date={run.as_of_date}")
        check, spearman = crosscheck_segments(profiles, clv)
        renamed = rename_with_clv(wh, run.as_of_date, clv.set_index("segment_id")["mean_clv_365d"])
        renamed_profiles = wh.query_df(query, d)
        after, _ = crosscheck_segments(renamed_profiles, clv)
        check["name_before"] = check["segment_id"].map({s: old for s, (old, _) in renamed.items()})
        check["segment_name"] = check["segment_id"].map(after.set_index("segment_id")["segment_name"])
        standing_now = renamed_profiles.set_index("segment_id")["value_standing"]
        check["reason"] = [
            None if not r.flag else
            f"{r.reason}; renamed from '{r.name_before}'" if isinstance(r.name_before, str) else
            f"{r.reason}; claim withdrawn (value standing now '{standing_now.get(r.segment_id)}', name unchanged)"
            for r in check.itertuples()]
        check.insert(0, "as_of_date", run.as_of_date)
        wh.replace_partition("segment_clv_check", check, d)
        unresolved = after[after["flag"]]
        published = wh.scalar(SQL["run_published"], d)
        if len(unresolved):
            text = "; ".join(f"segment {r.segment_id} '{r.segment_name}': {r.reason}" for r in unresolved.itertuples())
            if published:
                log.error("CLV contradicts published names (run crosscheck_clv before publish_segments): %s", text)
            else:
                wh.run_script(SQL["fail_gate"], {**d, "reason": f"CLV cross-check: {text}"})
                log.warning("quality gate failed on the CLV cross-check: %s", text)
    flagged = check[check["flag"]]
    metrics = {"clv.segment_value_spearman": spearman, "clv.segments_flagged": float(len(flagged)),
               "clv.segments_renamed": float(len(renamed)), "clv.segments_unresolved": float(len(unresolved))}
    for r in check.itertuples():
        metrics[f"clv.mean_clv_365d.segment_{r.segment_id}"] = r.mean_clv_365d
    tracking.log_metrics(mlflow_run, metrics)
    tracking.log_table(mlflow_run, check, "clv/segment_clv_check.csv")
    for r in flagged.itertuples():
        log.warning("segment %d '%s': %s", r.segment_id, r.segment_name, r.reason)
    if len(flagged):
        tracking.client().set_tag(mlflow_run, "clv_contradictions",
                                  "; ".join(f"{r.segment_name}: {r.reason}" for r in flagged.itertuples())[:5000])
    log.info("CLV cross-check: Spearman(value order, mean CLV) = %.2f; %d segment(s) flagged, %d renamed, "
             "%d unresolved", spearman, len(flagged), len(renamed), len(unresolved))
    return {"spearman": round(spearman, 3), "flagged": flagged["segment_name"].tolist(),
            "renamed": {str(s): new for s, (_, new) in renamed.items()}, "unresolved": len(unresolved)}
