"""What the segmentation stage reads from and writes back to earlier runs in the warehouse.

The fold that gives every fitted date stable segment ids, the demo's planted
archetypes (evaluation only) and the rename after the CLV cross-check. SQL: ``include/sql/segmentation.sql``.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa

from include.runtime.errors import NoRowsError
from include.runtime.warehouse import Warehouse, named_sql

log = logging.getLogger(__name__)

SQL = named_sql("segmentation.sql")


@dataclass(frozen=True)
class FittedDate:
    """One date's fitted segments in model-local form, the input of :func:`fold_segment_ids`.

    ``centroids`` is indexed by the model-local segment (1 = highest mean
    365-day revenue, as :func:`include.segmentation.model.order_by_value`
    numbers them), so it depends only on that date's fit; ``stored`` maps the
    model-local segment to the id the date's rows carry now.
    """

    as_of_date: dt.date
    centroids: pd.DataFrame
    stored: dict[int, int]
    gate_passed: bool


@dataclass(frozen=True)
class AlignedDate:
    """The fold's result for one date: stable id and match distance of each model-local segment."""

    as_of_date: dt.date
    stable: dict[int, int]
    distance: dict[int, float]
    stored: dict[int, int]

    @property
    def relabel(self) -> dict[int, int]:
        """Stored id -> stable id (identity when the date's rows already carry the stable ids)."""
        return {self.stored[local]: stable for local, stable in self.stable.items()}

    @property
    def changed(self) -> bool:
        return any(old != new for old, new in self.relabel.items())


def fold_segment_ids(fitted: list[FittedDate], max_distance: float) -> dict[dt.date, AlignedDate]:
    """Stable segment ids of every fitted date: a fold over the dates in as-of order.

    Each date's model-local segments are matched (Hungarian, at most
    ``max_distance`` apart in z units) to the aligned centroids of the latest
    earlier date whose quality gate passed. A segment left unmatched is then
    matched the same way to the ids that date no longer had, at their last
    gate-passed centroid: a segment that one run merged into another (k one
    lower for a week) gets its id back when it returns, instead of a new id
    that would relabel its customers in every CRM a second time. Segments
    still unmatched take new ids from a counter carried by the fold (the
    first date's segments get 1..k). The result depends only on the dates'
    own fits, never on the order in which they were run.
    """
    from include.segmentation.model import match_segment_ids

    out: dict[dt.date, AlignedDate] = {}
    reference: pd.DataFrame | None = None
    last_seen: dict[int, pd.Series] = {}  # every id's centroid at the latest gate-passed date that had it
    counter = 1
    for fit in sorted(fitted, key=lambda f: f.as_of_date):
        local = fit.centroids.sort_index()
        if reference is None:
            stable = {int(seg): counter + i for i, seg in enumerate(local.index)}
            distance: dict[int, float] = {}
        else:
            stable, distance = match_segment_ids(local, reference, max_distance=max_distance, next_id=counter)
            stable, distance = _rematch_retired(local, stable, distance, reference, last_seen, max_distance,
                                                counter)
        counter = max(counter, max(stable.values(), default=0) + 1)
        out[fit.as_of_date] = AlignedDate(fit.as_of_date, stable, distance, dict(fit.stored))
        if fit.gate_passed:
            reference = local.rename(index=stable)
            last_seen.update({int(seg): row for seg, row in reference.iterrows()})
    return out


def _rematch_retired(local: pd.DataFrame, stable: dict[int, int], distance: dict[int, float],
                     reference: pd.DataFrame, last_seen: dict[int, pd.Series], max_distance: float,
                     counter: int) -> tuple[dict[int, int], dict[int, float]]:
    """``stable`` with its new ids (>= ``counter``) matched to retired ids where one is within reach.

    Retired: in ``last_seen`` but not in ``reference``. Every retired id is below ``counter``, so
    the segments still unmatched are numbered from ``counter`` again, in model-local order.
    """
    from include.segmentation.model import match_segment_ids

    new = [seg for seg in local.index if stable[int(seg)] >= counter]
    retired = sorted(set(last_seen) - {int(i) for i in reference.index})
    if not new or not retired:
        return stable, distance
    previous = pd.DataFrame([last_seen[i] for i in retired], index=retired)
    again, again_distance = match_segment_ids(local.loc[new], previous, max_distance=max_distance, next_id=counter)
    return {**stable, **again}, {**distance, **again_distance}


def model_local_order(monetary: pd.Series) -> dict[int, int]:
    """Segment id -> model-local segment (1 = highest mean revenue; ties by id), from per-segment means."""
    ranked = monetary.reset_index().set_axis(["segment_id", "monetary"], axis=1)
    ranked = ranked.sort_values(["monetary", "segment_id"], ascending=[False, True])
    return {int(seg): i for i, seg in enumerate(ranked["segment_id"], start=1)}


def fitted_dates(wh: Warehouse, exclude: dt.date | None = None) -> list[FittedDate]:
    """Every date with stored centroids (except ``exclude``), in model-local form."""
    centroids = wh.query_df(SQL["all_centroids"])
    profiles = wh.query_df(SQL["all_profile_values"])
    gates = wh.query_df(SQL["all_gates"])
    gate = {pd.Timestamp(d).date(): bool(g) for d, g in zip(gates["as_of_date"], gates["gate_passed"], strict=True)}
    out = []
    for date, frame in centroids.groupby("as_of_date"):
        date = pd.Timestamp(date).date()
        if date == exclude:
            continue
        values = profiles[pd.to_datetime(profiles["as_of_date"]).dt.date == date].set_index("segment_id")["monetary"]
        local_of = model_local_order(values)
        wide = frame.pivot(index="segment_id", columns="feature", values="z_value").astype(float)
        wide = wide.rename_axis(None, axis=1)
        wide.index = [local_of[int(s)] for s in wide.index]
        out.append(FittedDate(date, wide, {loc: seg for seg, loc in local_of.items()}, gate.get(date, False)))
    return out


def align_new_fit(wh: Warehouse, as_of_date: dt.date, local_centroids: pd.DataFrame,
                  max_distance: float) -> AlignedDate:
    """Stable ids of a new fit of ``as_of_date``: the fold over the earlier fitted dates and this one.

    Later dates do not take part (the fold runs in as-of order); publishing
    re-folds them (:func:`include.migration.publish.publish_from`).
    """
    earlier = [f for f in fitted_dates(wh, exclude=as_of_date) if f.as_of_date < as_of_date]
    this = FittedDate(as_of_date, local_centroids, {int(s): int(s) for s in local_centroids.index}, True)
    return fold_segment_ids([*earlier, this], max_distance)[as_of_date]


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
    from include.segmentation.model import available_features, order_by_value
    from include.segmentation.naming import name_segments, segment_stats

    d = {"as_of_date": as_of_date}
    features = load_features(wh, as_of_date)
    assigned = wh.query_df(SQL["assignments"], d)
    features = features.merge(assigned, on="customer_key")
    if features.empty:
        raise NoRowsError(f"segment_assignments has no rows matching customer_features for as_of_date={as_of_date}")
    columns, _ = available_features(features)
    labels = features["segment_id"].to_numpy()
    # Named on the model-local segments, as segment_customers names them, so a name never depends on ids.
    local = order_by_value(features, labels)
    stable_of = dict(zip(local, labels, strict=True))
    clv_local = pd.Series({loc: clv_by_segment.get(seg) for loc, seg in stable_of.items()}, dtype=float)
    named = name_segments(segment_stats(features, local, columns), clv=clv_local.dropna())
    named.index = [int(stable_of[loc]) for loc in named.index]
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
