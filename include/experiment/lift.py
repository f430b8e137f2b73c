"""Treated-vs-holdout lift per segment with normal-approximation 95% intervals.

For each segment and outcome the lift is the difference of the arm means,
treated minus holdout, with Welch's standard error
``sqrt(var_t / n_t + var_h / n_h)`` and the interval ``lift +- z * se``
(``z`` = the 97.5% normal quantile from SciPy). For the 0/1 retention outcome
the interval is Agresti and Caffo's (2000): the Wald interval after adding
one success and one failure to each arm, which keeps its coverage near 95%
for small arms and rates near 0 or 1 (where the plain Wald interval collapses
to zero width); the lift reported is still the raw difference. The relative lift
``mean_t / mean_h - 1`` gets a delta-method interval. An arm with fewer than
two customers, or no variance in either arm, gives no interval (NaN), never
a zero-width one.

Money outcomes are CUPED-adjusted (Deng, Xu, Kohavi & Walker 2013) when the
customer's same outcome over the equally long window before the policy
started is given (``<metric>_pre``): ``y - theta * (x - mean x)`` with
``theta = cov(y, x) / var(x)`` over both arms. Randomisation makes ``x``
independent of the arm, so the adjusted difference estimates the same lift,
with the variance ``x`` explains removed and chance pre-existing differences
between the arms corrected. The means reported are the adjusted ones.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

#: Outcomes compared per customer (columns of the ``customer_outcomes`` read), in report order.
METRICS = ("retention", "revenue", "cost_to_serve", "profit")
#: Outcomes that are 0/1 per customer.
BINARY = ("retention",)
LIFT_COLUMNS = ("segment_id", "segment_name", "metric", "n_treated", "n_holdout", "treated_mean", "holdout_mean",
                "lift", "ci_low", "ci_high", "relative_lift", "relative_ci_low", "relative_ci_high")


def difference_interval(treated: np.ndarray, holdout: np.ndarray, level: float = 0.95,
                        binary: bool = False) -> dict[str, float]:
    """Means, difference and its interval for two independent samples (NaN values dropped).

    ``binary``: the values are 0/1 and the difference gets the Agresti-Caffo interval.

    Returns ``n_treated``, ``n_holdout``, ``treated_mean``, ``holdout_mean``,
    ``lift``, ``ci_low``, ``ci_high``, ``relative_lift``, ``relative_ci_low``,
    ``relative_ci_high``.
    """
    t = np.asarray(treated, dtype=float)
    h = np.asarray(holdout, dtype=float)
    t, h = t[~np.isnan(t)], h[~np.isnan(h)]
    nt, nh = len(t), len(h)
    out = {"n_treated": nt, "n_holdout": nh, "treated_mean": float(t.mean()) if nt else np.nan,
           "holdout_mean": float(h.mean()) if nh else np.nan}
    out["lift"] = out["treated_mean"] - out["holdout_mean"]
    out.update(ci_low=np.nan, ci_high=np.nan, relative_lift=np.nan, relative_ci_low=np.nan, relative_ci_high=np.nan)
    if nt < 2 or nh < 2:
        return out
    z = float(stats.norm.ppf(0.5 + level / 2))
    vt, vh = float(t.var(ddof=1)) / nt, float(h.var(ddof=1)) / nh
    if binary:
        pt, ph = (t.sum() + 1) / (nt + 2), (h.sum() + 1) / (nh + 2)
        centre, se = pt - ph, np.sqrt(pt * (1 - pt) / (nt + 2) + ph * (1 - ph) / (nh + 2))
    else:
        centre, se = out["lift"], np.sqrt(vt + vh)
    if se > 0:
        out["ci_low"], out["ci_high"] = centre - z * se, centre + z * se
    mt, mh = out["treated_mean"], out["holdout_mean"]
    if mh != 0:
        out["relative_lift"] = mt / mh - 1.0
        rel_se = np.sqrt(vt / mh**2 + vh * mt**2 / mh**4)
        if rel_se > 0:
            out["relative_ci_low"] = out["relative_lift"] - z * rel_se
            out["relative_ci_high"] = out["relative_lift"] + z * rel_se
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
        (bool) and one column per metric (``retention`` is NaN outside the
        retention base; a metric that is entirely NaN, such as cost when no
        cost data exist, is left out).
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
            if f"{metric}_pre" in group.columns and metric not in BINARY:
                values = cuped(values, group[f"{metric}_pre"].to_numpy(dtype=float))
            rows.append({"segment_id": int(segment_id), "segment_name": str(segment_name), "metric": metric,
                         **difference_interval(values[~arm], values[arm], level, binary=metric in BINARY)})
    return pd.DataFrame(rows, columns=list(LIFT_COLUMNS))
