"""The backtest of one run: its published logic as of ``D - H`` on its own staged data, against what happened next.

:func:`backtest_claims` is what the task ``backtest_claims`` calls (SQL: ``include/sql/backtest.sql``).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from include.backtest.claims import evaluate_claims, not_checked
from include.runtime.warehouse import Warehouse, named_sql

log = logging.getLogger(__name__)

SQL = named_sql("backtest.sql")

#: Fewest customers known on the backtest date for the backtest to run: below it a segment holds a
#: handful of customers and what they did next proves nothing either way.
MIN_BACKTEST_CUSTOMERS = 50


@dataclass(frozen=True)
class BacktestSettings:
    """What the backtest re-runs with: the run's own segmentation settings and k, the playbook, the horizon."""

    horizon_days: int
    k: int
    algorithm: str = "spectral"
    seed: int = 42
    n_init: int = 4
    silhouette_sample: int = 5000
    playbook_path: str | Path | None = None


@dataclass
class Backtest:
    """The rows written to ``claims_backtest`` and what the backtest date looked like."""

    claims: pd.DataFrame
    backtest_date: dt.date
    customers: int  # known on the backtest date
    segments: pd.DataFrame | None  # names on the backtest date (label group, name, standing), None when not run
    seconds: dict[str, float]
    features: pd.DataFrame | None = None  # the features as of the backtest date it used


def _outcomes(wh: Warehouse, as_of_date: dt.date, backtest_date: dt.date) -> pd.DataFrame:
    """Net revenue and purchase days of every customer in (backtest date, as-of date], from the run's snapshot."""
    from include.features.build import feature_params

    params = {"snapshot_date": as_of_date, "start_ts": feature_params(backtest_date)["cutoff_ts"],
              "end_ts": feature_params(as_of_date)["cutoff_ts"]}
    return wh.query_df(SQL["outcomes"], params)


def run_backtest(wh: Warehouse, as_of_date: dt.date, settings: BacktestSettings) -> Backtest:
    """Run the published logic as of ``as_of_date - horizon_days`` and check every claim it made (nothing written).

    Features come from this run's staged snapshot read as of the backtest date; the fit uses this
    run's k, algorithm and seed (no k screening, no bootstrap); names come from the labeller
    without CLV (no scores exist for that date) and without withheld claims; actions from the
    playbook. A run whose data do not reach back that far gets 'not checked' rows saying why.
    """
    import time

    from include.economics.build import intervention_priority, load_playbook
    from include.features.build import features_as_of
    from include.labels.build import name_fit
    from include.segmentation.model import available_features, fit_segments, order_by_value, segmentation_features

    clock, seconds = time.process_time(), {}

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.process_time()
        seconds[phase] = now - clock
        clock = now

    horizon = int(settings.horizon_days)
    backtest_date = as_of_date - dt.timedelta(days=horizon)
    first = wh.scalar(SQL["first_order"], {"snapshot_date": as_of_date})
    if first is None or pd.Timestamp(first).date() > backtest_date:
        why = (f"The run's data start on {pd.Timestamp(first).date()}, after {backtest_date} ({horizon} days before "
               f"{as_of_date}): nothing was known then to check." if first is not None
               else f"No staged orders for {as_of_date}.")
        return Backtest(not_checked(as_of_date, backtest_date, horizon, why), backtest_date, 0, None, seconds)
    features = features_as_of(wh, backtest_date, as_of_date)
    lap("features")
    if len(features) < max(MIN_BACKTEST_CUSTOMERS, 3 * settings.k):
        why = (f"Only {len(features)} customers had ordered by {backtest_date} ({horizon} days before {as_of_date}); "
               f"the backtest needs at least {max(MIN_BACKTEST_CUSTOMERS, 3 * settings.k)}.")
        return Backtest(not_checked(as_of_date, backtest_date, horizon, why), backtest_date, len(features), None,
                        seconds, features)
    columns, _ = segmentation_features(features)
    try:
        result = fit_segments(features, k=settings.k, seed=settings.seed, algorithm=settings.algorithm,
                              n_init=settings.n_init, silhouette_sample=settings.silhouette_sample,
                              numeric_columns=columns, min_jaccard=None)
    except ValueError as exc:  # e.g. no feature varies on that date: say so, as a finding of the backtest
        why = f"The segmentation could not be fitted as of {backtest_date}: {exc}."
        log.warning("backtest: %s", why)
        return Backtest(not_checked(as_of_date, backtest_date, horizon, why), backtest_date, len(features), None,
                        seconds, features)
    lap("fit")
    named = name_fit(features, order_by_value(features, result.labels), available_features(features)[0])
    book = load_playbook(settings.playbook_path)
    customers = pd.DataFrame({"customer_key": features["customer_key"], "segment_id": named.labels,
                              "segment_name": named.names["segment_name"].reindex(named.labels).to_numpy(),
                              "p_alive": np.nan, "lifecycle_state": features["lifecycle_state"],
                              "repeat_buyer": features["repeat_buyer"]})
    actions = intervention_priority(customers, book, named.standings())
    lap("labels")
    outcomes = _outcomes(wh, as_of_date, backtest_date)
    frame = customers.merge(actions[["customer_key", "action_claim"]], on="customer_key").merge(
        outcomes, on="customer_key", how="left").fillna({"next_revenue": 0.0, "next_purchase_days": 0})
    frame = frame.rename(columns={"segment_id": "segment"})
    segments = named.names[["segment_name"]].assign(standing=pd.Series(named.standings()))
    claims = evaluate_claims(frame, segments, as_of_date, backtest_date, horizon)
    lap("claims")
    return Backtest(claims, backtest_date, len(features), segments.assign(customers=named.names["customers"]),
                    seconds, features)


def backtest_claims(wh: Warehouse, as_of_date: dt.date, settings: BacktestSettings) -> Backtest:
    """Run the backtest and write ``claims_backtest`` and ``backtest_features`` for the run's date (one transaction)."""
    out = run_backtest(wh, as_of_date, settings)
    d = {"as_of_date": as_of_date}
    used = pd.DataFrame()
    if out.features is not None:
        used = out.features.rename(columns={"as_of_date": "backtest_date"})
        used.insert(0, "as_of_date", as_of_date)
    with wh.transaction() as tx:
        tx.replace_partition("claims_backtest", out.claims, d)
        tx.replace_partition("backtest_features", used, d)
    failed = out.claims[out.claims["verdict"] == "failed"]
    for r in failed.itertuples():
        log.warning("backtest %s -> %s: claim '%s'%s failed: %s", out.backtest_date, as_of_date, r.claim,
                    f" ({r.segment_name})" if isinstance(r.segment_name, str) else "", r.detail)
    held = int((out.claims["verdict"] == "held").sum())
    log.info("backtest %s -> %s: %d claim rows held, %d failed, %d not checked", out.backtest_date, as_of_date, held,
             len(failed), int((out.claims["verdict"] == "not checked").sum()))
    return out


def backtest_metrics(claims: pd.DataFrame) -> dict[str, Any]:
    """MLflow metrics of a backtest: rows held/failed per claim and the run-wide actions' realised shares."""
    metrics: dict[str, float] = {}
    for claim, rows in claims.groupby("claim"):
        key = str(claim).replace(" ", "_")
        metrics[f"backtest.{key}.held"] = float((rows["verdict"] == "held").sum())
        metrics[f"backtest.{key}.failed"] = float((rows["verdict"] == "failed").sum())
        run_wide = rows[rows["claim_kind"] == "action"]
        if len(run_wide) and run_wide["realised"].notna().any():
            metrics[f"backtest.{key}.realised"] = float(run_wide["realised"].dropna().iloc[0])
    metrics["backtest.claims_failed"] = float((claims["verdict"] == "failed").sum())
    metrics["backtest.claims_checked"] = float((claims["verdict"] != "not checked").sum())
    return metrics
