"""Customer lifetime value: BG/NBD purchases x Gamma-Gamma spend, validated on a holdout.

Fitting maximises the papers' likelihoods (those of pymc-marketing's ``clv``
models, the maintained successor of lifetimes) with SciPy
(``include/clv/likelihood.py``, which says why not through pymc-marketing: its
PyTensor compilation, not the optimisation, was the stage's time, measured). With flat
priors these are the maximum-likelihood estimates pymc-marketing's
``fit(method="map")`` finds. Predictions use the closed forms below from the
fitted parameters: the same code scores a fresh fit and a registered champion
model. ``tests/clv`` checks parameters and predictions against pymc-marketing,
lifetimes (the reference) and the published CDNOW estimates.

References
----------
Fader, P. S., Hardie, B. G. S., Lee, K. L. (2005). "Counting your customers"
the easy way: an alternative to the Pareto/NBD model. Marketing Science 24(2), 275-284.
Fader, P. S., Hardie, B. G. S. (2013). The Gamma-Gamma model of monetary value.
http://www.brucehardie.com/notes/025/gamma_gamma.pdf
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd
from scipy import special

from include.clv.errors import ClvFitError, ClvInputError
from include.clv.likelihood import bgnbd_loglik, compress, gamma_gamma_loglik, maximise
from include.runtime.errors import QualityGateError
from include.runtime.settings import BY_NAME, DEFAULT_GROSS_MARGIN, assumed

log = logging.getLogger(__name__)

#: Days in a month for the CLV sum, as lifetimes counts them.
DAYS_PER_MONTH = 30.0


def _check_columns(data: pd.DataFrame, required: list[str], where: str) -> None:
    missing = [c for c in required if c not in data.columns]
    if missing:
        raise ClvInputError(f"{where}: missing column(s) {', '.join(missing)}")
    bad = data[required].select_dtypes("number")
    if bad.isna().any().any():
        raise ClvInputError(f"{where}: NaN in {', '.join(bad.columns[bad.isna().any()])}")
    if (bad < 0).any().any():
        raise ClvInputError(f"{where}: negative values in {', '.join(bad.columns[(bad < 0).any()])}")


class PurchaseModel(Protocol):
    """A fitted repeat-purchase model: BG/NBD here, MBG/NBD in ``include/clv/mbgnbd.py``."""

    KEY: str
    LABEL: str

    def params(self) -> dict[str, float]: ...

    def p_alive(self, frequency, recency, t) -> np.ndarray: ...

    def expected_purchases(self, frequency, recency, t, horizon) -> np.ndarray: ...


@dataclass
class BetaGeoNBD:
    """BG/NBD model of repeat purchases (Fader, Hardie & Lee 2005).

    Parameters
    ----------
    r, alpha : float
        Gamma heterogeneity of the purchase rate.
    a, b : float
        Beta heterogeneity of the dropout probability.
    """

    r: float = np.nan
    alpha: float = np.nan
    a: float = np.nan
    b: float = np.nan

    REQUIRED = ["frequency", "recency", "t"]
    #: Short name used in MLflow metric prefixes and the pyfunc ``kind``.
    KEY = "bgnbd"
    #: Name stored with each ``customer_clv`` row (column ``clv_model``).
    LABEL = "BG/NBD"

    @classmethod
    def model_input(cls, summary: pd.DataFrame, where: str) -> list[np.ndarray]:
        """Check a frequency/recency/t summary; return ``[x, t_x, T]`` as float arrays."""
        _check_columns(summary, cls.REQUIRED, where)
        late = summary["recency"] > summary["t"] + 1e-9
        if late.any():
            key = f", e.g. customer_key={summary.loc[late, 'customer_key'].iloc[0]!r}" if "customer_key" in summary else ""
            raise ClvInputError(f"{where}: recency greater than t for {int(late.sum())} customer(s){key}")
        if len(summary) < 10 or (summary["frequency"] > 0).sum() < 2:
            raise ClvInputError(f"{where}: needs at least 10 customers, 2 of them with repeat purchases")
        return [summary[c].to_numpy(dtype=float) for c in ("frequency", "recency", "t")]

    @classmethod
    def fit(cls, summary: pd.DataFrame) -> BetaGeoNBD:
        """Maximum-likelihood fit (flat priors: what pymc-marketing's ``BetaGeoModel`` MAP finds).

        ``summary`` has ``frequency``, ``recency`` and ``t`` per customer, with
        ``recency <= t``.

        Raises
        ------
        ClvInputError
            When the summary cannot be fitted (columns, values, too few repeat buyers).
        ClvFitError
            When the likelihood has no interior maximum (``BoundaryFitError``) or the
            optimiser does not converge (see :func:`include.clv.likelihood.maximise`).
        """
        data, weights = compress(cls.model_input(summary, "BG/NBD summary"))
        return cls(**maximise(bgnbd_loglik, ("r", "alpha", "a", "b"), data, weights, cls.LABEL).params)

    def params(self) -> dict[str, float]:
        return {"r": self.r, "alpha": self.alpha, "a": self.a, "b": self.b}

    def _odds_dead(self, x, tx, T):
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            odds = (self.a / (self.b + x - 1)) * ((self.alpha + T) / (self.alpha + tx)) ** (self.r + x)
        return np.where(x > 0, odds, 0.0)

    def p_alive(self, frequency, recency, t) -> np.ndarray:
        """P(customer still active | x, t_x, T) (Fader et al. 2005, eq. 12)."""
        x, tx, T = (np.asarray(v, dtype=float) for v in (frequency, recency, t))
        return 1.0 / (1.0 + self._odds_dead(x, tx, T))

    def expected_purchases(self, frequency, recency, t, horizon) -> np.ndarray:
        """E[purchases in (T, T + horizon] | x, t_x, T] (Fader et al. 2005, eq. 10)."""
        x, tx, T = (np.asarray(v, dtype=float) for v in (frequency, recency, t))
        h = np.asarray(horizon, dtype=float)
        a, b, r, alpha = self.a, self.b, self.r, self.alpha
        with np.errstate(over="ignore", invalid="ignore"):
            hyp = special.hyp2f1(r + x, b + x, a + b + x - 1, h / (alpha + T + h))
            numerator = (a + b + x - 1) / (a - 1) * (1 - ((alpha + T) / (alpha + T + h)) ** (r + x) * hyp)
        out = numerator / (1.0 + self._odds_dead(x, tx, T))
        return np.clip(np.nan_to_num(out, nan=0.0, posinf=0.0), 0.0, None)


@dataclass
class GammaGammaSpend:
    """Gamma-Gamma model of the mean transaction value (Fader & Hardie 2013).

    Parameters
    ----------
    p, q, v : float
        Shape of the per-transaction spend, and the gamma mixing of its scale.
    """

    p: float = np.nan
    q: float = np.nan
    v: float = np.nan

    @classmethod
    def fit(cls, summary: pd.DataFrame) -> tuple[GammaGammaSpend, dict[str, float]]:
        """Fit on repeat customers with positive spend; return the model and input counts.

        Customers without repeat purchases or with zero mean spend are left out
        (the model is defined for positive spends only) and counted. The
        estimates maximise the likelihood of pymc-marketing's ``GammaGammaModel``
        (flat priors).
        """
        _check_columns(summary, ["frequency", "monetary_value"], "Gamma-Gamma summary")
        usable = summary[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
        counts = {
            "gg_customers": float(len(usable)),
            "gg_excluded_no_repeat": float((summary["frequency"] == 0).sum()),
            "gg_excluded_zero_spend": float(((summary["frequency"] > 0) & (summary["monetary_value"] <= 0)).sum()),
        }
        if len(usable) < 10:
            raise ClvInputError(f"Gamma-Gamma needs at least 10 repeat customers with positive spend, got {len(usable)}")
        data = [usable["frequency"].to_numpy(dtype=float), usable["monetary_value"].to_numpy(dtype=float)]
        params = maximise(gamma_gamma_loglik, ("p", "q", "v"), data, np.ones(len(usable)), "Gamma-Gamma").params
        if params["q"] <= 1:
            raise ClvFitError(f"Gamma-Gamma q={params['q']:.3f} <= 1 on clv_summary.monetary_value: mean spend "
                              "undefined; model rejected", "Gamma-Gamma q <= 1 (the mean spend is undefined)")
        return cls(**params), counts

    def params(self) -> dict[str, float]:
        return {"p": self.p, "q": self.q, "v": self.v}

    def expected_spend(self, frequency, monetary_value) -> np.ndarray:
        """E[mean transaction value | x, m] (Fader & Hardie 2013, eq. 5)."""
        x = np.asarray(frequency, dtype=float)
        m = np.asarray(monetary_value, dtype=float)
        weight = self.p * x / (self.p * x + self.q - 1)
        population_mean = self.v * self.p / (self.q - 1)
        return (1 - weight) * population_mean + weight * m


def customer_lifetime_value(bg: PurchaseModel, spend: np.ndarray, summary: pd.DataFrame, months: int,
                            unit_days: float, monthly_discount: float, margin: float) -> np.ndarray:
    """Discounted margin over ``months``: sum of monthly expected purchases x spend x margin / (1+d)^m.

    The monthly sum follows lifetimes' ``customer_lifetime_value`` (30-day months).
    """
    clv, _ = _clv_at_months(bg, spend, summary, (months,), unit_days, monthly_discount, margin)
    return clv[months]


def _clv_at_months(bg: PurchaseModel, spend: np.ndarray, summary: pd.DataFrame, checkpoints: tuple[int, ...],
                   unit_days: float, monthly_discount: float,
                   margin: float) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """CLV and cumulative expected purchases after each month in ``checkpoints``, from one monthly sum.

    The 90-day CLV is the first 3 months of the 365-day sum, so one pass of
    12 closed-form evaluations serves both (the hypergeometric function is
    most of the scoring time).
    """
    x, tx, T = summary["frequency"].to_numpy(), summary["recency"].to_numpy(), summary["t"].to_numpy()
    total = np.zeros(len(summary))
    previous = np.zeros(len(summary))
    clv, purchases = {}, {}
    for m in range(1, max(checkpoints) + 1):
        current = bg.expected_purchases(x, tx, T, m * DAYS_PER_MONTH / unit_days)
        total += (current - previous) * spend / (1 + monthly_discount) ** m
        previous = current
        if m in checkpoints:
            clv[m], purchases[m] = np.clip(total * margin, 0.0, None), current
    return clv, purchases


def poisson_band(expected: np.ndarray, value_per_purchase: np.ndarray, low: float = 0.1,
                 high: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """An approximate 80% band for a CLV: Poisson quantiles of the purchase count x value per purchase.

    This ignores parameter uncertainty (MAP point estimates) and spend
    variance, so it understates the width; it is a documented approximation
    meant to show the report how sure a segment's CLV is.
    """
    mean = np.maximum(expected, 1e-12)
    return _poisson_quantile(low, mean) * value_per_purchase, _poisson_quantile(high, mean) * value_per_purchase


def _poisson_quantile(q: float, mean: np.ndarray) -> np.ndarray:
    """``scipy.stats.poisson.ppf(q, mean)``, computed as SciPy computes it (``poisson._ppf``).

    Written out with ``scipy.special`` because importing ``scipy.stats`` costs
    ``fit_clv`` about 0.7 CPU-s, a sixth of the stage at 5,000 customers
    (measured); ``tests/clv`` checks equality with ``scipy.stats``.
    """
    upper = np.ceil(special.pdtrik(q, mean))
    lower = np.maximum(upper - 1, 0)
    return np.where(special.pdtr(lower, mean) >= q, lower, upper)


def validate_holdout(bg: PurchaseModel, calibration: pd.DataFrame, holdout_units: float) -> tuple[dict, pd.DataFrame]:
    """Predicted vs actual holdout purchases: aggregate % error, MAE, correlation, and the calibration table.

    The calibration table bins customers by calibration frequency (0..6, 7+)
    and compares mean actual and predicted holdout purchases per bin.
    """
    predicted = bg.expected_purchases(calibration["frequency"], calibration["recency"], calibration["t"], holdout_units)
    actual = calibration["holdout_purchases"].to_numpy(dtype=float)
    metrics = {
        "holdout_actual_purchases": float(actual.sum()),
        "holdout_predicted_purchases": float(predicted.sum()),
        "holdout_aggregate_error_pct": float(100 * (predicted.sum() - actual.sum()) / max(actual.sum(), 1e-9)),
        "holdout_mae": float(np.abs(predicted - actual).mean()),
        "holdout_correlation": float(np.corrcoef(predicted, actual)[0, 1]) if actual.std() > 0 else float("nan"),
    }
    bins = np.minimum(calibration["frequency"].to_numpy(dtype=int), 7)
    table = pd.DataFrame({"calibration_frequency": bins, "actual": actual, "predicted": predicted}).groupby(
        "calibration_frequency").agg(customers=("actual", "size"), actual=("actual", "mean"),
                                     predicted=("predicted", "mean")).reset_index()
    return metrics, table


def calibration_plot(table: pd.DataFrame, path: str, model_label: str = "BG/NBD") -> None:
    """Actual vs predicted mean holdout purchases by calibration frequency (PNG)."""
    # The object API without pyplot: pyplot's import (backends, state) is half the plot's cost.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    labels = [f"{int(f)}{'+' if f == 7 else ''}" for f in table["calibration_frequency"]]
    ax.plot(labels, table["actual"], marker="o", label="actual")
    ax.plot(labels, table["predicted"], marker="s", label=f"{model_label} predicted")
    ax.set_xlabel("repeat purchases in calibration period")
    ax.set_ylabel("mean purchases in holdout")
    ax.set_title(f"{model_label} holdout calibration")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _default(name: str):
    """The declared default of run setting ``name`` (``include/runtime/settings.py``: each default once)."""
    return BY_NAME[name].default


@dataclass
class ClvSettings:
    """CLV stage settings (DAG params ``clv_*``, ``gross_margin``, ``annual_discount_rate``, ``seed``).

    Defaults are the run settings' declared defaults. ``gross_margin_assumed``:
    the margin is the default, not the business's figure (stated wherever a CLV
    figure is shown); when not given, whether ``gross_margin`` is the default.
    """

    unit_days: int = _default("clv_unit_days")
    holdout_days: int = _default("clv_holdout_days")
    gross_margin: float = DEFAULT_GROSS_MARGIN
    annual_discount_rate: float = _default("annual_discount_rate")
    independence_warn: float = 0.3
    max_holdout_error_pct: float = _default("clv_max_holdout_error_pct")
    min_gini: float = _default("clv_min_gini")
    fit_sample_size: int = _default("clv_fit_sample_size")
    seed: int = _default("seed")
    gross_margin_assumed: bool | None = None

    def __post_init__(self) -> None:
        if self.gross_margin_assumed is None:  # not said: assumed exactly when it is the default
            self.gross_margin_assumed = self.gross_margin == DEFAULT_GROSS_MARGIN

    @classmethod
    def from_run_settings(cls, settings) -> ClvSettings:
        """The CLV settings of a run (:class:`include.runtime.settings.PipelineSettings`)."""
        return cls(unit_days=settings.clv_unit_days, holdout_days=settings.clv_holdout_days,
                   gross_margin=settings.gross_margin, annual_discount_rate=settings.annual_discount_rate,
                   max_holdout_error_pct=settings.clv_max_holdout_error_pct, min_gini=settings.clv_min_gini,
                   fit_sample_size=settings.clv_fit_sample_size, seed=settings.seed,
                   gross_margin_assumed=assumed(settings, "gross_margin"))

    @property
    def monthly_discount(self) -> float:
        return (1 + self.annual_discount_rate) ** (1 / 12) - 1

    @property
    def holdout_units(self) -> float:
        """The holdout in the summaries' time unit."""
        return self.holdout_days / self.unit_days


def build_clv_summary(wh, as_of_date, settings: ClvSettings) -> None:
    """Write the full-period and calibration-period summaries of ``as_of_date`` (``sql/clv_summary.sql``, one pass)."""
    import datetime as dt

    calib_end = as_of_date - dt.timedelta(days=settings.holdout_days)
    wh.run_sql_file("clv_summary.sql", {"as_of_date": as_of_date, "obs_end": calib_end,
                                        "unit_days": settings.unit_days})


def fit_sample(summary: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """The customers the models are fitted on: all up to ``size``, else the ``size`` with the smallest seeded key hash.

    The models have 4 + 3 population parameters; a sample of 50,000 estimates
    them to within a fraction of a percent of the full fit (docs/scaling.md)
    at a tenth of the cost at 480,000 customers. A customer is drawn or not by
    the hash of its ``customer_key`` and the seed alone, so the sample of a date
    depends only on that date's customers (any run order gives the same fit),
    and the full-period and calibration samples hold the same customers.
    Rows keep their order.
    """
    if len(summary) <= size:
        return summary
    hashes = pd.util.hash_array(summary["customer_key"].to_numpy(dtype=object), hash_key=f"{seed % 10**16:016d}")
    return summary.iloc[np.sort(np.argpartition(hashes, size - 1)[:size])]


def score_customers(bg: PurchaseModel, gg: GammaGammaSpend, summary: pd.DataFrame,
                    settings: ClvSettings) -> pd.DataFrame:
    """Per-customer P(alive), expected purchases (90/365 days), order value, CLV and its band.

    ``bg`` is the run's purchase model (BG/NBD or MBG/NBD); its ``LABEL`` goes
    in the ``clv_model`` column.
    """
    x, tx, T = summary["frequency"], summary["recency"], summary["t"]
    spend = gg.expected_spend(x, summary["monetary_value"])
    clv, purchases = _clv_at_months(bg, spend, summary, (3, 12), settings.unit_days, settings.monthly_discount,
                                    settings.gross_margin)
    clv90, clv365 = clv[3], clv[12]
    e90 = purchases[3]  # 3 months of 30 days = 90 days
    e365 = bg.expected_purchases(x, tx, T, 365 / settings.unit_days)
    per_purchase = np.divide(clv365, e365, out=np.zeros_like(clv365), where=e365 > 0)
    low, high = poisson_band(e365, per_purchase)
    out = pd.DataFrame({
        "customer_key": summary["customer_key"].to_numpy(),
        "p_alive": bg.p_alive(x, tx, T), "expected_purchases_90d": e90, "expected_purchases_365d": e365,
        "expected_order_value": spend, "clv_90d": clv90, "clv_365d": clv365,
        "clv_365d_low": low, "clv_365d_high": np.maximum(high, clv365),
    })
    numeric = out.drop(columns="customer_key")
    if numeric.isna().any().any() or (numeric < 0).any().any():
        raise QualityGateError("CLV scoring produced NaN or negative values; refusing to write them")
    out["clv_model"] = bg.LABEL
    return out


def independence_check(summary: pd.DataFrame, threshold: float) -> float:
    """Pearson correlation of frequency and mean spend among repeat customers (Gamma-Gamma assumes ~0)."""
    rep = summary[summary["frequency"] > 0]
    if len(rep) < 3 or rep["monetary_value"].std() == 0:
        return 0.0
    corr = float(np.corrcoef(rep["frequency"], rep["monetary_value"])[0, 1])
    if abs(corr) > threshold:
        log.warning("Gamma-Gamma independence assumption questionable: corr(frequency, spend)=%.2f > %.2f",
                    corr, threshold)
    return corr


#: What a segment's name promises about its CLV rank among segments.
#: What a segment's value standing (include/segmentation/naming.py) claims about its CLV:
#: "top" = among the two highest-CLV segments, "upper" = at or above the median, "lower" = at or below it.
VALUE_EXPECTATIONS: dict[str, str] = {"top": "top", "high": "upper", "low": "lower"}
#: The same for names written before names carried a value standing (older warehouse rows).
NAME_EXPECTATIONS: dict[str, str] = {
    "High-value core": "top",
    "Big spenders": "upper",
    "Loyal potential": "upper",
    "Hibernating": "lower",
    "Costly tail": "lower",
}


def crosscheck_segments(profiles: pd.DataFrame, clv: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """Compare the segments' value order (mean 365-day revenue) with their mean CLV.

    A segment's value claim is its ``value_standing`` where the profiles
    carry one (else its name, through :data:`NAME_EXPECTATIONS`). Returns one
    row per segment (ranks, CLV, ``flag`` and ``reason`` where CLV
    contradicts the claim: a "top" claim outside the two highest-CLV
    segments, an "upper" claim below the median, a "lower" one above it) and
    the Spearman rank correlation of the two orders.
    """
    df = profiles.merge(clv, on="segment_id", how="left").fillna({"mean_clv_365d": 0.0, "total_clv_365d": 0.0})
    df["value_rank"] = df["monetary"].rank(ascending=False, method="first").astype(int)
    df["clv_rank"] = df["mean_clv_365d"].rank(ascending=False, method="first").astype(int)
    median = df["mean_clv_365d"].median()
    # Both are ranks without ties, so Spearman's rho is their Pearson correlation (no scipy.stats import).
    spearman = float(np.corrcoef(df["value_rank"], df["clv_rank"])[0, 1]) if len(df) > 2 else 1.0
    has_standing = "value_standing" in df.columns
    flags, reasons = [], []
    for r in df.itertuples():
        standing = getattr(r, "value_standing", None) if has_standing else None
        if isinstance(standing, str):
            expectation = VALUE_EXPECTATIONS.get(standing)
        else:
            expectation = NAME_EXPECTATIONS.get(str(r.segment_name).rstrip(" 0123456789"))
        reason = None
        claim = f"value standing '{standing}'" if isinstance(standing, str) else "name"
        if expectation == "top" and r.clv_rank > 2:
            reason = (f"{claim} says top value but the segment ranks {r.clv_rank} of {len(df)} by mean CLV "
                      f"({r.mean_clv_365d:,.0f})")
        elif expectation == "upper" and r.mean_clv_365d < median:
            reason = (f"{claim} says valuable but mean CLV {r.mean_clv_365d:,.0f} is below the segments' median "
                      f"{median:,.0f}")
        elif expectation == "lower" and r.mean_clv_365d > median:
            reason = (f"{claim} says low value but mean CLV {r.mean_clv_365d:,.0f} is above the segments' median "
                      f"{median:,.0f}")
        flags.append(reason is not None)
        reasons.append(reason)
    df["flag"], df["reason"] = flags, reasons
    cols = ["segment_id", "segment_name", "customers", "value_rank", "clv_rank", "mean_clv_365d", "total_clv_365d",
            "mean_clv_365d_low", "mean_clv_365d_high", "mean_p_alive", "flag", "reason"]
    return df[cols].sort_values("segment_id").reset_index(drop=True), spearman
