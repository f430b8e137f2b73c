"""Stable segment ids across fitted dates: the fold over the dates in as-of order."""

import datetime as dt

import pandas as pd

from include.segmentation.history import FittedDate, fold_segment_ids

DAYS = [dt.date(2026, 10, 3) + dt.timedelta(weeks=w) for w in range(4)]


def fitted(day: dt.date, centroids: dict[int, tuple[float, float]], gate_passed: bool = True) -> FittedDate:
    frame = pd.DataFrame.from_dict(centroids, orient="index", columns=["monetary", "recency_days"])
    return FittedDate(day, frame, {int(s): int(s) for s in frame.index}, gate_passed)


def test_a_segment_merged_for_one_run_gets_its_id_back():
    top, big, lapsed = (2.0, -1.0), (0.5, 1.0), (-1.5, 2.0)
    dates = [
        fitted(DAYS[0], {1: top, 2: big, 3: lapsed}),
        fitted(DAYS[1], {1: top, 2: (-1.0, 1.8)}),  # big and lapsed merged for a week
        fitted(DAYS[2], {1: top, 2: (0.45, 1.05), 3: lapsed}),  # big is back, near its old centroid
        fitted(DAYS[3], {1: top, 2: big, 3: lapsed, 4: (5.0, 5.0)}),  # something new
    ]
    aligned = fold_segment_ids(dates, max_distance=1.0)
    assert aligned[DAYS[1]].stable == {1: 1, 2: 3}  # the merged segment sits nearer the lapsed
    assert aligned[DAYS[2]].stable == {1: 1, 2: 2, 3: 3}  # id 2 again, not a new id 4
    assert aligned[DAYS[2]].distance[2] < 0.1
    assert aligned[DAYS[3]].stable == {1: 1, 2: 2, 3: 3, 4: 4}  # a new kind takes the counter's next id
    # A retired id comes back only within reach of its last centroid; the fold ignores run order.
    far = fold_segment_ids([dates[0], dates[1], fitted(DAYS[2], {1: top, 2: (3.0, 3.0), 3: lapsed})], 1.0)
    assert far[DAYS[2]].stable[2] == 4
    assert fold_segment_ids(list(reversed(dates)), 1.0) == aligned


def test_a_date_whose_gate_failed_is_no_reference():
    dates = [fitted(DAYS[0], {1: (1.0, 0.0), 2: (-1.0, 0.0)}),
             fitted(DAYS[1], {1: (4.0, 4.0), 2: (-4.0, -4.0)}, gate_passed=False),
             fitted(DAYS[2], {1: (1.0, 0.1), 2: (-1.0, 0.1)})]
    aligned = fold_segment_ids(dates, max_distance=1.0)
    assert aligned[DAYS[1]].stable == {1: 3, 2: 4}
    assert aligned[DAYS[2]].stable == {1: 1, 2: 2}
