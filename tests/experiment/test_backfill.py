"""The experiment record is a pure function of the published history and of what was delivered.

Backfilling an early date republishes the later ones (the hysteresis fold) and the economics stage
recomputes their actions; the experiment stage recomputes every later date too, names the ones whose
record changed, and ends with exactly the tables an in-order run over the same history writes. The
policy starts on the first date whose labels reached a CRM target (the real outbox push operator here).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from include.experiment.build import ExperimentSettings, run_experiment
from include.runtime.warehouse import Warehouse
from tests.published import write_published

W0, W1, W2, W3 = (dt.date(2026, 10, 3) + dt.timedelta(weeks=i) for i in range(4))  # W0: the backfilled date
KEYS = [f"C{i:015x}" for i in range(300)]
NAMES = {1: "High-value core", 2: "Loyal potential", 3: "Costly tail"}
SETTINGS = ExperimentSettings(experiment_name="exp-a", holdout_share=0.2)
#: Columns that differ by construction between two warehouses (when and by which run a row was written).
BOOKKEEPING = {"policy_runs": ["recorded_at", "rewritten_by", "rewrite_detail"]}
KEYS_OF = {"customer_holdout": ["as_of_date", "customer_key"], "policy_runs": ["as_of_date"],
           "segment_lift": ["as_of_date", "segment_id", "metric"]}


def segments(shift: int, moved: int = 0) -> np.ndarray:
    seg = np.array([1 + (i + shift) % 3 for i in range(len(KEYS))])
    seg[:moved] = 1 + seg[:moved] % 3  # what a republish of the date moved
    return seg


def publish(url: str, day: dt.date, shift: int, moved: int = 0) -> None:
    write_published(url, day, KEYS, segments(shift, moved), NAMES)


def experiment(url: str, day: dt.date) -> dict:
    with Warehouse(url) as wh:
        return run_experiment(wh, day, SETTINGS)


def push(url: str, day: dt.date, dry_run: bool = False) -> dict:
    """The DAG's outbox push after the run (the newest complete labels on or after ``day``)."""
    from segmentation_providers.operators.push_segments import PushSegmentsOperator

    return PushSegmentsOperator(task_id="push_outbox", target="outbox", as_of_date=day.isoformat(),
                                warehouse_url=url, dry_run=dry_run).execute({"run_id": f"push-{day}"})


def tables(url: str) -> dict[str, pd.DataFrame]:
    out = {}
    with Warehouse(url) as wh:
        for table, keys in KEYS_OF.items():
            frame = wh.query_df(f"SELECT * FROM {table}").drop(columns=BOOKKEEPING.get(table, []))
            out[table] = frame.sort_values(keys, ignore_index=True)
    return out


def starts(url: str) -> dict[dt.date, dt.date]:
    with Warehouse(url) as wh:
        frame = wh.query_df("SELECT as_of_date, policy_start FROM policy_runs ORDER BY as_of_date")
    return {pd.Timestamp(d).date(): pd.Timestamp(s).date() for d, s in zip(frame["as_of_date"],
                                                                          frame["policy_start"], strict=True)}


def disagreements(url: str) -> int:
    """Customer-dates (of dates with a holdout record) whose ``customer_holdout`` row disagrees with the
    published segment or action."""
    with Warehouse(url) as wh:
        return int(wh.scalar(
            "SELECT COUNT(*) FROM customer_segments s "
            "JOIN customer_priority p ON p.as_of_date = s.as_of_date AND p.customer_key = s.customer_key "
            "LEFT JOIN customer_holdout h ON h.as_of_date = s.as_of_date AND h.customer_key = s.customer_key "
            "WHERE (h.customer_key IS NULL OR h.segment_id <> s.segment_id OR h.segment_name <> s.segment_name "
            "OR (NOT h.holdout AND h.action <> p.action) OR (h.holdout AND h.action IS NOT NULL)) "
            "AND s.as_of_date IN (SELECT DISTINCT as_of_date FROM customer_holdout)"))


def test_early_backfill_recomputes_later_dates_as_an_in_order_run_would(tmp_path, airflow_db):
    # Live weekly runs W1..W3, each pushed; then W0 is backfilled. Publishing W0 republishes the later
    # dates: here the fold moves 30 customers' published segment on W2 (and the economics stage their action).
    live = f"duckdb:///{tmp_path / 'live.duckdb'}"
    for day, shift in ((W1, 0), (W2, 1), (W3, 2)):
        publish(live, day, shift)
        experiment(live, day)
        assert push(live, day)["acknowledged"] > 0
    assert starts(live) == {W1: W1, W2: W1, W3: W1}
    publish(live, W0, 2)
    publish(live, W2, 1, moved=30)
    assert disagreements(live) == 30  # the experiment record of W2 no longer matches what is published
    result = experiment(live, W0)
    push(live, W0)  # sends the newest labels' changes (W3's: none); W0's own labels never reach the CRM

    assert list(result["later_dates_changed"]) == [W2]
    assert result["later_dates_changed"][W2] == "customer_holdout: 30 customers' segment, name, action or arm"
    assert result["figures"]["later_dates_changed"] == 1
    assert disagreements(live) == 0
    # The start is the first delivered date: W0 was never delivered, so it starts nothing (its own run is
    # its start, with nothing measured) and the later dates keep W1.
    assert starts(live) == {W0: W0, W1: W1, W2: W1, W3: W1}
    with Warehouse(live) as wh:
        rewritten = wh.query_df("SELECT as_of_date, rewritten_by, rewrite_detail FROM policy_runs "
                                "WHERE rewritten_by IS NOT NULL")
        assert wh.scalar("SELECT COUNT(*) FROM segment_lift WHERE as_of_date = :d", {"d": W0}) == 0
    assert [pd.Timestamp(d).date() for d in rewritten["as_of_date"]] == [W2]
    assert pd.Timestamp(rewritten["rewritten_by"].iloc[0]).date() == W0

    # An in-order run over the same published history and the same deliveries writes the same tables.
    in_order = f"duckdb:///{tmp_path / 'in_order.duckdb'}"
    for day, shift, moved, delivered in ((W0, 2, 0, False), (W1, 0, 0, True), (W2, 1, 30, True),
                                         (W3, 2, 0, True)):
        publish(in_order, day, shift, moved)
        assert experiment(in_order, day)["later_dates_changed"] == {}
        if delivered:
            push(in_order, day)
    a, b = tables(in_order), tables(live)
    for table in KEYS_OF:
        pd.testing.assert_frame_equal(a[table], b[table], check_exact=False, rtol=1e-9, obj=table)
    assert len(a["customer_holdout"]) == 4 * len(KEYS) and len(a["policy_runs"]) == 4 and len(a["segment_lift"])

    # Backfilling W0 again changes nothing: no later date is named, W2 keeps the record of W0's first run.
    again = experiment(live, W0)
    assert again["later_dates_changed"] == {}
    with Warehouse(live) as wh:
        assert wh.query_df("SELECT as_of_date FROM policy_runs WHERE rewritten_by IS NOT NULL").shape[0] == 1


def test_policy_starts_on_the_first_delivered_date(tmp_path, airflow_db):
    url = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    # W0 is run but its push is a dry run (nothing sent), W1 and W2 are delivered.
    for day, shift in ((W0, 0), (W1, 1), (W2, 2)):
        publish(url, day, shift)
        figures = experiment(url, day)["figures"]
        push(url, day, dry_run=day == W0)
        assert figures["policy_start"] == (W0 if day == W0 else W1).isoformat()
    assert starts(url) == {W0: W0, W1: W1, W2: W1}
    with Warehouse(url) as wh:
        window = wh.query_df("SELECT DISTINCT window_start FROM segment_lift WHERE as_of_date = :d", {"d": W2})
    assert [pd.Timestamp(d).date() for d in window["window_start"]] == [W1 + dt.timedelta(days=1)]


@pytest.mark.parametrize("share", [float("nan"), 1.0, -0.1])
def test_a_bad_holdout_share_is_a_finding_naming_the_setting(tmp_path, share):
    from include.runtime.errors import PipelineFinding

    url = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    publish(url, W0, 0)
    with Warehouse(url) as wh, pytest.raises(PipelineFinding, match="setting holdout_share must be in"):
        run_experiment(wh, W0, ExperimentSettings(holdout_share=share))
