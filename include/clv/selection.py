"""Which purchase model a run uses: the valid model of the BG/NBD family that predicts the holdout best.

Every candidate (BG/NBD, Fader, Hardie & Lee 2005; MBG/NBD, Batislam et al.
2007) is fitted on the calibration period and scored on the holdout that
follows it (``validate_holdout``). A fit is valid only if its likelihood has an
interior maximum (:func:`include.clv.likelihood.maximise` probes the
boundaries) and it is not degenerate: a fit that gives nearly every customer
P(alive) = 1 sees no dropout at all (BG/NBD on one year of a wholesale-heavy
invoice shop, where nobody who bought twice has stopped yet), and its CLV
would credit every long-silent customer with a full future. Of the valid fits
the one with the lower per-customer mean absolute error of holdout purchases
is chosen and refitted on the full history (the next one if that refit is not
valid). Per-customer error is the criterion because P(alive), churn risk and
CLV are per-customer figures: a model can match the aggregate count while
crediting long-silent one-time buyers with purchases they do not make. A tie
goes to BG/NBD, listed first, so CDNOW's published BG/NBD path is kept when
the data cannot tell the two apart. When no candidate is valid, the run has
no CLV (``include/clv/fit.py`` records why) rather than a false one.

Pareto/NBD (Schmittlein, Morrison & Colombo 1987), the family's third
member, is not a candidate. Its likelihood's gradient needs derivatives of
the Gauss hypergeometric function with respect to its parameters, which have
no closed form (the likelihoods here come with analytic gradients, checked
against finite differences), and where BG/NBD and MBG/NBD have no interior
maximum it has none either: on ``tests/clv/simulate.py``'s one-year wholesale
shop lifetimes' ``ParetoNBDFitter`` ends with a mean dropout rate s / beta
of 4e-9 a week and P(alive) >= 0.999 for every customer
(``tests/clv/test_boundary.py``).

References
----------
Fader, P. S., Hardie, B. G. S., Lee, K. L. (2005). "Counting your customers"
the easy way: an alternative to the Pareto/NBD model. Marketing Science 24(2), 275-284.
Batislam, E. P., Denizel, M., Filiztekin, A. (2007). Empirical validation and
comparison of models for customer base analysis. International Journal of
Research in Marketing 24(3), 201-209.
Schmittlein, D. C., Morrison, D. G., Colombo, R. (1987). Counting your
customers: who are they and what will they do next? Management Science 33(1), 1-24.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from include.clv.errors import BoundaryFitError, ClvFitError
from include.clv.mbgnbd import ModifiedBetaGeoNBD
from include.clv.models import BetaGeoNBD, PurchaseModel, validate_holdout

log = logging.getLogger(__name__)

#: Candidate purchase models, in tie-break order.
PURCHASE_MODELS: tuple[type, ...] = (BetaGeoNBD, ModifiedBetaGeoNBD)
#: The ``validate_holdout`` metric the choice minimises.
SELECTION_METRIC = "holdout_mae"
#: A fit is degenerate when at least DEGENERATE_SHARE of the customers have P(alive) >= DEGENERATE_P_ALIVE.
DEGENERATE_P_ALIVE = 0.999
DEGENERATE_SHARE = 0.99


def degenerate_reason(model: PurchaseModel, summary: pd.DataFrame) -> str | None:
    """Why a fitted purchase model is degenerate on ``summary``, or ``None``.

    Degenerate: P(alive) >= :data:`DEGENERATE_P_ALIVE` for at least
    :data:`DEGENERATE_SHARE` of the customers. Such a fit says nobody has
    stopped buying, whatever their silence; it is what a likelihood without an
    interior maximum leaves behind when the optimiser stops short of the
    boundary (dropout ``a`` at 1e-5 instead of 0).
    """
    p_alive = model.p_alive(summary["frequency"], summary["recency"], summary["t"])
    share = float(np.mean(p_alive >= DEGENERATE_P_ALIVE))
    if share >= DEGENERATE_SHARE:
        return (f"{model.LABEL} is degenerate: P(alive) = 1 for {share:.0%} of customers (>= "
                f"{DEGENERATE_P_ALIVE} for {share:.1%} of {len(summary):,}; the fit sees no dropout; parameters "
                f"{ {k: float(f'{v:.4g}') for k, v in model.params().items()} })")
    return None


def fit_purchase_model(cls: type, summary: pd.DataFrame) -> PurchaseModel:
    """Fit ``cls`` on ``summary`` and check it is not degenerate there.

    Raises
    ------
    ClvFitError
        ``BoundaryFitError`` when the likelihood has no interior maximum or the
        fit is degenerate (:func:`degenerate_reason`); ``ClvFitError`` when the
        optimiser does not converge.
    ClvInputError
        When the summary cannot be fitted at all (data, not the model).
    """
    model = cls.fit(summary)
    reason = degenerate_reason(model, summary)
    if reason:
        raise BoundaryFitError(reason, reason.split(" (>=")[0])
    return model


@dataclass
class ModelChoice:
    """The outcome of :func:`choose_purchase_model`.

    Attributes
    ----------
    chosen
        ``KEY`` of the chosen model; ``None`` when no candidate gave a valid fit.
    ranking
        ``KEY`` of every valid fit, best holdout error first (the chosen one first).
    fits
        Calibration-period fit of every model that converged, by ``KEY``.
    validations
        ``(metrics, calibration table)`` of each of those fits on the holdout.
    failures
        Why a model could not be fitted, by ``KEY`` (logged, and in MLflow).
    failure_summaries
        The same in a few words (for ``clv_runs.reason`` and the report).
    """

    chosen: str | None
    ranking: list[str] = field(default_factory=list)
    fits: dict[str, PurchaseModel] = field(default_factory=dict)
    validations: dict[str, tuple[dict[str, float], pd.DataFrame]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    failure_summaries: dict[str, str] = field(default_factory=dict)

    @property
    def model_class(self) -> type:
        return model_class(self.chosen)

    def failure_text(self) -> str:
        """Why each failed candidate failed, in a few words, one clause per model."""
        return "; ".join(self.failure_summaries.get(k, v) for k, v in self.failures.items())


def model_class(key: str | None) -> type:
    """The purchase model class whose ``KEY`` is ``key``."""
    for cls in PURCHASE_MODELS:
        if cls.KEY == key:
            return cls
    raise KeyError(f"no purchase model {key!r}; known: {[c.KEY for c in PURCHASE_MODELS]}")


def choose_purchase_model(calibration: pd.DataFrame, holdout_units: float,
                          candidates: tuple[type, ...] = PURCHASE_MODELS,
                          fit_on: pd.DataFrame | None = None) -> ModelChoice:
    """Fit every candidate on ``calibration``, validate on its holdout, rank the valid ones by ``holdout_mae``.

    Parameters
    ----------
    calibration
        The calibration summary (``frequency``, ``recency``, ``t``,
        ``holdout_purchases`` per customer).
    holdout_units
        Holdout length in the summary's time unit.
    candidates
        Purchase model classes, in tie-break order.
    fit_on
        The customers to fit on (a sample of ``calibration``, see
        :func:`include.clv.models.fit_sample`); every customer of
        ``calibration`` is validated. Default: all of ``calibration``.

    Returns
    -------
    ModelChoice
        ``chosen`` is ``None`` when no candidate gave a valid fit; ``failures``
        says why each failed.

    Raises
    ------
    ClvInputError
        When the summary cannot be fitted at all (raised by the first model).
    """
    fits, validations, failures, summaries = {}, {}, {}, {}
    sample = calibration if fit_on is None else fit_on
    for cls in candidates:
        try:
            fits[cls.KEY] = fit_purchase_model(cls, sample)
        except ClvFitError as exc:  # no interior maximum, degenerate or not converged: the others may do
            failures[cls.KEY], summaries[cls.KEY] = str(exc), exc.summary
            log.warning("CLV: %s failed on the calibration period: %s", cls.LABEL, exc)
            continue
        validations[cls.KEY] = validate_holdout(fits[cls.KEY], calibration, holdout_units)
    order = [cls.KEY for cls in candidates]
    ranking = sorted(fits, key=lambda k: (validations[k][0][SELECTION_METRIC], order.index(k)))
    chosen = ranking[0] if ranking else None
    for key, (metrics, _) in validations.items():
        log.info("CLV candidate %s: holdout MAE %.4f, aggregate error %+.1f%%%s", key, metrics["holdout_mae"],
                 metrics["holdout_aggregate_error_pct"], " (chosen)" if key == chosen else "")
    return ModelChoice(chosen=chosen, ranking=ranking, fits=fits, validations=validations, failures=failures,
                       failure_summaries=summaries)
