"""One CLV run, decided: which model, whether its figures pass their check, or why there is no CLV.

:func:`fit_and_score` is everything ``fit_clv`` decides between reading the
summaries and writing the tables: fit the purchase models of the family on the
calibration period and keep the valid ones (``include/clv/selection.py``),
choose by holdout error, refit on the full history, fit Gamma-Gamma, score
every customer, backtest the calibration fit on the holdout
(``include/clv/backtest.py``) and judge the result (:func:`judge_fit`).

A model that cannot be fitted (no interior maximum, a degenerate P(alive) = 1
for everyone, no convergence) is a failed fit of that model, not an error of
the run: when no purchase model fits, the outcome is ``unavailable`` with the
reason, no customer gets a CLV, and the rest of the run goes on saying "CLV not
available: <reason>". Bad data (``ClvInputError``, a ``PipelineFinding``)
still stops the run.

Status of the outcome (``clv_runs.status``):

- ``champion``: the figures come from a fit that passed its check (this run's,
  which becomes the registry's champion) or from the registry's champion
  (``clv_use_champion``; ``check_passed`` then says whether it still passes on
  this date's holdout);
- ``fitted``: this run's fit failed its check (holdout error beyond
  ``clv_max_holdout_error_pct`` or a ranking below ``clv_min_gini``): scores
  are written but are not presented as true, and the fit is not the champion;
- ``unavailable``: no purchase model (or no spend model) could be fitted.

References
----------
Fader, P. S., Hardie, B. G. S., Lee, K. L. (2005). "Counting your customers"
the easy way: an alternative to the Pareto/NBD model. Marketing Science 24(2), 275-284.
Batislam, E. P., Denizel, M., Filiztekin, A. (2007). Empirical validation and
comparison of models for customer base analysis. International Journal of
Research in Marketing 24(3), 201-209.
Fader, P. S., Hardie, B. G. S. (2013). The Gamma-Gamma model of monetary value.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from include.clv.backtest import clv_backtest
from include.clv.errors import ClvFitError, ClvInputError
from include.clv.models import (
    ClvSettings,
    GammaGammaSpend,
    PurchaseModel,
    _check_columns,
    fit_sample,
    independence_check,
    score_customers,
    validate_holdout,
)
from include.clv.selection import choose_purchase_model, degenerate_reason, fit_purchase_model, model_class
from include.runtime.errors import NoRowsError

if TYPE_CHECKING:
    from include.clv.registry import Champion

log = logging.getLogger(__name__)

#: Columns of ``clv_runs`` (``include/sql/schema.sql``).
RUN_COLUMNS = ("as_of_date", "status", "clv_model", "reason", "holdout_error_pct", "gross_margin",
               "gross_margin_assumed", "check_passed", "holdout_mae", "normalised_gini", "candidates", "customers",
               "fitted_as_of", "model_run_id")
#: Columns of ``clv_backtest``.
BACKTEST_COLUMNS = ("as_of_date", "calibration_end", "horizon_days", "clv_model", "row_kind", "decile", "metric",
                    "customers", "predicted_purchases", "realised_purchases", "predicted_revenue",
                    "realised_revenue", "value", "bar", "verdict", "detail")


@dataclass
class ClvOutcome:
    """What one CLV run decided; :meth:`run_row` and :meth:`backtest_rows` are its table rows.

    Attributes
    ----------
    status, reason
        See the module docstring; ``reason`` says why CLV is unavailable or why
        the figures fail their check (``None`` when they pass).
    purchases, spend
        The models the scores come from (``None`` when unavailable).
    scores
        ``customer_clv`` rows without ``as_of_date`` and ``model_run_id`` (empty when unavailable).
    check_passed
        Whether the figures pass their check (``None`` when unavailable).
    validation, calibration_table
        The chosen calibration fit's holdout metrics and calibration-by-frequency table.
    backtest, backtest_summary
        ``clv_backtest`` rows (without the date columns) and their summary figures.
    candidates
        Per purchase model: its holdout metrics and calibration parameters, or why it failed.
    metrics
        Figures for MLflow (counts, correlation, one-time buyers).
    """

    status: str
    reason: str | None
    settings: ClvSettings
    purchases: PurchaseModel | None = None
    spend: GammaGammaSpend | None = None
    scores: pd.DataFrame = field(default_factory=pd.DataFrame)
    check_passed: bool | None = None
    validation: dict[str, float] = field(default_factory=dict)
    calibration_table: pd.DataFrame | None = None
    backtest: pd.DataFrame = field(default_factory=pd.DataFrame)
    backtest_summary: dict[str, float] = field(default_factory=dict)
    candidates: dict[str, dict] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    fitted_as_of: dt.date | None = None
    #: This run fitted its models (they are registered; champions when ``check_passed``).
    fitted_here: bool = False

    @property
    def available(self) -> bool:
        return self.status != "unavailable"

    @property
    def model_label(self) -> str | None:
        return self.purchases.LABEL if self.purchases is not None else None

    def candidates_text(self) -> str:
        """Every candidate in one line: its holdout MAE and error, or why it failed."""
        parts = []
        for key, figures in self.candidates.items():
            label = model_class(key).LABEL
            if "failure" in figures:
                parts.append(f"{label}: failed ({figures['failure']})")
            else:
                parts.append(f"{label}: holdout MAE {figures['holdout_mae']:.4f}, error "
                             f"{figures['holdout_aggregate_error_pct']:+.1f}%"
                             + (" (chosen)" if figures.get("chosen") else ""))
        return "; ".join(parts) if parts else "none fitted (scored with the registered champion)"

    def run_row(self, as_of_date: dt.date, model_run_id: str | None) -> pd.DataFrame:
        """The date's ``clv_runs`` row."""
        return pd.DataFrame([{
            "as_of_date": as_of_date, "status": self.status, "clv_model": self.model_label, "reason": self.reason,
            "holdout_error_pct": self.validation.get("holdout_aggregate_error_pct"),
            "gross_margin": self.settings.gross_margin, "gross_margin_assumed": self.settings.gross_margin_assumed,
            "check_passed": self.check_passed, "holdout_mae": self.validation.get("holdout_mae"),
            "normalised_gini": self.backtest_summary.get("normalised_gini"),
            "candidates": self.candidates_text(), "customers": len(self.scores),
            "fitted_as_of": self.fitted_as_of if self.available else None, "model_run_id": model_run_id,
        }], columns=list(RUN_COLUMNS))

    def backtest_rows(self, as_of_date: dt.date) -> pd.DataFrame:
        """The date's ``clv_backtest`` rows (none when unavailable)."""
        if self.backtest.empty:
            return pd.DataFrame(columns=list(BACKTEST_COLUMNS))
        rows = self.backtest.copy()
        rows["as_of_date"] = as_of_date
        rows["calibration_end"] = as_of_date - dt.timedelta(days=self.settings.holdout_days)
        rows["horizon_days"] = self.settings.holdout_days
        rows["clv_model"] = self.model_label
        return rows.reindex(columns=list(BACKTEST_COLUMNS))


def judge_fit(validation: dict[str, float], backtest_summary: dict[str, float],
              settings: ClvSettings) -> tuple[bool, str | None]:
    """Whether CLV figures pass their check on the holdout, and if not, why (one sentence).

    The check: the aggregate holdout purchase error within
    ``clv_max_holdout_error_pct``, and the ranking of customers by predicted
    value at least ``clv_min_gini`` (normalised Gini of the realised holdout
    revenue, :func:`include.clv.backtest.normalised_gini`). A figure that
    cannot be checked (nobody bought in the holdout) does not pass.
    """
    problems = []
    error = validation.get("holdout_aggregate_error_pct", float("nan"))
    if not abs(error) <= settings.max_holdout_error_pct:
        problems.append(f"holdout purchase error {error:+.1f}% is beyond ±{settings.max_holdout_error_pct:g}% "
                        "(clv_max_holdout_error_pct)")
    gini = backtest_summary.get("normalised_gini", float("nan"))
    if np.isnan(gini):
        problems.append("the ranking could not be checked: no customer bought in the holdout")
    elif gini < settings.min_gini:
        problems.append(f"ranking customers by predicted value orders their holdout revenue with a normalised "
                        f"Gini of {gini:.2f}, below {settings.min_gini:g} (clv_min_gini)")
    if problems:
        return False, "CLV check failed: " + "; ".join(problems)
    return True, None


def _with_verdicts(rows: pd.DataFrame, summary: dict[str, float], settings: ClvSettings,
                   detail: str | None) -> pd.DataFrame:
    """Bars and verdicts on the summary rows the check uses; 'not checked' on the others."""
    rows = rows.copy()
    rows["bar"], rows["verdict"], rows["detail"] = np.nan, None, detail
    ranked_by = "normalised_gini_revenue" if not np.isnan(summary.get("normalised_gini_revenue", np.nan)) \
        else "normalised_gini_purchases"
    for i, r in rows.iterrows():
        if r["row_kind"] != "summary":
            continue
        if r["metric"] == ranked_by:
            rows.loc[i, "bar"] = settings.min_gini
            rows.loc[i, "verdict"] = "not checked" if pd.isna(r["value"]) else \
                "held" if r["value"] >= settings.min_gini else "failed"
        elif r["metric"] == "purchase_error_pct":
            rows.loc[i, "bar"] = settings.max_holdout_error_pct
            rows.loc[i, "verdict"] = "not checked" if pd.isna(r["value"]) else \
                "held" if abs(r["value"]) <= settings.max_holdout_error_pct else "failed"
        else:
            rows.loc[i, "verdict"] = "not checked"
    return rows


def fit_and_score(full: pd.DataFrame, calibration: pd.DataFrame, settings: ClvSettings,
                  champion: Champion | None = None, lap: Callable[[str], None] = lambda phase: None) -> ClvOutcome:
    """Fit (or take the champion), score every customer, backtest and judge; or say why there is no CLV.

    Parameters
    ----------
    full, calibration
        The date's full-period and calibration summaries (``sql/clv_summary.sql``).
    settings
        The run's CLV settings.
    champion
        Score with the registry's champion models instead of fitting (``clv_use_champion``;
        :func:`include.clv.registry.load_champions`).
    lap
        Called with ``"fit"``, ``"score"`` and ``"backtest"`` as each phase ends (the stage's clock).

    Raises
    ------
    NoRowsError
        The full-period summary is empty (no valid orders on or before the date).
    ClvInputError
        No model can take the summaries (missing columns, NaN, negative money,
        recency beyond the period, no repeat buyers).
    """
    if full.empty:
        raise NoRowsError("clv_summary is empty for the date (period 'full'): no valid orders on or before it")
    # Data errors first, whichever models would fit: they stop the run, a failed fit does not.
    _check_columns(full, ["frequency", "recency", "t", "monetary_value"], "clv_summary (period 'full')")
    _check_columns(calibration, ["frequency", "recency", "t", "monetary_value", "holdout_purchases"],
                   "clv_summary (period 'calibration')")
    if not (full["frequency"] > 0).any():
        raise ClvInputError(f"clv_summary (period 'full'): none of {len(full):,} customers has repeat purchases "
                            "(column frequency is 0 for all): CLV models need repeat buyers")
    holdout_units = settings.holdout_units
    if champion is not None:
        return _score_with_champion(full, calibration, settings, champion, lap)
    fit_on = fit_sample(calibration, settings.fit_sample_size, settings.seed)
    choice = choose_purchase_model(calibration, holdout_units, fit_on=fit_on)
    candidates: dict[str, dict] = {}
    for key, (metrics, _) in choice.validations.items():
        candidates[key] = {**metrics, **{f"calibration_{k}": v for k, v in choice.fits[key].params().items()},
                           "chosen": 0.0}
    for key, why in choice.failures.items():
        candidates[key] = {"failure": why}
    outcome = ClvOutcome(status="unavailable", reason=None, settings=settings, candidates=candidates,
                         failures=dict(choice.failures))
    if choice.chosen is None:
        outcome.reason = f"no purchase model fits this data: {choice.failure_text()}"
        return outcome
    full_sample = fit_sample(full, settings.fit_sample_size, settings.seed)
    purchases, key, refit_failures = None, None, []
    for key in choice.ranking:  # best holdout error first; the next one if the full-history refit fails
        try:
            purchases = fit_purchase_model(model_class(key), full_sample)
            break
        except ClvFitError as exc:
            outcome.failures[key] = f"refit on the full history: {exc}"
            candidates[key]["failure"] = outcome.failures[key]
            refit_failures.append(f"{exc.summary} on the full history")
            log.warning("CLV: %s failed on the full history: %s", model_class(key).LABEL, exc)
    if purchases is None:
        outcome.reason = "no purchase model fits this data: " + "; ".join(
            [choice.failure_text(), *refit_failures] if choice.failures else refit_failures)
        return outcome
    candidates[key]["chosen"] = 1.0
    try:
        spend, counts = GammaGammaSpend.fit(full_sample)
    except ClvFitError as exc:
        outcome.reason = f"the spend model does not fit this data: {exc.summary}"
        outcome.failures["gamma_gamma"] = str(exc)
        return outcome
    try:
        spend_calibration, _ = GammaGammaSpend.fit(fit_on)
    except (ClvFitError, ClvInputError) as exc:  # the backtest then ranks by purchases alone
        log.warning("CLV backtest: Gamma-Gamma cannot be fitted on the calibration period (%s): revenue "
                    "columns unknown, ranking by predicted purchases", exc)
        spend_calibration = None
    validation, table = choice.validations[key]
    counts["fit_customers"] = float(len(full_sample))
    lap("fit")
    return _finish(outcome, full, calibration, purchases, spend, choice.fits[key], spend_calibration,
                   validation, table, counts, fitted_as_of=None, fitted_here=True, lap=lap)


def _score_with_champion(full: pd.DataFrame, calibration: pd.DataFrame, settings: ClvSettings,
                         champion: Champion, lap: Callable[[str], None]) -> ClvOutcome:
    """Score with the registered champion; validate and backtest it on this date's holdout."""
    from include.runtime.settings import SettingsError

    if champion.unit_days != settings.unit_days:
        raise SettingsError(f"clv_use_champion: the champion models (fitted as of {champion.as_of_date}) use "
                            f"clv_unit_days={champion.unit_days}, this run {settings.unit_days}")
    outcome = ClvOutcome(status="champion", reason=None, settings=settings)
    reason = degenerate_reason(champion.purchases, full)
    if reason:
        outcome.status, outcome.reason = "unavailable", f"the champion model is degenerate on this date ({reason})"
        return outcome
    validation, table = validate_holdout(champion.purchases, calibration, settings.holdout_units)
    lap("fit")
    return _finish(outcome, full, calibration, champion.purchases, champion.spend, champion.purchases,
                   champion.spend, validation, table, {}, fitted_as_of=champion.as_of_date, fitted_here=False,
                   lap=lap)


def _finish(outcome: ClvOutcome, full: pd.DataFrame, calibration: pd.DataFrame, purchases: PurchaseModel,
            spend: GammaGammaSpend, purchases_calibration: PurchaseModel, spend_calibration: GammaGammaSpend | None,
            validation: dict[str, float], table: pd.DataFrame, counts: dict[str, float],
            fitted_as_of: dt.date | None, fitted_here: bool, lap: Callable[[str], None]) -> ClvOutcome:
    settings = outcome.settings
    scores = score_customers(purchases, spend, full, settings)
    lap("score")
    rows, summary = clv_backtest(calibration, purchases_calibration, spend_calibration, settings.holdout_units)
    lap("backtest")
    passed, why = judge_fit(validation, summary, settings)
    detail = None
    if fitted_as_of is not None:
        # A champion fitted after the calibration end has seen part of the holdout: its backtest flatters it.
        detail = (f"scored with the registered champion fitted on data to {fitted_as_of}; where that is after "
                  "the calibration end, the model has seen part of the holdout and the backtest flatters it")
    outcome.backtest = _with_verdicts(rows, summary, settings, detail)
    outcome.backtest_summary = summary
    one_time = full["frequency"].to_numpy() == 0
    outcome.metrics = {
        **counts, "gg_frequency_spend_corr": independence_check(full, settings.independence_warn),
        "clv_customers": float(len(scores)), "clv_365d_total": float(scores["clv_365d"].sum()),
        "clv_mean_p_alive": float(scores["p_alive"].mean()), "one_time_buyer_share": float(one_time.mean()),
        "one_time_buyer_mean_p_alive": float(scores["p_alive"][one_time].mean()) if one_time.any() else float("nan"),
        "check_passed": float(passed),
    }
    outcome.purchases, outcome.spend, outcome.scores = purchases, spend, scores
    outcome.validation, outcome.calibration_table = validation, table
    outcome.check_passed, outcome.fitted_as_of, outcome.fitted_here = passed, fitted_as_of, fitted_here
    if fitted_here:
        outcome.status = "champion" if passed else "fitted"
    outcome.reason = why
    return outcome


def truth_error(scores: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """Expected 365-day purchases against the demo's planted future (evaluation only, never a decision)."""
    joined = scores.merge(truth, on="customer_key", how="left").fillna({"true_purchases_365d": 0})
    actual = joined["true_purchases_365d"].sum()
    return {"truth_365d_actual_purchases": float(actual),
            "truth_365d_error_pct": float(100 * (joined["expected_purchases_365d"].sum() - actual) / max(actual, 1))}
