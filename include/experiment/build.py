"""Record the holdout and the policy of a run, and measure treated-vs-holdout lift per segment.

One call per as-of date (the ``run_experiment`` DAG task, after the economics
stage has chosen every customer's playbook action and before anything is
pushed):

1. every published customer gets the holdout flag of
   :func:`include.experiment.holdout.holdout_draw` under the run's
   ``experiment_name`` and ``holdout_share``; ``customer_holdout`` keeps it per
   customer and date with the published segment and the action the push sends
   (none for the holdout: the CRM label SQL sends the action only to the treated);
2. ``policy_runs`` records the policy in force: the playbook's content hash,
   the action per segment (JSON) and the holdout share. The policy started on
   the first date whose labels were *delivered* within the unbroken run of
   dates up to this one with the same hash and share (``policy_start``; a new
   playbook starts a new comparison). Delivered: at least one customer's
   labels of that date were acknowledged by a CRM target (the outbox included)
   as ``crm_push_log`` records it (:func:`delivered_label_dates`). A date whose
   labels were never delivered treated nobody, so a comparison cannot start
   there: a backfilled early date, whose push sends the newest labels because
   a CRM never goes back, does not move the start, and a run before any
   delivery is its own start, with nothing measured yet;
3. ``segment_lift`` gets, per segment and outcome, treated and holdout
   means, the lift with a 95% interval, the simultaneous 95% interval that
   holds for all of the run's segments of the outcome at once (Bonferroni),
   the minimum detectable effect and the sample sizes
   (:mod:`include.experiment.lift`). Intention to treat:
   every customer assigned under the policy counts in the segment and arm of
   its first date under it. Outcomes are measured only after the policy
   started (from the day after its start to the as-of date, one
   cumulative window, so each customer is one observation): revenue,
   cost-to-serve and profit per customer over the whole window, and repeat
   retention of the customers who ordered in the ``retention_window_days``
   before the policy (ordered again in the window, its last
   ``retention_window_days`` once longer). The policy's first run has no
   post-policy days and writes no lift.

The three tables are a pure function of the published history (labels and
actions per date) and the delivery record, whatever order dates ran in.
Publishing a date republishes every later one and the economics stage
recomputes their actions, so this stage recomputes every later published date
too, in date order: each keeps the experiment name and holdout share it
recorded (the playbook is the one its actions now come from). A later date
whose record changes (a customer's segment, name, action or arm, its policy
row, or its lift) is rewritten with ``policy_runs.rewritten_by`` set to this
run's date and ``rewrite_detail`` saying what changed; the stage names those
dates loudly (the report stage renders every later date's report again).

Everything is written in one transaction.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from include.experiment.holdout import holdout_draws
from include.experiment.lift import LIFT_COLUMNS, segment_lift
from include.features.build import feature_params
from include.runtime.errors import NoRowsError
from include.runtime.settings import DEFAULT_GROSS_MARGIN, SettingsError
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
    if not 0.0 <= share < 1.0:  # NaN too
        raise SettingsError(f"setting holdout_share must be in [0, 1), got {share}")
    out = published[["customer_key", "segment_id", "segment_name", "action"]].copy()
    out["holdout_draw"] = holdout_draws(experiment_name, out["customer_key"].astype(str).tolist())
    out["holdout"] = out["holdout_draw"] < share
    out["action"] = out["action"].where(~out["holdout"], None)
    return out


def policy_start(history: pd.DataFrame, as_of_date: dt.date, policy: str, share: float,
                 delivered: set[dt.date] | None = None) -> dt.date:
    """First delivered date of the unbroken run of dates up to ``as_of_date`` under ``policy`` and ``share``.

    ``history``: earlier ``policy_runs`` of the experiment, newest first.
    ``delivered``: the dates whose labels reached a CRM target
    (:func:`delivered_label_dates`); ``None`` counts every date as delivered.
    When no date of the run was delivered, ``as_of_date`` itself: nothing has
    been treated, so there is no window to measure.
    """
    run = [as_of_date]
    for row in history.itertuples():
        if row.policy_hash != policy or not np.isclose(row.holdout_share, share):
            break
        run.append(pd.Timestamp(row.as_of_date).date())
    started = [d for d in run if delivered is None or d in delivered]
    return min(started) if started else as_of_date


def delivered_label_dates(wh: Warehouse) -> set[dt.date]:
    """Label dates at least one CRM target acknowledged a customer of (``crm_push_log``; dry runs log nothing)."""
    if not wh.has_table("crm_push_log"):
        return set()
    frame = wh.query_df(SQL["delivered_label_dates"])
    return {pd.Timestamp(d).date() for d in frame["label_date"].dropna()}


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


#: What a later date's record is compared on (besides its customers) to tell whether a backfill changed it.
_HOLDOUT_COMPARED = ("segment_id", "segment_name", "holdout", "action", "policy_hash", "experiment_name")
_POLICY_COMPARED = ("experiment_name", "policy_hash", "holdout_share", "policy_start", "actions", "customers",
                    "holdout_customers")
_LIFT_KEYS = ("segment_id", "metric")


@dataclass
class DateRecord:
    """What the experiment stage wrote (or kept) for one date."""

    as_of_date: dt.date
    figures: dict[str, Any]
    lift: pd.DataFrame
    changed: str = ""  # for a later date: what its recomputation changed ("" = nothing)


def run_experiment(wh: Warehouse, as_of_date: dt.date, settings: ExperimentSettings,
                   playbook_path: str | Path | None = None) -> dict[str, Any]:
    """Write ``customer_holdout``, ``policy_runs`` and ``segment_lift`` for ``as_of_date`` and every later date.

    Later published dates are recomputed in date order (see the module
    docstring); the ones whose record changed are rewritten and returned.
    On the policy's first date nothing has been treated yet: no lift rows are
    written (a comparison there would be pre-policy noise), and the figures say so.

    Returns
    -------
    dict
        ``figures`` and ``lift`` of ``as_of_date``; ``later_dates_changed``:
        ``{date: what changed}`` for each later date this run rewrote.

    Raises
    ------
    NoRowsError
        When ``customer_segments`` has no published labels for the date, or
        ``customer_priority`` has no action for them (run build_economics first).
    SettingsError
        When ``retention_window_days`` or ``holdout_share`` is out of range.
    """
    if settings.retention_window_days < 1:
        raise SettingsError(f"setting retention_window_days must be at least 1, got {settings.retention_window_days}")
    with wh.transaction() as tx:
        later = [pd.Timestamp(d).date() for d in tx.query_df(SQL["later_published_dates"],
                                                             {"as_of_date": as_of_date})["as_of_date"]]
        policy = playbook_hash(playbook_path)
        delivered = delivered_label_dates(tx)
        this = _experiment_of_date(tx, as_of_date, settings, policy, playbook_path, delivered, rewritten_by=None)
        changed = {}
        for date in later:
            record = _experiment_of_date(tx, date, settings, policy, playbook_path, delivered, rewritten_by=as_of_date)
            if record.changed:
                changed[date] = record.changed
    for date, what in changed.items():
        log.warning("experiment %s: backfilling %s changed the record of the later date %s (%s); its report is "
                    "rendered again", settings.experiment_name, as_of_date, date, what)
    return {"figures": {**this.figures, "later_dates_changed": len(changed)}, "lift": this.lift,
            "later_dates_changed": changed}


def _experiment_of_date(wh: Warehouse, as_of_date: dt.date, settings: ExperimentSettings, policy: str,
                        playbook_path: str | Path | None, delivered: set[dt.date],
                        rewritten_by: dt.date | None) -> DateRecord:
    """Compute one date's three records and write them; a later date (``rewritten_by`` set) only if they changed.

    A later date keeps the experiment name and holdout share it recorded.
    """
    d = {"as_of_date": as_of_date}
    old_policy = wh.query_df(SQL["policy_of_date"], d) if rewritten_by is not None else pd.DataFrame()
    if not old_policy.empty:
        row = old_policy.iloc[0]
        settings = dataclasses.replace(settings, experiment_name=str(row["experiment_name"]),
                                       holdout_share=float(row["holdout_share"]))
    published = wh.query_df(SQL["published_actions"], d)
    if published.empty:
        raise NoRowsError(f"customer_segments has no published labels for as_of_date={as_of_date}; "
                          "run publish_segments first")
    if published["action"].isna().all():
        raise NoRowsError(f"customer_priority has no actions for as_of_date={as_of_date}; "
                          "run build_economics first")
    assigned = assign_holdout(published, settings.experiment_name, settings.holdout_share)
    holdout_rows = assigned.assign(as_of_date=as_of_date, experiment_name=settings.experiment_name,
                                   policy_hash=policy)
    holdout_rows = holdout_rows[["as_of_date", "experiment_name", "customer_key", "segment_id", "segment_name",
                                 "holdout", "holdout_draw", "action", "policy_hash"]]
    changes = []
    if rewritten_by is None:
        wh.replace_partition("customer_holdout", holdout_rows, d)
    else:
        old_rows = wh.query_df(SQL["holdout_of_date"], d)
        differ = _customers_differing(old_rows, holdout_rows)
        if differ:
            changes.append(f"customer_holdout: {differ} customers' segment, name, action or arm")
            wh.replace_partition("customer_holdout", holdout_rows, d)

    history = wh.query_df(SQL["policy_history"], {"experiment_name": settings.experiment_name,
                                                  "as_of_date": as_of_date})
    start = policy_start(history, as_of_date, policy, settings.holdout_share, delivered)
    actions = (published.dropna(subset=["action"]).groupby("segment_id")
               .agg(segment_name=("segment_name", "first"), action=("action", "first")))
    actions_json = json.dumps({str(int(k)): {"segment_name": r.segment_name, "action": r.action}
                               for k, r in actions.iterrows()}, sort_keys=True)
    policy_row = pd.DataFrame([{
        "as_of_date": as_of_date, "experiment_name": settings.experiment_name, "policy_hash": policy,
        "playbook_path": str(playbook_path or "include/economics/playbook.toml"),
        "holdout_share": settings.holdout_share, "policy_start": start, "actions": actions_json,
        "customers": len(assigned), "holdout_customers": int(assigned["holdout"].sum()),
        "recorded_at": pd.Timestamp.now(tz="UTC").tz_localize(None), "rewritten_by": rewritten_by,
        "rewrite_detail": None}])

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
    lift = lift[["as_of_date", "experiment_name", "policy_hash", "policy_start", "window_start", *LIFT_COLUMNS]]

    if rewritten_by is not None:
        if old_policy.empty:
            changes.append("policy_runs: no record before")
        else:
            fields = [c for c in _POLICY_COMPARED if not _same(old_policy.iloc[0][c], policy_row.iloc[0][c])]
            if fields:
                changes.append(f"policy_runs: {', '.join(fields)}")
        differ = _lift_rows_differing(wh.query_df(SQL["lift_of_date"], d), lift)
        if differ:
            changes.append(f"segment_lift: {differ} rows")
    changed = "; ".join(changes)
    if rewritten_by is None or changed:
        policy_row["rewrite_detail"] = changed or None
        wh.replace_partition("policy_runs", policy_row, d)
        wh.replace_partition("segment_lift", lift, d)

    figures = {"customers": len(assigned), "holdout_customers": int(assigned["holdout"].sum()),
               "holdout_share_observed": float(assigned["holdout"].mean()), "policy_hash": policy,
               "policy_start": start.isoformat(), "days_under_policy": params["post_days"],
               "segments_measured": int(lift["segment_id"].nunique()) if len(lift) else 0}
    if rewritten_by is None:
        log.info("experiment %s %s: %d customers, %d in the holdout (%.1f%%); policy %s in force since %s",
                 settings.experiment_name, as_of_date, figures["customers"], figures["holdout_customers"],
                 100 * figures["holdout_share_observed"], policy, start)
        if start == as_of_date:
            log.warning("experiment %s %s: the policy's first run (no earlier date under it had its labels "
                        "delivered to a CRM target), nothing treated yet: no lift measured",
                        settings.experiment_name, as_of_date)
    return DateRecord(as_of_date, figures, lift, changed)


def _missing(value: Any) -> bool:
    return value is None or value is pd.NaT or value is pd.NA or (isinstance(value, float) and value != value)


def _same(a: Any, b: Any) -> bool:
    """Equal as stored: dates as dates, numbers within rounding (DuckDB's parallel sums), missing as missing."""
    if _missing(a) or _missing(b):
        return _missing(a) and _missing(b)
    numbers = (float, int, np.number)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool | np.bool_):
        return bool(np.isclose(float(a), float(b), rtol=1e-9, atol=1e-12))
    if isinstance(a, dt.date | np.datetime64) or isinstance(b, dt.date | np.datetime64):
        return pd.Timestamp(a) == pd.Timestamp(b)
    return bool(a == b)


def _normalised(frame: pd.DataFrame, columns: tuple[str, ...]) -> pd.DataFrame:
    out = frame[list(columns)].copy()
    for c in columns:
        if c == "segment_id":
            out[c] = pd.to_numeric(out[c]).astype("Int64")
        elif c == "holdout":
            out[c] = out[c].astype(bool)
        else:
            out[c] = out[c].astype(object).where(out[c].notna(), None)
    return out


def _customers_differing(old: pd.DataFrame, new: pd.DataFrame) -> int:
    """Customers whose ``customer_holdout`` row differs (or exists on one side only)."""
    columns = ("customer_key", *_HOLDOUT_COMPARED)
    merged = _normalised(old, columns).merge(_normalised(new, columns), on="customer_key", how="outer",
                                             suffixes=("_old", "_new"), indicator=True)
    differ = merged["_merge"] != "both"
    for c in _HOLDOUT_COMPARED:
        a, b = merged[f"{c}_old"], merged[f"{c}_new"]
        differ |= ~((a == b).fillna(False).astype(bool) | (a.isna() & b.isna()))
    return int(differ.sum())


def _lift_rows_differing(old: pd.DataFrame, new: pd.DataFrame) -> int:
    """``segment_lift`` rows (by segment and outcome) that differ beyond rounding or exist on one side only."""
    columns = [c for c in new.columns if c != "as_of_date"]
    old, new = old[columns].copy(), new[columns].copy()
    for frame in (old, new):  # an empty frame's columns are objects
        frame["segment_id"] = pd.to_numeric(frame["segment_id"]).astype("Int64")
        frame["metric"] = frame["metric"].astype(str)
    merged = old.merge(new, on=list(_LIFT_KEYS), how="outer", suffixes=("_old", "_new"), indicator=True)
    differ = merged["_merge"] != "both"
    for c in columns:
        if c in _LIFT_KEYS:
            continue
        same = [_same(a, b) for a, b in zip(merged[f"{c}_old"], merged[f"{c}_new"], strict=True)]
        differ |= ~np.array(same, dtype=bool)
    return int(differ.sum())
