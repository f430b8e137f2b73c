"""Segmentation across dates: the fold that gives every labelled date stable segment ids, and the demo's truth.

:func:`fold_segment_ids` is pure; the labeller (:mod:`include.labels.ids`) feeds it every
labelled date's label groups. The demo's planted archetypes are read for evaluation only.
SQL: ``include/sql/segmentation.sql``.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import pandas as pd

from include.runtime.warehouse import Warehouse, named_sql

log = logging.getLogger(__name__)

SQL = named_sql("segmentation.sql")


@dataclass(frozen=True)
class FittedDate:
    """One date's segments in model-local form, the input of :func:`fold_segment_ids`.

    ``centroids`` is indexed by the model-local segment (a label group: 1 = highest revenue per
    customer, as :func:`include.labels.build.name_fit` numbers them), so it depends only on that
    date's fit; ``stored`` maps the model-local segment to the id the date's rows carry now.
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
