"""What the segmentation stage reads from and writes back to earlier runs in the warehouse.

Previous centroids (stable ids), the demo's planted archetypes (evaluation
only) and the rename after the CLV cross-check. SQL: ``include/sql/segmentation.sql``.
"""

from __future__ import annotations

import datetime as dt
import logging

import pandas as pd
import sqlalchemy as sa

from include.runtime.warehouse import Warehouse, named_sql

log = logging.getLogger(__name__)

SQL = named_sql("segmentation.sql")


def previous_centroids(wh: Warehouse, as_of_date: dt.date) -> tuple[pd.DataFrame | None, int | None]:
    """Centroids of the latest earlier published run, and the next unused segment id."""
    d = {"as_of_date": as_of_date}
    prev_date = wh.scalar(SQL["previous_published_date"], d)
    largest = wh.scalar(SQL["largest_other_segment_id"], d)
    next_id = int(largest) + 1 if largest is not None else None
    if prev_date is None:
        return None, next_id
    frame = wh.query_df(SQL["centroids"], {"as_of_date": prev_date})
    if frame.empty:
        return None, next_id
    previous = frame.pivot(index="segment_id", columns="feature", values="z_value")
    return previous.astype(float).rename_axis(None, axis=1), next_id


def planted_archetypes(wh: Warehouse, as_of_date: dt.date) -> pd.DataFrame | None:
    """Planted archetype per customer when the demo's ground truth is present (evaluation only)."""
    if not (wh.has_table("truth_identity") and wh.has_table("truth_persons")):
        return None
    return wh.query_df(SQL["planted_archetypes"], {"as_of_date": as_of_date})


def archetype_ari(features: pd.DataFrame, labels, truth: pd.DataFrame | None) -> float | None:
    """Adjusted Rand index of ``labels`` against the planted archetypes (``None`` without truth)."""
    from sklearn.metrics import adjusted_rand_score

    if truth is None or truth.empty:
        return None
    joined = features[["customer_key"]].assign(segment=labels).merge(truth, on="customer_key")
    return float(adjusted_rand_score(joined["archetype"], joined["segment"])) if len(joined) else None


def rename_with_clv(wh: Warehouse, as_of_date: dt.date, clv_by_segment) -> dict[int, tuple[str, str]]:
    """Re-derive the date's segment names with mean CLV, so a value claim stands only where CLV agrees.

    Recomputes the naming inputs from ``customer_features`` and
    ``segment_assignments``, rewrites names, rules and standings in
    ``segment_profiles`` and ``segment_assignments``, and in
    ``customer_segments`` where this date's own labels are already published.
    Returns ``{segment id: (old name, new name)}`` for the names that changed.
    """
    from include.features.build import load_features
    from include.segmentation.model import available_features
    from include.segmentation.naming import name_segments, segment_stats

    d = {"as_of_date": as_of_date}
    features = load_features(wh, as_of_date)
    assigned = wh.query_df(SQL["assignments"], d)
    features = features.merge(assigned, on="customer_key")
    if features.empty:
        raise ValueError(f"segment_assignments has no rows matching customer_features for as_of_date={as_of_date}")
    columns, _ = available_features(features)
    labels = features["segment_id"].to_numpy()
    named = name_segments(segment_stats(features, labels, columns), clv=pd.Series(clv_by_segment))
    old = wh.query_df(SQL["profile_names"], d)
    before = old.set_index("segment_id")["segment_name"].to_dict()
    changed = {int(s): (before.get(s), r.segment_name) for s, r in named.iterrows()
               if before.get(s) != r.segment_name}
    model_run = old["model_run_id"].iloc[0] if len(old) else None
    with wh.begin() as conn:
        for seg, r in named.iterrows():
            params = {**d, "segment_id": int(seg), "segment_name": r.segment_name, "name_rule": r.name_rule,
                      "value_standing": r.value_standing, "standing": r.standing, "model_run_id": model_run}
            conn.execute(sa.text(SQL["rename_profile"]), params)
            if int(seg) in changed:
                conn.execute(sa.text(SQL["rename_assignments"]), params)
                conn.execute(sa.text(SQL["rename_published"]), params)
    for seg, (was, now) in changed.items():
        log.warning("segment %d renamed after the CLV cross-check: '%s' -> '%s'", seg, was, now)
    return changed
