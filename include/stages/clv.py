"""DAG tasks ``fit_clv`` and ``crosscheck_clv``: CLV models, holdout validation and the segment cross-check."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from include.runtime.errors import NoRowsError
from include.runtime.run import RunInfo
from include.runtime.warehouse import Warehouse, named_sql

log = logging.getLogger(__name__)

SQL = named_sql("clv.sql")
LABELS_SQL = named_sql("labels.sql")


def fit_clv(run: RunInfo) -> dict[str, Any]:
    """Fit the CLV models, or say why there is no CLV; write ``customer_clv``, ``clv_runs`` and ``clv_backtest``.

    Read the date's summaries, call :func:`include.clv.fit.fit_and_score`
    (which model, whether its figures pass their check, or why no model fits),
    write the three tables in one transaction, then log: candidates' holdout
    metrics and parameters (``clv.bgnbd.*``, ``clv.mbgnbd.*``), the backtest
    (``clv.backtest.*``, ``clv/backtest.csv``), the tags ``clv_status``,
    ``clv_model`` and ``clv_champion``, and the registered models (champions
    when the fit passed its check). Above ``clv_fit_sample_size`` customers the
    models are fitted on a seeded sample (:func:`include.clv.models.fit_sample`);
    validation, backtest and scores cover every customer. The phases' wall and
    CPU seconds are logged (``clv.seconds.*``) and in the task log.

    When no purchase model fits (no interior maximum, P(alive) = 1 for
    everyone, no convergence) the task does not fail: ``clv_runs`` says
    ``unavailable`` and why, ``customer_clv`` has no rows for the date, the log
    warns and MLflow is tagged, and the rest of the run goes on without CLV.
    Bad data still fails it (``ClvInputError``, a ``PipelineFinding``).

    With ``clv_use_champion`` nothing is fitted: the date is scored with the
    latest accepted fit on an as-of date on or before it
    (:func:`include.clv.registry.load_champions`; params ``clv.champion.*``),
    and fails when there is none (``NoChampionError``).
    """
    from include.clv.fit import fit_and_score, truth_error
    from include.clv.models import ClvSettings, build_clv_summary
    from include.runtime import tracking

    settings = ClvSettings.from_run_settings(run.settings)
    clock = _PhaseClock()
    mlflow_run = run.mlflow_run()
    clock.lap("mlflow_setup")
    d = {"as_of_date": run.as_of_date}
    with Warehouse(run.warehouse_url) as wh:
        truth = _true_future_purchases(wh, run.as_of_date)  # before the transaction: it reflects on tables
    champion, champion_params = None, {}
    if run.settings.clv_use_champion:
        from include.clv.registry import load_champions

        champion = load_champions(run.as_of_date)
        champion_params = {"clv.champion.as_of_date": champion.as_of_date.isoformat(),
                           **{f"clv.champion.{name}": v for name, v in champion.versions.items()}}
    clock.lap("read")
    # One transaction: the summaries are built once, read for the fit and written with the scores, the run
    # row and the backtest, so no reader sees a date's clv_summary or clv_runs without its customer_clv.
    with Warehouse(run.warehouse_url) as warehouse, warehouse.transaction() as tx:
        build_clv_summary(tx, run.as_of_date, settings)
        full = tx.query_df(SQL["summary_full"], d)
        calibration = tx.query_df(SQL["summary_calibration"], d)
        clock.lap("summary")
        outcome = fit_and_score(full, calibration, settings, champion, lap=clock.lap)
        scores = outcome.scores.copy()
        if outcome.available:
            scores.insert(0, "as_of_date", run.as_of_date)
            scores["model_run_id"] = mlflow_run
        tx.replace_partition("customer_clv", scores, d)
        tx.replace_partition("clv_runs", outcome.run_row(run.as_of_date, mlflow_run), d)
        tx.replace_partition("clv_backtest", outcome.backtest_rows(run.as_of_date), d)
    clock.lap("write")
    _log_outcome(run, mlflow_run, outcome, settings, champion_params,
                 truth_error(scores, truth) if truth is not None and outcome.available else {}, full)
    clock.lap("mlflow")
    tracking.log_metrics(mlflow_run, clock.metrics(), prefix="clv.")
    log.info("CLV timings (wall s / CPU s): %s", clock)
    result = {"status": outcome.status, "customers": len(outcome.scores), "clv_model": outcome.model_label}
    if outcome.available:
        result["holdout_aggregate_error_pct"] = round(outcome.validation["holdout_aggregate_error_pct"], 2)
        result["check_passed"] = outcome.check_passed
    else:
        result["reason"] = outcome.reason
    return result


def _log_outcome(run: RunInfo, mlflow_run: str, outcome, settings, champion_params: dict[str, str],
                 truth_metrics: dict[str, float], summary) -> None:
    """MLflow and the task log for one CLV outcome (``include.clv.fit.ClvOutcome``).

    ``summary``: the full-period summary (the registered models' input example).
    """
    import tempfile

    from include.clv.models import calibration_plot
    from include.clv.registry import register_models
    from include.clv.selection import SELECTION_METRIC
    from include.runtime import tracking

    client = tracking.client()
    metrics = {**outcome.metrics, **truth_metrics}
    for key, figures in outcome.candidates.items():
        metrics.update({f"{key}.{k}": v for k, v in figures.items() if isinstance(v, int | float)})
        metrics[f"{key}.failed"] = float("failure" in figures)
    metrics.update({f"backtest.{k}": v for k, v in outcome.backtest_summary.items()})
    params = {"clv.unit_days": settings.unit_days, "clv.holdout_days": settings.holdout_days,
              "clv.selection_metric": SELECTION_METRIC, "clv.fit_sample_size": settings.fit_sample_size,
              "clv.gross_margin": settings.gross_margin, "clv.gross_margin_assumed": settings.gross_margin_assumed,
              **champion_params}
    # Tags, not params: a re-run of the date may choose another model, or fit where this one did not.
    client.set_tag(mlflow_run, "clv_status", outcome.status)
    if outcome.failures:
        client.set_tag(mlflow_run, "clv_model_failures", "; ".join(
            f"{k}: {v}" for k, v in outcome.failures.items())[:5000])
    if not outcome.available:
        client.set_tag(mlflow_run, "clv_unavailable", outcome.reason[:5000])
        tracking.log_params(mlflow_run, params)
        tracking.log_metrics(mlflow_run, metrics, prefix="clv.")
        log.warning("CLV NOT AVAILABLE for %s: %s. No customer gets a CLV or P(alive) this run; segments, "
                    "economics, report and pushes go on without it and say so.", run.as_of_date, outcome.reason)
        return
    bg, gg = outcome.purchases, outcome.spend
    params.update({**{f"clv.{bg.KEY}.{k}": round(v, 6) for k, v in bg.params().items()},
                   **{f"clv.gamma_gamma.{k}": round(v, 6) for k, v in gg.params().items()}})
    tracking.log_params(mlflow_run, params)
    metrics.update(outcome.validation)
    tracking.log_metrics(mlflow_run, metrics, prefix="clv.")
    client.set_tag(mlflow_run, "clv_model", bg.LABEL)
    tracking.log_table(mlflow_run, outcome.calibration_table, "clv/holdout_calibration.csv")
    tracking.log_table(mlflow_run, outcome.backtest_rows(run.as_of_date), "clv/backtest.csv")
    if outcome.fitted_here:
        versions = register_models(mlflow_run, bg, gg, summary, settings.unit_days, run.as_of_date,
                                   champion=outcome.check_passed)
        tracking.log_params(mlflow_run, {f"clv.registered.{k}": v for k, v in versions.items()})
        client.set_tag(mlflow_run, "clv_champion", str(outcome.check_passed).lower())
    if not outcome.check_passed:
        client.set_tag(mlflow_run, "clv_check_failed", outcome.reason[:5000])
        log.warning("%s: CLV figures are written but flagged as not passing their check%s", outcome.reason,
                    "; the fit is registered but not made champion" if outcome.fitted_here else "")
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/holdout_calibration.png"
        calibration_plot(outcome.calibration_table, path, bg.LABEL)
        client.log_artifact(mlflow_run, path, "clv")
    v, b = outcome.validation, outcome.backtest_summary
    log.info("CLV %s: %s %s, Gamma-Gamma %s; holdout aggregate error %.1f%%, MAE %.2f, corr %.2f, normalised "
             "Gini %.2f; one-time buyers %.0f%% of customers, mean P(alive) %.2f; candidates: %s", outcome.status,
             bg.LABEL, {k: round(x, 3) for k, x in bg.params().items()},
             {k: round(x, 3) for k, x in gg.params().items()}, v["holdout_aggregate_error_pct"], v["holdout_mae"],
             v["holdout_correlation"], b.get("normalised_gini", float("nan")),
             100 * outcome.metrics["one_time_buyer_share"], outcome.metrics["clv_mean_p_alive"],
             outcome.candidates_text())


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
    """Check the date's labels against CLV: value order against mean CLV, lapsed names against P(alive).

    CLV is a witness the labeller (``label_segments``) already heard: a value claim CLV contradicts
    and a "lapsed" name where more than a quarter of the members have P(alive) >= 0.5 were withheld
    there, and are listed here as flagged with the claim withdrawn. This task changes no name: it
    writes ``segment_clv_check`` (one row per published label: value rank, CLV rank, mean CLV and
    P(alive), the share with P(alive) >= 0.5, flag, reason). A contradiction still standing in the
    final labels is logged as an error and tagged (``clv_contradictions``). When the date has no
    CLV scores (``clv_runs`` status 'unavailable'), every row says it could not check, and
    labelling and publishing proceed.
    """
    from include.labels.build import clv_witness
    from include.labels.crosscheck import check_labels
    from include.runtime import tracking

    mlflow_run = run.mlflow_run()
    d = {"as_of_date": run.as_of_date}
    with Warehouse(run.warehouse_url) as warehouse, warehouse.transaction() as wh:
        labels = wh.query_df(LABELS_SQL["label_claims"], d)
        if labels.empty:
            raise NoRowsError(f"segment_labels has no rows for as_of_date={run.as_of_date}; run label_segments first")
        scores, note = clv_witness(wh, run.as_of_date)
        result = check_labels(labels, None if scores is None else wh.query_df(LABELS_SQL["label_clv"], d), note)
        check, spearman = result.rows, result.spearman
        check.insert(0, "as_of_date", run.as_of_date)
        wh.replace_partition("segment_clv_check", check, d)
    for text in result.unresolved:
        log.error("CLV contradicts the published label: %s", text)
    unresolved = len(result.unresolved)
    flagged = check[check["flag"]]
    metrics = {"clv.segments_flagged": float(len(flagged)), "clv.crosscheck_checked": float(scores is not None)}
    if scores is not None:
        metrics["clv.segment_value_spearman"] = spearman
        for r in check.itertuples():
            metrics[f"clv.mean_clv_365d.segment_{r.segment_id}"] = r.mean_clv_365d
    tracking.log_metrics(mlflow_run, metrics)
    tracking.log_table(mlflow_run, check, "clv/segment_clv_check.csv")
    if scores is None:
        log.warning("CLV cross-check could not check the labels of %s: %s", run.as_of_date, note)
        tracking.client().set_tag(mlflow_run, "clv_crosscheck", f"could not check: {note}"[:5000])
    for r in flagged.itertuples():
        log.warning("segment %d '%s': %s", r.segment_id, r.segment_name, r.reason)
    if len(flagged):
        tracking.client().set_tag(mlflow_run, "clv_contradictions",
                                  "; ".join(f"{r.segment_name}: {r.reason}" for r in flagged.itertuples())[:5000])
    log.info("CLV cross-check: Spearman(value order, mean CLV) = %.2f; %d segment(s) flagged", spearman, len(flagged))
    return {"checked": scores is not None, "reason": None if scores is not None else f"could not check: {note}",
            "spearman": None if scores is None else round(spearman, 3),
            "flagged": flagged["segment_name"].tolist(),
            "unresolved": unresolved}
