"""Stable segment ids of every labelled date: the fold of :func:`include.segmentation.history.fold_segment_ids`.

A date's labels are its fit's label groups (numbered by revenue per customer, so the numbering
depends only on that date's fit). Each group's centroid is the size-weighted mean of its fit
segments' centroids (``segment_centroids``: the mean standardised features of each fit segment, so
the weighted mean is exactly the group's own mean). The fold matches each date's groups to the
latest earlier date whose gate passed; labelling a date re-folds every later one, and only their
``segment_labels.segment_id`` (and match distance) can change: names, rules and fits stay as they were.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd

from include.runtime.warehouse import Warehouse, named_sql

SQL = named_sql("labels.sql")


@dataclass
class FoldedDate:
    labels: pd.DataFrame  # the date's segment_labels rows with the fold's segment_id and match_distance
    changed: bool  # the fold gave other ids or distances than the date's stored rows


def group_centroids(centroids: pd.DataFrame, sizes: pd.Series, group_of: pd.Series) -> pd.DataFrame:
    """Centroid of each label group: its fit segments' centroids weighted by their customers.

    ``centroids``: ``fit_segment``, ``feature``, ``z_value``; ``sizes``: customers by fit segment;
    ``group_of``: label group by fit segment. Returns groups x features.
    """
    wide = centroids.pivot(index="fit_segment", columns="feature", values="z_value").astype(float)
    wide = wide.rename_axis(None, axis=1)
    weights = sizes.reindex(wide.index).astype(float)
    groups = group_of.reindex(wide.index)
    weighted = wide.mul(weights, axis=0).groupby(groups.to_numpy()).sum()
    return weighted.div(weights.groupby(groups.to_numpy()).sum(), axis=0).sort_index()


def fold_labels(wh: Warehouse, as_of_date: dt.date, labels: pd.DataFrame, gate_passed: bool,
                max_distance: float) -> dict[dt.date, FoldedDate]:
    """Stable ids for ``labels`` (``as_of_date``'s new rows) and every other labelled date.

    ``labels`` has ``fit_segment``, ``label_group`` and ``customers``; the other dates are read
    from ``segment_labels`` and ``label_runs``, their centroids from ``segment_centroids`` and
    ``segment_profiles``.
    """
    from include.segmentation.history import FittedDate, fold_segment_ids

    stored = wh.query_df(SQL["other_labels"], {"as_of_date": as_of_date})
    gates = wh.query_df(SQL["label_gates"])
    gate = {pd.Timestamp(r.as_of_date).date(): bool(r.gate_passed) for r in gates.itertuples()}
    centroids = wh.query_df(SQL["fit_centroids"])
    sizes = wh.query_df(SQL["fit_sizes"])
    centroids["as_of_date"] = pd.to_datetime(centroids["as_of_date"]).dt.date
    sizes["as_of_date"] = pd.to_datetime(sizes["as_of_date"]).dt.date
    stored["as_of_date"] = pd.to_datetime(stored["as_of_date"]).dt.date
    frames = {date: frame.reset_index(drop=True) for date, frame in stored.groupby("as_of_date")}
    frames[as_of_date] = labels.assign(segment_id=labels["label_group"], match_distance=None)
    fitted = []
    for date, frame in frames.items():
        groups = frame.drop_duplicates("fit_segment").set_index("fit_segment")["label_group"]
        size = sizes[sizes["as_of_date"] == date].set_index("fit_segment")["customers"]
        local = group_centroids(centroids[centroids["as_of_date"] == date], size, groups)
        ids = frame.drop_duplicates("label_group").set_index("label_group")["segment_id"]
        fitted.append(FittedDate(date, local, {int(g): int(i) for g, i in ids.items()},
                                 gate_passed if date == as_of_date else gate.get(date, False)))
    aligned = fold_segment_ids(fitted, max_distance)
    out = {}
    for date, frame in frames.items():
        fold = aligned[date]
        new = frame.copy()
        new["segment_id"] = new["label_group"].map(fold.stable).astype("int64")
        new["match_distance"] = new["label_group"].map(fold.distance).astype(float)
        before = frame["match_distance"].astype(float)
        changed = (date == as_of_date or not new["segment_id"].equals(frame["segment_id"].astype("int64"))
                   or not ((before - new["match_distance"]).abs().fillna(0).lt(1e-12).all()
                           and before.isna().equals(new["match_distance"].isna())))
        out[date] = FoldedDate(new, changed)
    return out
