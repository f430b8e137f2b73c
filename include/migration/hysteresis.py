"""Segment migration: published labels with hysteresis, transitions, and a Markov view.

**Hysteresis** (seed 002's "2 consecutive weeks" smoothing): a customer's
published segment changes only once the model has put them in the same new
segment for ``hysteresis_runs`` consecutive runs. The state needed to continue
the fold (the pending segment and how many runs it has lasted) is stored with
every published snapshot, so a date can be (re)published from its predecessor
alone. Runs whose quality gate failed carry the previous published labels
forward and do not count towards a pending move.

**Order independence**: published labels are a fold over the raw labels in
as-of order (after the segment-id fold of
:func:`include.segmentation.history.fold_segment_ids`), so publishing (or
re-running) a date recomputes that date and every later one; transitions and
economics are recomputed for every later date too. Backfills, out-of-order
runs and re-runs therefore give the same tables as live weekly runs
(``tests/pipeline/test_order_independence.py``).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

NEW, GONE = "(new)", "(gone)"


@dataclass
class PublishStep:
    published: pd.DataFrame  # customer_key, segment_id, raw_segment_id, pending_segment_id, pending_runs
    raw_moves: int
    held_back: int


def apply_hysteresis(raw: pd.DataFrame, previous: pd.DataFrame | None, runs_required: int) -> PublishStep:
    """One step of the fold: today's raw labels + yesterday's published state -> today's published state.

    Parameters
    ----------
    raw
        ``customer_key``, ``raw_segment_id`` for today's customers.
    previous
        The previous snapshot's ``customer_key``, ``segment_id``, ``pending_segment_id``,
        ``pending_runs`` (``None`` for the first run).
    runs_required
        Consecutive runs a new segment must last before the published label moves (1 = no smoothing).
    """
    out = raw[["customer_key", "raw_segment_id"]].copy()
    if previous is None or previous.empty:
        out["segment_id"] = out["raw_segment_id"]
        out["pending_segment_id"] = pd.array([pd.NA] * len(out), dtype="Int64")
        out["pending_runs"] = 0
        return PublishStep(out, 0, 0)
    prev = previous.set_index("customer_key")
    pub = prev["segment_id"].reindex(out["customer_key"]).to_numpy(dtype="float64")
    pend = prev["pending_segment_id"].reindex(out["customer_key"]).to_numpy(dtype="float64")
    runs = prev["pending_runs"].reindex(out["customer_key"]).fillna(0).to_numpy(dtype="int64")
    r = out["raw_segment_id"].to_numpy(dtype="float64")
    new = np.isnan(pub)
    stays = ~new & (r == pub)
    moving = ~new & ~stays
    runs = np.where(moving & (pend == r), runs + 1, np.where(moving, 1, 0))
    switch = moving & (runs >= runs_required)
    published = np.where(new | switch, r, pub)
    pending = np.where(moving & ~switch, r, np.nan)
    runs = np.where(moving & ~switch, runs, 0)
    out["segment_id"] = published.astype("int64")
    out["pending_segment_id"] = pd.array(np.where(np.isnan(pending), None, pending), dtype="Int64")
    out["pending_runs"] = runs
    return PublishStep(out, int(moving.sum()), int((moving & ~switch).sum()))


def transitions(before: pd.DataFrame, after: pd.DataFrame, names_before: dict, names_after: dict,
                clv_before: pd.Series | None, clv_after: pd.Series | None) -> pd.DataFrame:
    """Customer counts, rates and CLV between two published snapshots, including new and gone customers.

    ``rate`` is the share of the from-segment's customers (for new customers: of all new customers).
    ``clv_sum`` is the 365-day CLV at the later date (at the earlier one for customers who are gone).
    """
    merged = before[["customer_key", "segment_id"]].merge(
        after[["customer_key", "segment_id"]], on="customer_key", how="outer", suffixes=("_from", "_to"))
    clv_after = clv_after if clv_after is not None else pd.Series(dtype=float)
    clv_before = clv_before if clv_before is not None else pd.Series(dtype=float)
    gone = merged["segment_id_to"].isna()
    merged["clv"] = np.where(gone, merged["customer_key"].map(clv_before), merged["customer_key"].map(clv_after))
    merged["from_key"] = merged["segment_id_from"].fillna(-1).astype("int64")
    merged["to_key"] = merged["segment_id_to"].fillna(-1).astype("int64")
    grouped = merged.groupby(["from_key", "to_key"]).agg(customers=("customer_key", "size"),
                                                         clv_sum=("clv", lambda s: float(np.nansum(s))))
    grouped = grouped.reset_index()
    totals = grouped.groupby("from_key")["customers"].transform("sum")
    grouped["rate"] = grouped["customers"] / totals
    grouped["from_segment_id"] = grouped["from_key"].where(grouped["from_key"] >= 0).astype("Int64")
    grouped["to_segment_id"] = grouped["to_key"].where(grouped["to_key"] >= 0).astype("Int64")
    grouped["from_segment"] = [NEW if k < 0 else names_before.get(k, str(k)) for k in grouped["from_key"]]
    grouped["to_segment"] = [GONE if k < 0 else names_after.get(k, str(k)) for k in grouped["to_key"]]
    return grouped[["from_segment_id", "to_segment_id", "from_segment", "to_segment", "customers", "rate", "clv_sum"]]


def markov_view(transition_frames: list[pd.DataFrame], current_mix: pd.Series, mean_clv: pd.Series,
                periods: int) -> dict[str, object]:
    """Transition matrix over a window of runs, projected mix after ``periods`` runs, steady state, projected value.

    Only segment-to-segment moves enter the matrix (new and gone customers are
    reported in the transitions, not modelled here); rows are normalised counts
    summed over the window. ``current_mix`` holds customers per segment id.
    """
    moves = pd.concat(transition_frames, ignore_index=True) if transition_frames else pd.DataFrame()
    moves = moves.dropna(subset=["from_segment_id", "to_segment_id"]) if len(moves) else moves
    segments = sorted(set(current_mix.index) | (set(moves["from_segment_id"].astype(int)) if len(moves) else set()))
    counts = pd.DataFrame(0.0, index=segments, columns=segments)
    for r in moves.itertuples():
        if int(r.from_segment_id) in counts.index and int(r.to_segment_id) in counts.columns:
            counts.loc[int(r.from_segment_id), int(r.to_segment_id)] += r.customers
    for s in segments:  # a segment never observed leaving stays put
        if counts.loc[s].sum() == 0:
            counts.loc[s, s] = 1.0
    matrix = counts.div(counts.sum(axis=1), axis=0)
    mix = current_mix.reindex(segments, fill_value=0).astype(float)
    projected = mix.to_numpy() @ np.linalg.matrix_power(matrix.to_numpy(), periods)
    eigvals, eigvecs = np.linalg.eig(matrix.to_numpy().T)
    stationary = np.real(eigvecs[:, np.argmin(np.abs(eigvals - 1))])
    stationary = stationary / stationary.sum()
    value = mean_clv.reindex(segments).fillna(0).to_numpy()
    return {
        "matrix": matrix,
        "projected_mix": pd.Series(projected, index=segments),
        "steady_state": pd.Series(stationary, index=segments),
        "current_value": float(mix.to_numpy() @ value),
        "projected_value": float(projected @ value),
    }


def top_segment_outflow(transition: pd.DataFrame, top_segment_id: int) -> float:
    """Share of the top segment's customers that left it (to another segment or gone) in one period."""
    rows = transition[transition["from_segment_id"] == top_segment_id]
    total = rows["customers"].sum()
    if total == 0:
        return 0.0
    left = rows[rows["to_segment_id"] != top_segment_id]["customers"].sum()
    return float(left / total)


def run_dates(wh, table: str = "segmentation_runs") -> list[dt.date]:
    frame = wh.query_df(f"SELECT DISTINCT as_of_date FROM {table} ORDER BY as_of_date")
    return [pd.Timestamp(d).date() for d in frame["as_of_date"]]
