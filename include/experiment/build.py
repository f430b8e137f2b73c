"""Record the holdout and the policy of a run, and measure treated-vs-holdout lift per segment.

One call per as-of date (the ``run_experiment`` DAG task, after the economics
stage has chosen every customer's playbook action and before anything is
pushed):

1. every published customer gets the holdout flag of
   :func:`include.experiment.holdout.holdout_draw` under the run's
   ``experiment_name`` and ``holdout_share``; ``customer_holdout`` keeps it per
   customer and date with the action the customer is sent (none for the
   holdout: the CRM label SQL sends the action only to the treated);
2. ``policy_runs`` records the policy in force: the playbook's content hash,
   the action per segment (JSON) and the holdout share. The policy started on
   the earliest date of the unbroken run of earlier dates with the same hash
   and share (``policy_start``): a new playbook starts a new comparison;
3. ``segment_lift`` gets, per segment and outcome, treated and holdout
   means, the lift with a 95% interval, the simultaneous 95% interval that
   holds for all of the run's segments of the outcome at once (Bonferroni),
   the minimum detectable effect and the sample sizes
   (:mod:`include.experiment.lift`). Intention to treat:
   every customer assigned under the policy counts in the segment and arm of
   its first date under it. Outcomes are measured only after the policy
   started (from the day after its first run to the as-of date, one
   cumulative window, so each customer is one observation): revenue,
   cost-to-serve and profit per customer over the whole window, and repeat
   retention of the customers who ordered in the ``retention_window_days``
   before the policy (ordered again in the window, its last
   ``retention_window_days`` once longer). The policy's first run has no
   post-policy days and writes no lift.

All three tables are written in one transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from include.experiment.holdout import holdout_draw
from include.experiment.lift import LIFT_COLUMNS, segment_lift
from include.features.build import feature_params
from include.runtime.errors import NoRowsError
from include.runtime.settings import DEFAULT_GROSS_MARGIN
from include.runtime.warehouse import Warehouse, named_sql

log = logging.getLogger(__name__)

SQL = named_sql("experiment.sql")


@dataclass(frozen=True)
class ExperimentSettings:
    """Settings of the experiment stage (see ``include/runtime/settings.py``)."""

    experiment_name: str = "segment-playbook"
    holdout_share: float = 0.10
    retention_window_days: int = 90
    gross_margin: float = DEFAULT_GROSS_MARGIN
    servicing_cost_per_customer: float = 0.0
    servicing_cost_per_order: float = 0.0


def playbook_hash(playbook_path: str | Path | None = None) -> str:
    """Content hash (SHA-256, first 16 hex digits) of the playbook file in force."""
    from include.economics.build import DEFAULT_PLAYBOOK

    path = Path(playbook_path) if playbook_path else DEFAULT_PLAYBOOK
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def assign_holdout(published: pd.DataFrame, experiment_name: str, share: float) -> pd.DataFrame:
    """Holdout draw and flag of every published customer; the action only for the treated.

    ``published``: ``customer_key``, ``segment_id``, ``segment_name``, ``action``.
    """
    if not 0.0 <= share < 1.0:
        raise ValueError(f"holdout_share must be in [0, 1), got {share}")
    out = published[["customer_key", "segment_id", "segment_name", "action"]].copy()
    out["holdout_draw"] = [holdout_draw(experiment_name, str(k)) for k in out["customer_key"]]
    out["holdout"] = out["holdout_draw"] < share
    out["action"] = out["action"].where(~out["holdout"], None)
    return out


def policy_start(history: pd.DataFrame, as_of_date: dt.date, policy: str, share: float) -> dt.date:
    """First date of the unbroken run of dates up to ``as_of_date`` under ``policy`` and ``share``.

    ``history``: earlier ``policy_runs`` of the experiment, newest first.
    """
    start = as_of_date
    for row in history.itertuples():
        if row.policy_hash != policy or not np.isclose(row.holdout_share, share):
            break
        start = pd.Timestamp(row.as_of_date).date()
    return start


def outcome_params(as_of_date: dt.date, start: dt.date, settings: ExperimentSettings) -> dict[str, Any]:
    """Bind parameters of ``customer_outcomes`` (see ``experiment.sql``): the windows of the comparison.

    The post-policy window runs from the day after the policy's first run
    (its labels and actions are pushed after its as-of date) to the end of
    ``as_of_date``; the covariate window is as long and ends where it starts;
    the retention base is the ``retention_window_days`` before it.
    """
    params = feature_params(as_of_date)
    cutoff = params["cutoff_ts"]
    window = dt.timedelta(days=settings.retention_window_days)
    post_start = feature_params(start)["cutoff_ts"]
    post_days = max(0, (cutoff - post_start).days)
    params.update(experiment_name=settings.experiment_name, policy_start=start, post_start_ts=post_start,
                  pre_start_ts=post_start - dt.timedelta(days=post_days), base_start_ts=post_start - window,
                  retention_start_ts=max(post_start, cutoff - window), margin=settings.gross_margin,
                  per_customer=settings.servicing_cost_per_customer * post_days / 365.0,
                  per_order=settings.servicing_cost_per_order, post_days=post_days)
    return params


def run_experiment(wh: Warehouse, as_of_date: dt.date, settings: ExperimentSettings,
                   playbook_path: str | Path | None = None) -> dict[str, Any]:
    """Write ``customer_holdout``, ``policy_runs`` and ``segment_lift`` for ``as_of_date`` (one transaction).

    On the policy's first date nothing has been treated yet: no lift rows are
    written (a comparison there would be pre-policy noise), and the figures say so.

    Raises
    ------
    ValueError
        When ``customer_segments`` has no published labels for the date, or
        ``customer_priority`` has no action for them (run build_economics first).
    """
    if settings.retention_window_days < 1:
        raise ValueError(f"retention_window_days must be at least 1, got {settings.retention_window_days}")
    with wh.transaction() as tx:
        return _run_experiment(tx, as_of_date, settings, playbook_path)


def _run_experiment(wh: Warehouse, as_of_date: dt.date, settings: ExperimentSettings,
                    playbook_path: str | Path | None) -> dict[str, Any]:
    published = wh.query_df(SQL["published_actions"], {"as_of_date": as_of_date})
    if published.empty:
        raise NoRowsError(f"customer_segments has no published labels for as_of_date={as_of_date}; "
                         "run publish_segments first")
    if published["action"].isna().all():
        raise NoRowsError(f"customer_priority has no actions for as_of_date={as_of_date}; run build_economics first")
    policy = playbook_hash(playbook_path)
    assigned = assign_holdout(published, settings.experiment_name, settings.holdout_share)
    history = wh.query_df(SQL["policy_history"], {"experiment_name": settings.experiment_name,
                                                  "as_of_date": as_of_date})
    start = policy_start(history, as_of_date, policy, settings.holdout_share)
    actions = (published.dropna(subset=["action"]).groupby("segment_id")
               .agg(segment_name=("segment_name", "first"), action=("action", "first")))
    actions_json = json.dumps({str(int(k)): {"segment_name": r.segment_name, "action": r.action}
                               for k, r in actions.iterrows()}, sort_keys=True)
    holdout_rows = assigned.assign(as_of_date=as_of_date, experiment_name=settings.experiment_name,
                                   policy_hash=policy)
    holdout_rows = holdout_rows[["as_of_date", "experiment_name", "customer_key", "segment_id", "segment_name",
                                 "holdout", "holdout_draw", "action", "policy_hash"]]
    policy_row = pd.DataFrame([{
        "as_of_date": as_of_date, "experiment_name": settings.experiment_name, "policy_hash": policy,
        "playbook_path": str(playbook_path or "include/economics/playbook.toml"),
        "holdout_share": settings.holdout_share, "policy_start": start, "actions": actions_json,
        "customers": len(assigned), "holdout_customers": int(assigned["holdout"].sum()),
        "recorded_at": pd.Timestamp.now(tz="UTC").tz_localize(None)}])
    wh.replace_partition("customer_holdout", holdout_rows, {"as_of_date": as_of_date})
    wh.replace_partition("policy_runs", policy_row, {"as_of_date": as_of_date})

    params = outcome_params(as_of_date, start, settings)
    if params["post_days"] > 0:
        outcomes = wh.query_df(SQL["customer_outcomes"], params)
        # One row per segment id: customers first assigned on different dates can carry different names of
        # the same id (names follow each week's fit). The comparison is of the customers as assigned, so an
        # id is shown with the name most of them were assigned under, not the name it has today.
        assigned_name = outcomes.groupby("segment_id")["segment_name"].agg(lambda names: names.value_counts().index[0])
        outcomes["segment_name"] = outcomes["segment_id"].map(assigned_name)
        lift = segment_lift(outcomes)
    else:
        # The policy's first run: nothing has been treated yet, so there is nothing to compare.
        lift = pd.DataFrame(columns=list(LIFT_COLUMNS))
    lift.insert(0, "as_of_date", as_of_date)
    lift.insert(1, "experiment_name", settings.experiment_name)
    lift.insert(2, "policy_hash", policy)
    lift.insert(3, "policy_start", start)
    lift.insert(4, "window_start", params["post_start_ts"].date())
    wh.replace_partition("segment_lift", lift[["as_of_date", "experiment_name", "policy_hash", "policy_start",
                                               "window_start", *LIFT_COLUMNS]], {"as_of_date": as_of_date})
    figures = {"customers": len(assigned), "holdout_customers": int(assigned["holdout"].sum()),
               "holdout_share_observed": float(assigned["holdout"].mean()), "policy_hash": policy,
               "policy_start": start.isoformat(), "days_under_policy": params["post_days"],
               "segments_measured": int(lift["segment_id"].nunique()) if len(lift) else 0}
    log.info("experiment %s %s: %d customers, %d in the holdout (%.1f%%); policy %s in force since %s",
             settings.experiment_name, as_of_date, figures["customers"], figures["holdout_customers"],
             100 * figures["holdout_share_observed"], policy, start)
    if not len(lift):
        log.warning("experiment %s %s: the policy's first run, nothing treated yet: no lift measured",
                    settings.experiment_name, as_of_date)
    return {"figures": figures, "lift": lift}
