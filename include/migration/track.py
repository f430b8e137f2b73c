"""Tracking migration in the warehouse: transitions between published snapshots, the Markov view, the outflow check.

Transitions are recomputed for this date's pair of snapshots and every later
pair (publishing a date republishes the later ones), so backfills and re-runs
give the same ``segment_transitions`` as live weekly runs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pandas as pd

from include.migration.hysteresis import markov_view, run_dates, top_segment_outflow, transitions
from include.runtime.warehouse import Warehouse, named_sql

SQL = named_sql("migration.sql")


@dataclass
class Migration:
    """Transitions into the as-of date and the Markov view over the window before it."""

    transitions: pd.DataFrame | None  # None when the date has no earlier snapshot
    recomputed_pairs: int
    window_runs: int
    view: dict[str, Any]
    segment_names: dict[int, str]
    mix: pd.Series

    def metrics(self) -> dict[str, float]:
        view = self.view
        metrics = {"markov.current_value": view["current_value"], "markov.projected_value": view["projected_value"],
                   "markov.window_runs": float(self.window_runs)}
        for seg in view["matrix"].index:
            metrics[f"markov.steady_state.segment_{seg}"] = float(view["steady_state"][seg])
            metrics[f"markov.projected_share.segment_{seg}"] = float(view["projected_mix"][seg] / max(self.mix.sum(), 1))
            metrics[f"markov.stay_probability.segment_{seg}"] = float(view["matrix"].loc[seg, seg])
        return metrics

    def named_matrix(self) -> pd.DataFrame:
        """The transition matrix with ``<id> <name>`` labels, ``from_segment`` as the first column."""
        matrix = self.view["matrix"].copy()
        matrix.index = [f"{i} {self.segment_names.get(i, '')}" for i in matrix.index]
        matrix.columns = [f"{c} {self.segment_names.get(c, '')}" for c in matrix.columns]
        return matrix.reset_index(names="from_segment")


def _snapshot(wh: Warehouse, date: dt.date) -> tuple[pd.DataFrame, dict, pd.Series | None]:
    snap = wh.query_df(SQL["snapshot"], {"as_of_date": date})
    clv = wh.query_df(SQL["clv_365d"], {"as_of_date": date})
    names = snap.drop_duplicates("segment_id").set_index("segment_id")["segment_name"].to_dict()
    return snap, names, clv.set_index("customer_key")["clv_365d"] if len(clv) else None


def track(wh: Warehouse, as_of_date: dt.date, window_runs: int, periods: int) -> Migration | None:
    """Write ``segment_transitions`` from ``as_of_date`` on; ``None`` when nothing is published for the date."""
    dates = run_dates(wh, "customer_segments")
    if as_of_date not in dates:
        return None
    i = dates.index(as_of_date)
    current, frames = None, {}
    snapshots = {}
    for k in range(max(i, 1), len(dates)):
        for date in (dates[k - 1], dates[k]):
            if date not in snapshots:
                snapshots[date] = _snapshot(wh, date)
        before, after = snapshots.pop(dates[k - 1]), snapshots[dates[k]]
        frame = transitions(before[0], after[0], before[1], after[1], before[2], after[2])
        frame.insert(0, "to_date", dates[k])
        frame.insert(0, "from_date", dates[k - 1])
        frames[dates[k]] = frame
        if k == i:
            current = frame
    with wh.begin() as conn:
        # One transaction: every pair this run recomputed becomes visible together.
        for to_date, frame in frames.items():
            wh.replace_partition("segment_transitions", frame, {"to_date": to_date}, conn=conn)
    window = (wh.query_df(SQL["transitions_window"],
                          {"as_of_date": as_of_date, "window_start": dates[max(0, i - window_runs)]})
              if i > 0 else pd.DataFrame())
    snap, names, clv = _snapshot(wh, as_of_date)
    mix = snap.groupby("segment_id").size()
    mean_clv = (snap.assign(clv=snap["customer_key"].map(clv) if clv is not None else 0.0)
                .groupby("segment_id")["clv"].mean())
    frames = [g for _, g in window.groupby("to_date")] if len(window) else []
    view = markov_view(frames, mix, mean_clv, periods)
    return Migration(current, max(0, len(dates) - max(i, 1)), len(frames), view, names, mix)


@dataclass
class Outflow:
    """Share of the top segment of the previous snapshot that left it by ``as_of_date``."""

    segment_id: int
    segment_name: str
    from_date: str
    share: float


def top_outflow(wh: Warehouse, as_of_date: dt.date) -> Outflow | None:
    """The top segment's outflow into ``as_of_date``, or ``None`` without a previous snapshot.

    The top segment is the published segment with the highest mean 365-day revenue.
    """
    frame = wh.query_df(SQL["transitions_into"], {"as_of_date": as_of_date})
    if frame.empty:
        return None
    top = wh.query_df(SQL["top_segments_before"], {"as_of_date": as_of_date})
    if top.empty:
        return None
    top_id = int(top["segment_id"].iloc[0])
    return Outflow(top_id, top["segment_name"].iloc[0], str(frame["from_date"].iloc[0])[:10],
                   top_segment_outflow(frame, top_id))
