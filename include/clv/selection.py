"""Which purchase model a run uses: BG/NBD or MBG/NBD, whichever predicts the holdout better.

Both are fitted on the calibration period and scored on the holdout that
follows it (``validate_holdout``); the one with the lower per-customer mean
absolute error of holdout purchases is chosen and refitted on the full
history. Per-customer error is the criterion because P(alive), churn risk and
CLV are per-customer figures: a model can match the aggregate count while
crediting long-silent one-time buyers with purchases they do not make. A tie
goes to BG/NBD, listed first, so CDNOW's published BG/NBD path is kept when
the data cannot tell the two apart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd

from include.clv.mbgnbd import ModifiedBetaGeoNBD
from include.clv.models import BetaGeoNBD, ClvInputError, PurchaseModel, validate_holdout

log = logging.getLogger(__name__)

#: Candidate purchase models, in tie-break order.
PURCHASE_MODELS: tuple[type, ...] = (BetaGeoNBD, ModifiedBetaGeoNBD)
#: The ``validate_holdout`` metric the choice minimises.
SELECTION_METRIC = "holdout_mae"


@dataclass
class ModelChoice:
    """The outcome of :func:`choose_purchase_model`.

    Attributes
    ----------
    chosen
        ``KEY`` of the chosen model.
    fits
        Calibration-period fit of every model that converged, by ``KEY``.
    validations
        ``(metrics, calibration table)`` of each of those fits on the holdout.
    failures
        Why a model could not be fitted, by ``KEY`` (logged, and in MLflow).
    """

    chosen: str
    fits: dict[str, PurchaseModel] = field(default_factory=dict)
    validations: dict[str, tuple[dict[str, float], pd.DataFrame]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    @property
    def model_class(self) -> type:
        return next(cls for cls in PURCHASE_MODELS if cls.KEY == self.chosen)


def choose_purchase_model(calibration: pd.DataFrame, holdout_units: float,
                          candidates: tuple[type, ...] = PURCHASE_MODELS,
                          fit_on: pd.DataFrame | None = None) -> ModelChoice:
    """Fit every candidate on ``calibration``, validate on its holdout, choose the lowest ``holdout_mae``.

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

    Raises
    ------
    ClvInputError
        When the summary cannot be fitted at all (raised by the first model), or no candidate converged.
    """
    fits, validations, failures = {}, {}, {}
    for cls in candidates:
        try:
            fits[cls.KEY] = cls.fit(calibration if fit_on is None else fit_on)
        except ClvInputError:
            raise  # the data, not the model: no other model fits it either
        except RuntimeError as exc:  # a non-converged fit; the other model may still do
            failures[cls.KEY] = str(exc)
            log.warning("CLV: %s could not be fitted on the calibration period: %s", cls.LABEL, exc)
            continue
        validations[cls.KEY] = validate_holdout(fits[cls.KEY], calibration, holdout_units)
    if not fits:
        raise ClvInputError(f"no purchase model could be fitted on clv_summary: {failures}")
    chosen = min(fits, key=lambda k: validations[k][0][SELECTION_METRIC])
    for key, (metrics, _) in validations.items():
        log.info("CLV candidate %s: holdout MAE %.4f, aggregate error %+.1f%%%s", key, metrics["holdout_mae"],
                 metrics["holdout_aggregate_error_pct"], " (chosen)" if key == chosen else "")
    return ModelChoice(chosen=chosen, fits=fits, validations=validations, failures=failures)
