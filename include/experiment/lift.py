"""Treated-vs-holdout lift per segment with 95% intervals and the minimum detectable effect.

One row per customer and window (the caller's outcome frame), so customers
are independent observations and no clustering is needed. For each segment
and outcome the lift is the difference of the arm means, treated minus
holdout, with the two-sample Student t interval on the pooled variance:
``lift +- t * s_p * sqrt(1/n_t + 1/n_h)``, ``t`` the 97.5% quantile with
``n_t + n_h - 2`` degrees of freedom (SciPy). Pooled, not Welch's unpooled
variance: a 10% holdout of a small segment has a few dozen customers, and
the variance of a skewed money outcome estimated from so few is often far
too small (no big spender drew into the arm), which made Welch intervals
exclude 0 in 12.8% of no-effect holdout redraws against 5.9% pooled (shop-like
synthetic outcomes with 10-40 holdout customers per segment,
``tests/experiment/test_lift_recovery.py``; under no effect both arms have
one distribution, which is what the pooled variance assumes). For the 0/1
retention outcome, where Welch's interval (standard error
``sqrt(s_t^2/n_t + s_h^2/n_h)``, Welch–Satterthwaite degrees of freedom) is
wider, it is used instead: a rate's variance follows its level, so a
playbook that keeps the treated buying narrows their spread for real, and the
pooled variance, dominated by the large treated arm, understates the small
holdout's. On the pipeline's own segments at 10,000 persons the pooled
interval alone covered the top segment's planted retention effect in 3 of 8
runs. For money outcomes the larger of the two was too wide (0.2-0.9% of
no-effect redraws excluded 0 in the calibration test), so they stay pooled.

Every outcome is CUPED-adjusted (Deng, Xu, Kohavi & Walker 2013) when a
pre-policy covariate is given (``<metric>_pre``: the same money outcome over
the equally long window before the policy, or for retention the customer's
orders in the retention base window): ``y - theta * (x - mean x)`` with
``theta = cov(y, x) / var(x)`` over both arms. Randomisation makes ``x``
independent of the arm, so the adjusted difference estimates the same lift,
with the variance ``x`` explains removed and chance pre-existing differences
between the arms corrected. The means reported are the raw arm means; the
lift and its interval are the adjusted ones.

For the 0/1 retention outcome, when every customer of both arms has the
same value (all retained) there is no variance to estimate from; then the
interval is Agresti and Caffo's (2000) on the raw values (one success and one
failure added to each arm), never a zero-width one. The relative lift
``lift / mean_h`` gets a delta-method interval. An arm with fewer than two
customers gives no interval (NaN), and so does a money outcome that too few
customers have at all: fewer than ``MIN_EXPECTED_NONZERO`` (5) customers with
a non-zero value expected in the smaller arm (the share non-zero over both
arms times the arm's size; the "n p >= 5" rule for a normal approximation,
applied to the count of buyers or support contacts the mean turns on). On the
pipeline's own segments at 10,000 persons, the lapsed segment's first week
had 2 buyers among 1,610 customers; the simultaneous interval of its revenue
excluded 0 in 6.5% of no-effect holdout redraws where it promises 0.8%.

``mde`` is the minimum detectable effect: the true lift this comparison finds
(interval excluding 0) with 80% power, ``(t_0.975 + z_0.80) * se``. A planted
or hoped-for effect below it will mostly be missed: report it, do not read
"interval includes 0" as "no effect".

Simultaneous intervals (``simultaneous_low``, ``simultaneous_high``,
``family_size``). A run asks of every outcome "which segments did the policy
change?", and reads all of the segments' intervals at once. Each 95% interval
on its own excludes 0 in 5% of no-effect cells, so with ~6 segments a run
shows, about every third outcome, a segment "changed" by chance. The
simultaneous interval is the same interval (same centre, standard error,
degrees of freedom and pooled / Welch / Agresti-Caffo choice) at level
``1 - 0.05 / m``, ``m`` the number of segments with an interval for that
outcome this run (Bonferroni's adjustment as Dunn 1961 applied it to
confidence intervals: "Multiple comparisons among means", JASA 56, 52-64).
All ``m`` of them cover their true lifts together with probability at least
95% whatever the dependence between them, so "the interval excludes 0" can be
read for every segment at once: that is the one the report decides "changed"
by. Bonferroni rather than a sharper method: the cells are independent
comparisons on disjoint customers, where Šidák's ``1 - 0.95^(1/m)`` is
exact, but it narrows the interval by under 0.5% at ``m = 6``), the intervals
mix pooled t, Welch t and Agresti-Caffo, so no single joint distribution
(Tukey, Dunnett, max-t) fits them, and the widening ``t_(1-0.025/m) / t_0.975``
(1.35 at ``m = 6`` with many degrees of freedom) is easy to state.

The family is one run's segments for one outcome, not the run's every cell,
and not the runs over time: each outcome is its own question with its own
owner (service cost is read by operations, retention by the account team),
revenue and profit of the same customers are nearly the same test, so a
family across outcomes would widen every interval for comparisons that are
not separate looks; the weekly runs re-estimate one growing comparison of the
same customers, a sequential question an adjustment across runs would not
answer either. The per-segment interval and the MDE (both at 95%) stay
beside it, for a reader who asks about one segment chosen in advance.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

# scipy.special, not scipy.stats: the quantiles are the functions scipy.stats' t.ppf and norm.ppf call
# (the same values, NaN for df <= 0 too), and importing scipy.stats costs a task 1-5 s.
from scipy import special

log = logging.getLogger(__name__)

#: Outcomes compared per customer (columns of the ``customer_outcomes`` read), in report order.
METRICS = ("retention", "revenue", "cost_to_serve", "profit")
#: Outcomes that are 0/1 per customer.
BINARY = ("retention",)
LIFT_COLUMNS = ("segment_id", "segment_name", "metric", "n_treated", "n_holdout", "treated_mean", "holdout_mean",
                "lift", "ci_low", "ci_high", "simultaneous_low", "simultaneous_high", "family_size",
                "relative_lift", "relative_ci_low", "relative_ci_high", "mde")
#: Power the minimum detectable effect is computed for.
POWER = 0.80
#: A money outcome gets an interval only when the smaller arm is expected to hold at least this many customers
#: with a non-zero value (the share non-zero over both arms times its size): the textbook "n p >= 5" condition
#: for a normal approximation, here of the count of buyers (or contacts) that the mean turns on.
MIN_EXPECTED_NONZERO = 5


def difference_interval(treated: np.ndarray, holdout: np.ndarray, level: float = 0.95, binary: bool = False,
                        treated_adjusted: np.ndarray | None = None,
                        holdout_adjusted: np.ndarray | None = None) -> dict[str, float]:
    """Means, difference, its interval and the minimum detectable effect for two independent samples.

    NaN values are dropped. ``treated_adjusted`` / ``holdout_adjusted``: the
    CUPED-adjusted values of the same customers (same positions); the lift
    and interval come from them when given, the means from the raw values.
    ``binary``: the values are 0/1 (no variance in either arm then gets the
    Agresti-Caffo interval instead of none).

    Returns ``n_treated``, ``n_holdout``, ``treated_mean``, ``holdout_mean``,
    ``lift``, ``ci_low``, ``ci_high``, ``relative_lift``, ``relative_ci_low``,
    ``relative_ci_high``, ``mde``, and for :func:`simultaneous_intervals`
    (not stored) ``centre`` (the interval's centre: the lift, or
    Agresti-Caffo's difference), ``se`` and ``df`` (its degrees of freedom).
    """
    t_raw = np.asarray(treated, dtype=float)
    h_raw = np.asarray(holdout, dtype=float)
    t_adj = t_raw if treated_adjusted is None else np.asarray(treated_adjusted, dtype=float)
    h_adj = h_raw if holdout_adjusted is None else np.asarray(holdout_adjusted, dtype=float)
    keep_t, keep_h = ~np.isnan(t_raw) & ~np.isnan(t_adj), ~np.isnan(h_raw) & ~np.isnan(h_adj)
    t, h, ta, ha = t_raw[keep_t], h_raw[keep_h], t_adj[keep_t], h_adj[keep_h]
    nt, nh = len(t), len(h)
    out = {"n_treated": nt, "n_holdout": nh, "treated_mean": float(t.mean()) if nt else np.nan,
           "holdout_mean": float(h.mean()) if nh else np.nan}
    out["lift"] = float(ta.mean() - ha.mean()) if nt and nh else np.nan
    out.update(ci_low=np.nan, ci_high=np.nan, relative_lift=np.nan, relative_ci_low=np.nan, relative_ci_high=np.nan,
               mde=np.nan, centre=np.nan, se=np.nan, df=np.nan)
    if nt < 2 or nh < 2:
        return out
    if not binary and np.count_nonzero(np.concatenate([t, h])) * min(nt, nh) / (nt + nh) < MIN_EXPECTED_NONZERO:
        # Too few customers with a non-zero outcome (a week's revenue of lapsed buyers, support contacts in a
        # small segment): the mean difference then turns on where a handful of them fell, not on a normal
        # approximation, and an interval would exclude 0 by chance far more often than it says.
        return out
    var_t, var_hold = float(ta.var(ddof=1)), float(ha.var(ddof=1))
    pooled = ((nt - 1) * var_t + (nh - 1) * var_hold) / (nt + nh - 2)
    centre, se, df = out["lift"], np.sqrt(pooled * (1 / nt + 1 / nh)), nt + nh - 2
    var_h = pooled / nh
    welch_se = np.sqrt(var_t / nt + var_hold / nh)
    if binary and welch_se > se:
        # A rate's variance follows its level, so arms at different rates differ in spread for real (the
        # playbook kept the treated buying): the pooled variance, dominated by the large treated arm,
        # understates the small holdout's and the interval would be too narrow; take Welch's. Not for money
        # outcomes: there a small holdout's variance is mostly noise from a few large spenders.
        df = (var_t / nt + var_hold / nh) ** 2 / ((var_t / nt) ** 2 / (nt - 1) + (var_hold / nh) ** 2 / (nh - 1))
        se, var_h = welch_se, var_hold / nh
    if binary and not se > 0:
        # Agresti-Caffo: a rate of 0% or 100% in both arms must not give a zero-width interval.
        pt, ph = (t.sum() + 1) / (nt + 2), (h.sum() + 1) / (nh + 2)
        centre, se = pt - ph, np.sqrt(pt * (1 - pt) / (nt + 2) + ph * (1 - ph) / (nh + 2))
        var_h = ph * (1 - ph) / (nh + 2)
    if not se > 0:
        return out
    q = float(special.stdtrit(df, 0.5 + level / 2))
    out.update(centre=float(centre), se=float(se), df=float(df))
    out["ci_low"], out["ci_high"] = centre - q * se, centre + q * se
    if binary:  # a difference of two rates lies in [-1, 1]; clipping there loses no coverage
        out["ci_low"], out["ci_high"] = float(max(out["ci_low"], -1.0)), float(min(out["ci_high"], 1.0))
    out["mde"] = (q + float(special.ndtri(POWER))) * se
    mh = out["holdout_mean"]
    if mh != 0:
        out["relative_lift"] = out["lift"] / mh
        # Delta method for lift / mean_h, the holdout mean's own error included.
        rel_se = np.sqrt(se**2 / mh**2 + var_h * out["lift"] ** 2 / mh**4)
        if rel_se > 0:
            out["relative_ci_low"] = out["relative_lift"] - q * rel_se
            out["relative_ci_high"] = out["relative_lift"] + q * rel_se
    return out


def cuped(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``y`` adjusted for the pre-period covariate ``x`` (unchanged when ``x`` has no variance)."""
    y, x = np.asarray(y, dtype=float), np.asarray(x, dtype=float)
    ok = ~np.isnan(y) & ~np.isnan(x)
    if ok.sum() < 3 or np.var(x[ok]) == 0:
        return y
    theta = np.cov(y[ok], x[ok])[0, 1] / np.var(x[ok], ddof=1)
    return np.where(ok, y - theta * (x - x[ok].mean()), y)


def segment_lift(outcomes: pd.DataFrame, metrics: tuple[str, ...] = METRICS, level: float = 0.95) -> pd.DataFrame:
    """Lift of every metric in every segment.

    Parameters
    ----------
    outcomes
        One row per customer: ``segment_id``, ``segment_name``, ``holdout``
        (bool), one column per metric (``retention`` is NaN outside the
        retention base; a metric that is entirely NaN, such as cost when no
        cost data exist, is left out) and optionally its pre-policy covariate
        ``<metric>_pre`` for the CUPED adjustment.
    """
    missing = [c for c in ("segment_id", "segment_name", "holdout") if c not in outcomes.columns]
    if missing:
        raise ValueError(f"customer outcomes lack column(s) {missing}")
    rows = []
    for (segment_id, segment_name), group in outcomes.groupby(["segment_id", "segment_name"], sort=True):
        arm = group["holdout"].astype(bool).to_numpy()
        for metric in metrics:
            if metric not in group.columns or group[metric].isna().all():
                continue
            values = group[metric].to_numpy(dtype=float)
            adjusted = values
            if f"{metric}_pre" in group.columns:
                adjusted = cuped(values, group[f"{metric}_pre"].to_numpy(dtype=float))
            rows.append({"segment_id": int(segment_id), "segment_name": str(segment_name), "metric": metric,
                         **difference_interval(values[~arm], values[arm], level, binary=metric in BINARY,
                                               treated_adjusted=adjusted[~arm], holdout_adjusted=adjusted[arm])})
    lift = simultaneous_intervals(pd.DataFrame(rows, columns=[*LIFT_COLUMNS, "centre", "se", "df"]), level)
    unmeasured = lift[lift["ci_low"].isna()]
    if len(unmeasured):
        log.warning("lift: no interval for %d of %d segment x outcome cells (an arm under 2 customers, no variance, "
                    "or fewer than %d customers with a non-zero value expected in the smaller arm): %s",
                    len(unmeasured), len(lift), MIN_EXPECTED_NONZERO,
                    ", ".join(f"segment {r.segment_id} {r.metric}" for r in unmeasured.itertuples()))
    return lift[list(LIFT_COLUMNS)]


def simultaneous_intervals(cells: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Add the Bonferroni-simultaneous interval of every cell, the family being one outcome's cells.

    Parameters
    ----------
    cells
        One row per segment and outcome of one run, with ``metric`` and the
        ``centre``, ``se`` and ``df`` of :func:`difference_interval`. A cell
        without an interval (``se`` NaN: an arm with fewer than two
        customers, or no variance) is not in the family.

    Returns
    -------
    pandas.DataFrame
        ``cells`` with ``family_size`` (``m``, the outcome's cells with an
        interval) and ``simultaneous_low`` / ``simultaneous_high``, the
        interval at level ``1 - (1 - level) / m``: equal to the per-segment
        one when ``m = 1``, NaN where the cell has none.
    """
    out = cells.copy()
    measured = out["se"].notna()
    m = measured.groupby(out["metric"]).transform("sum").astype(int)
    out["family_size"] = m.where(measured, 0)
    q = pd.Series(np.nan, index=out.index)
    if measured.any():
        alpha = (1 - level) / m[measured].to_numpy(dtype=float)
        q[measured] = special.stdtrit(out.loc[measured, "df"].to_numpy(dtype=float), 1 - alpha / 2)
    out["simultaneous_low"] = out["centre"] - q * out["se"]
    out["simultaneous_high"] = out["centre"] + q * out["se"]
    rate = out["metric"].isin(BINARY)  # as in difference_interval: a difference of rates lies in [-1, 1]
    out.loc[rate, "simultaneous_low"] = out.loc[rate, "simultaneous_low"].clip(lower=-1.0)
    out.loc[rate, "simultaneous_high"] = out.loc[rate, "simultaneous_high"].clip(upper=1.0)
    return out
