"""The CLV backtest: what the calibration fit predicted for the holdout, against what customers then did.

Every run already splits its history at ``as_of_date - clv_holdout_days``:
the purchase and spend models fitted on the calibration period predict each
customer's purchases in the holdout days (``expected_purchases`` over the
holdout, Fader, Hardie & Lee 2005 eq. 10 / Batislam et al. 2007 eq. 6) and
their value (x the Gamma-Gamma expected spend, Fader & Hardie 2013 eq. 5);
``clv_summary`` holds what each customer bought in those days
(``holdout_purchases``, ``holdout_value``). No planted truth is needed.

Two views, one table (``clv_backtest``):

- calibration by decile of predicted holdout revenue (decile 1 = the highest
  tenth): predicted and realised purchases and revenue per decile;
- summary rows: the aggregate purchase and revenue errors, the share of the
  realised revenue that came from the predicted top decile, and the
  normalised Gini coefficient of the realised revenue ranked by the
  prediction (1: the model ranks customers exactly as their realised revenue
  does; 0: no better than chance; below 0: worse), the rank measure the
  check uses (:func:`include.clv.fit.judge_fit`).

Customers whose first purchase falls in the holdout are not in the
calibration period and are left out (the model could not have predicted them).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from include.clv.models import GammaGammaSpend, PurchaseModel

DECILES = 10


def normalised_gini(realised: np.ndarray, predicted: np.ndarray) -> float:
    """Normalised Gini of ``realised`` ranked by ``predicted`` (NaN when nobody realised anything).

    The cumulative-gains curve: customers sorted by ``predicted``, highest
    first, against their cumulative share of the realised total. Its Gini is
    twice the area between the curve and the diagonal; divided by the Gini of
    the perfect order (sorted by ``realised`` itself) it is 1 for a perfect
    ranking, about 0 for a random one. Customers with tied predictions are
    given their group's mean realised value (the expected curve over every
    order of the tie), so the figure does not depend on how ties are broken.
    """
    realised = np.asarray(realised, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    if len(realised) == 0 or realised.sum() <= 0:
        return float("nan")
    return _gini(realised, predicted) / _gini(realised, realised)


def _gini(realised: np.ndarray, score: np.ndarray) -> float:
    order = np.argsort(-score, kind="stable")
    value, ranked = realised[order], score[order]
    # Ties: each customer of a tied group gets the group's mean.
    _, group, counts = np.unique(ranked, return_inverse=True, return_counts=True)
    value = np.bincount(group, weights=value)[group] / counts[group]
    n = len(value)
    gains = np.cumsum(value) / value.sum()
    area = (gains.sum() - gains[-1] / 2) / n  # trapezoids from (0, 0) to (1, 1)
    return 2 * area - 1


def decile_of(predicted: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Decile 1..10 of each customer by ``predicted``, highest first; ties broken by ``keys`` (deterministic).

    Customer ``i`` of ``n`` in that order is in decile ``floor(10 i / n) + 1``,
    so deciles differ in size by at most one customer.
    """
    order = np.lexsort((keys, -np.asarray(predicted, dtype=float)))
    decile = np.empty(len(order), dtype=int)
    decile[order] = np.arange(len(order)) * DECILES // max(len(order), 1) + 1
    return decile


def clv_backtest(calibration: pd.DataFrame, purchases: PurchaseModel, spend: GammaGammaSpend | None,
                 holdout_units: float) -> tuple[pd.DataFrame, dict[str, float]]:
    """Decile and summary rows of ``clv_backtest`` (without ``as_of_date``), and the summary as a dict.

    Parameters
    ----------
    calibration
        The calibration summary: ``customer_key``, ``frequency``, ``recency``,
        ``t``, ``monetary_value``, ``holdout_purchases``, ``holdout_value``.
    purchases, spend
        The models fitted on the calibration period (``spend`` ``None`` when the
        spend model could not be fitted there: revenue columns are then NULL
        and the ranking is by predicted purchases).
    holdout_units
        The holdout in the summary's time unit.

    Returns
    -------
    rows, summary
        ``rows``: ``row_kind`` ``'decile'`` (one per decile) and ``'summary'``
        (``metric``, ``value``); ``summary``: ``{metric: value}``
        (``normalised_gini`` is the revenue Gini, or the purchases Gini
        without a spend model).
    """
    x, tx, t = (calibration[c].to_numpy(dtype=float) for c in ("frequency", "recency", "t"))
    predicted_purchases = purchases.expected_purchases(x, tx, t, holdout_units)
    realised_purchases = calibration["holdout_purchases"].to_numpy(dtype=float)
    realised_revenue = calibration["holdout_value"].to_numpy(dtype=float)
    if spend is not None:
        predicted_revenue = predicted_purchases * spend.expected_spend(x, calibration["monetary_value"])
    else:
        predicted_revenue = np.full(len(calibration), np.nan)
    rank_by = predicted_revenue if spend is not None else predicted_purchases
    deciles = decile_of(rank_by, calibration["customer_key"].astype(str).to_numpy())
    frame = pd.DataFrame({"decile": deciles, "predicted_purchases": predicted_purchases,
                          "realised_purchases": realised_purchases, "predicted_revenue": predicted_revenue,
                          "realised_revenue": realised_revenue})
    rows = frame.groupby("decile").agg(
        customers=("decile", "size"), predicted_purchases=("predicted_purchases", "sum"),
        realised_purchases=("realised_purchases", "sum"),
        predicted_revenue=("predicted_revenue", lambda v: v.sum(min_count=1)),
        realised_revenue=("realised_revenue", "sum")).reset_index()
    rows.insert(0, "row_kind", "decile")
    rows["metric"] = "decile"
    total_realised_revenue = realised_revenue.sum()
    top = deciles == 1
    summary = {
        "normalised_gini_purchases": normalised_gini(realised_purchases, predicted_purchases),
        "normalised_gini_revenue": (normalised_gini(realised_revenue, predicted_revenue)
                                    if spend is not None else float("nan")),
        "purchase_error_pct": _error_pct(predicted_purchases.sum(), realised_purchases.sum()),
        "revenue_error_pct": (_error_pct(predicted_revenue.sum(), total_realised_revenue)
                              if spend is not None else float("nan")),
        "top_decile_realised_revenue_share": (float(realised_revenue[top].sum() / total_realised_revenue)
                                              if total_realised_revenue > 0 else float("nan")),
        "top_decile_predicted_revenue_share": (float(predicted_revenue[top].sum() / predicted_revenue.sum())
                                               if spend is not None and predicted_revenue.sum() > 0
                                               else float("nan")),
        "customers": float(len(calibration)),
        "realised_revenue": float(total_realised_revenue),
        "realised_purchases": float(realised_purchases.sum()),
    }
    summary["normalised_gini"] = (summary["normalised_gini_revenue"] if spend is not None
                                  else summary["normalised_gini_purchases"])
    metrics = ("normalised_gini_revenue", "normalised_gini_purchases", "purchase_error_pct", "revenue_error_pct",
               "top_decile_realised_revenue_share", "top_decile_predicted_revenue_share")
    summary_rows = pd.DataFrame({"row_kind": "summary", "metric": list(metrics),
                                 "customers": len(calibration), "value": [summary[m] for m in metrics]})
    return pd.concat([rows, summary_rows], ignore_index=True), summary


def _error_pct(predicted: float, realised: float) -> float:
    return float(100 * (predicted - realised) / realised) if realised > 0 else float("nan")
