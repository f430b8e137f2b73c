"""Publishing labels: the quality gate and the hysteresis fold over every run from a date on.

Published labels are a fold over the raw labels in as-of order
(:func:`include.migration.hysteresis.apply_hysteresis`), so publishing a date
recomputes it and every later date. A date whose quality gate failed carries
the previous published labels forward (with its own RFM columns); when there
is nothing to carry forward, :func:`publish_from` raises
:class:`~include.runtime.errors.QualityGateError` after writing the fold.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pandas as pd

from include.migration.hysteresis import PublishStep, apply_hysteresis, run_dates
from include.runtime.errors import QualityGateError
from include.runtime.warehouse import Warehouse, named_sql

SQL = named_sql("publish.sql")

#: Columns of ``customer_segments``, in table order.
COLUMNS = ["as_of_date", "customer_key", "segment_id", "segment_name", "model_run_id", "rfm_r", "rfm_f", "rfm_m",
           "rfm_segment", "raw_segment_id", "pending_segment_id", "pending_runs"]
_FOLD_STATE = ["customer_key", "segment_id", "pending_segment_id", "pending_runs"]


@dataclass
class PublishedDate:
    """What publishing one date did."""

    as_of_date: dt.date
    gate_passed: bool
    gate_reason: str | None
    labels: pd.DataFrame  # rows written to customer_segments
    step: PublishStep | None  # the hysteresis step; None when the gate failed

    @property
    def raw_moves(self) -> int:
        return self.step.raw_moves if self.step else 0

    @property
    def held_back_share(self) -> float:
        return self.step.held_back / self.step.raw_moves if self.step and self.step.raw_moves else 0.0


def publish_from(wh: Warehouse, as_of_date: dt.date, runs_required: int) -> list[PublishedDate]:
    """Publish ``as_of_date`` and republish every later date; return one entry per date, in order.

    Raises
    ------
    QualityGateError
        When ``as_of_date``'s gate failed and no earlier labels exist to carry
        forward (the fold is written first, so later dates stay consistent).
    """
    dates = run_dates(wh)
    if as_of_date not in dates:
        raise ValueError(f"segmentation_runs has no row for as_of_date={as_of_date}; run segmentation first")
    start = dates.index(as_of_date)
    previous = published_labels(wh, dates[start - 1]) if start > 0 else None
    results = []
    for date in dates[start:]:
        result = _publish_one(wh, date, previous, runs_required)
        results.append(result)
        previous = result.labels
    first = results[0]
    if not first.gate_passed and first.labels.empty:
        raise QualityGateError(f"no labels published for {as_of_date}: {first.gate_reason} "
                               "(the quality gate failed and no earlier labels exist to carry forward)")
    return results


def _publish_one(wh: Warehouse, date: dt.date, previous: pd.DataFrame | None, runs_required: int) -> PublishedDate:
    d = {"as_of_date": date}
    status = wh.query_df(SQL["gate_status"], d).iloc[0]
    raw = wh.query_df(SQL["raw_labels"], d)
    rfm = wh.query_df(SQL["rfm"], d)
    names = wh.query_df(SQL["segment_names"], d).set_index("segment_id")["segment_name"].to_dict()
    gate_passed = bool(status["gate_passed"])
    if gate_passed:
        step = apply_hysteresis(raw, previous, runs_required)
        labels, model_run_id = step.published, status["model_run_id"]
    else:
        step = None
        # Carry the previous labels forward; their RFM columns are replaced by this date's.
        labels = (previous[_FOLD_STATE] if previous is not None else pd.DataFrame(columns=_FOLD_STATE))
        labels = labels.merge(raw, on="customer_key", how="left")
        model_run_id = previous["model_run_id"].iloc[0] if previous is not None and len(previous) else None
    old_names = ({} if previous is None else
                 previous.drop_duplicates("segment_id").set_index("segment_id")["segment_name"].to_dict())
    # Carried-forward labels keep the names they were published with: this run's names
    # describe a model that was not published.
    first, second = (names, old_names) if gate_passed else (old_names, names)
    labels = labels.assign(
        as_of_date=date, model_run_id=model_run_id,
        segment_name=[first.get(i, second.get(i)) for i in labels["segment_id"]],
    ).merge(rfm, on="customer_key", how="left")[COLUMNS]
    wh.replace_partition("customer_segments", labels, d)
    wh.run_script(SQL["mark_published"], {**d, "published": gate_passed})
    reason = None if gate_passed else str(status["gate_reason"])
    return PublishedDate(date, gate_passed, reason, labels, step)


def published_labels(wh: Warehouse, date: dt.date) -> pd.DataFrame | None:
    """The published snapshot of ``date`` with the fold's state, or ``None`` when there is none."""
    frame = wh.query_df(SQL["published_labels"], {"as_of_date": date})
    if frame.empty:
        return None
    frame["pending_segment_id"] = frame["pending_segment_id"].astype("Int64")
    return frame
