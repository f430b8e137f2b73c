"""Migration: hysteresis fold, transitions, Markov view, order independence, alerts."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from include.migration.hysteresis import GONE, NEW, apply_hysteresis, markov_view, top_segment_outflow, transitions
from include.runtime.errors import MigrationAlert, QualityGateError
from include.runtime.run import RunInfo
from include.runtime.settings import PipelineSettings
from include.runtime.warehouse import Warehouse
from include.stages.migration import check_migration, track_migration
from include.stages.publish import publish_segments

DATES = [dt.date(2026, 10, 3) + dt.timedelta(weeks=i) for i in range(4)]
#: Raw model labels per customer over the four weekly runs.
RAW = {
    "flapper": [1, 2, 1, 2],  # never two runs in a row elsewhere: stays in 1
    "mover": [1, 2, 2, 2],  # moves once it has been in 2 for two runs
    "stayer": [2, 2, 2, 2],
    "late": [None, 3, 3, 1],  # appears in week 2
    "leaver": [3, 3, None, None],  # disappears in week 3
}
NAMES = {1: "High-value core", 2: "Loyal potential", 3: "Hibernating"}


def test_hysteresis_needs_consecutive_runs():
    raw = lambda week: pd.DataFrame(  # noqa: E731
        [(k, v[week]) for k, v in RAW.items() if v[week] is not None], columns=["customer_key", "raw_segment_id"])
    state, history = None, []
    for week in range(4):
        step = apply_hysteresis(raw(week), state, runs_required=2)
        state = step.published
        history.append(state.set_index("customer_key")["segment_id"].to_dict())
    assert [h["flapper"] for h in history] == [1, 1, 1, 1]
    assert [h["mover"] for h in history] == [1, 1, 2, 2]
    assert [h.get("late") for h in history] == [None, 3, 3, 3]
    assert "leaver" not in history[2]
    # Week 4: flapper's raw move and late's raw move are both held back.
    assert step.raw_moves == 2 and step.held_back == 2
    no_smoothing = apply_hysteresis(raw(1), apply_hysteresis(raw(0), None, 1).published, 1)
    assert no_smoothing.held_back == 0 and no_smoothing.published.set_index("customer_key")["segment_id"]["flapper"] == 2


def test_transitions_count_new_and_gone_customers():
    before = pd.DataFrame({"customer_key": ["a", "b", "c"], "segment_id": [1, 1, 2]})
    after = pd.DataFrame({"customer_key": ["a", "b", "d"], "segment_id": [1, 2, 2]})
    clv = pd.Series({"a": 10.0, "b": 20.0, "c": 5.0, "d": 1.0})
    out = transitions(before, after, NAMES, NAMES, clv, clv)
    rows = {(r.from_segment, r.to_segment): (r.customers, r.rate, r.clv_sum) for r in out.itertuples()}
    assert rows[("High-value core", "High-value core")] == (1, 0.5, 10.0)
    assert rows[("High-value core", "Loyal potential")] == (1, 0.5, 20.0)
    assert rows[("Loyal potential", GONE)] == (1, 1.0, 5.0)
    assert rows[(NEW, "Loyal potential")] == (1, 1.0, 1.0)
    assert out["customers"].sum() == 4


def test_markov_view_projects_and_finds_the_steady_state():
    moves = pd.DataFrame({"from_segment_id": [1, 1, 2, 2], "to_segment_id": [1, 2, 2, 1],
                          "customers": [90, 10, 80, 20]})
    view = markov_view([moves], pd.Series({1: 100, 2: 100}), pd.Series({1: 50.0, 2: 10.0}), periods=1)
    np.testing.assert_allclose(view["matrix"].to_numpy(), [[0.9, 0.1], [0.2, 0.8]])
    np.testing.assert_allclose(view["projected_mix"].to_numpy(), [110, 90])
    np.testing.assert_allclose(view["steady_state"].to_numpy(), [2 / 3, 1 / 3])
    assert view["current_value"] == pytest.approx(6000) and view["projected_value"] == pytest.approx(6400)


def test_top_segment_outflow():
    frame = pd.DataFrame({"from_segment_id": [1, 1, 1, 2], "to_segment_id": [1, 2, None, 2], "customers": [6, 3, 1, 5]})
    assert top_segment_outflow(frame, 1) == pytest.approx(0.4)
    assert top_segment_outflow(frame, 9) == 0.0


def seed_runs(url):
    """Write fits (fit-local), labels (stable id = fit segment here), gates and RFM for DATES (no model fits)."""
    with Warehouse(url) as wh:
        wh.ensure_schema()
        for week, date in enumerate(DATES):
            raw = [(k, v[week]) for k, v in RAW.items() if v[week] is not None]
            d = {"as_of_date": date}
            wh.replace_partition("segment_assignments", pd.DataFrame(
                {"as_of_date": date, "customer_key": [k for k, _ in raw], "fit_segment": [s for _, s in raw],
                 "model_run_id": f"run{week}"}), d)
            wh.replace_partition("segment_profiles", pd.DataFrame(
                {"as_of_date": date, "fit_segment": list(NAMES), "customers": 1, "monetary": [900.0, 300.0, 10.0]}), d)
            wh.replace_partition("segment_labels", pd.DataFrame(
                {"as_of_date": date, "fit_segment": list(NAMES), "label_group": list(NAMES), "segment_id": list(NAMES),
                 "segment_name": list(NAMES.values()), "customers": 1, "revenue_per_customer": [900.0, 300.0, 10.0],
                 "model_run_id": f"run{week}"}), d)
            wh.replace_partition("segmentation_runs", pd.DataFrame([{
                "as_of_date": date, "model_run_id": f"run{week}", "algorithm": "test", "k": 3, "published": False,
                "gate_passed": True}]), d)
            wh.replace_partition("label_runs", pd.DataFrame([{
                "as_of_date": date, "model_run_id": f"run{week}", "labels": 3, "stability_passed": True,
                "validity_passed": True, "gate_passed": True}]), d)
            wh.replace_partition("customer_rfm", pd.DataFrame(
                {"as_of_date": date, "customer_key": [k for k, _ in raw], "rfm_r": 3, "rfm_f": 3, "rfm_m": 3,
                 "rfm_segment": "Need Attention"}), d)


def publish(url, date, **settings):
    run = RunInfo("test_migration", f"run-{date}", date, PipelineSettings(**settings), url)
    publish_segments(run)
    track_migration(run)
    return run


def tables(url):
    with Warehouse(url) as wh:
        segs = wh.query_df("SELECT * FROM customer_segments ORDER BY as_of_date, customer_key")
        trans = wh.query_df("SELECT * FROM segment_transitions ORDER BY to_date, from_segment, to_segment")
    return segs, trans


def test_out_of_order_backfill_and_reruns_match_in_order_runs(tmp_path):
    in_order = f"duckdb:///{tmp_path / 'a.duckdb'}"
    shuffled = f"duckdb:///{tmp_path / 'b.duckdb'}"
    seed_runs(in_order)
    seed_runs(shuffled)
    for date in DATES:
        publish(in_order, date)
    for i in (2, 0, 3, 1, 1):  # out of order, with a re-run
        publish(shuffled, DATES[i])
    segs_a, trans_a = tables(in_order)
    segs_b, trans_b = tables(shuffled)
    pd.testing.assert_frame_equal(segs_a, segs_b)
    pd.testing.assert_frame_equal(trans_a, trans_b)
    final = segs_a[segs_a["as_of_date"] == pd.Timestamp(DATES[3])].set_index("customer_key")
    assert final.loc["flapper", "segment_id"] == 1 and final.loc["flapper", "raw_segment_id"] == 2
    assert final.loc["mover", "segment_id"] == 2
    assert sorted(trans_a["to_date"].unique()) == [pd.Timestamp(d) for d in DATES[1:]]
    week3 = trans_a[trans_a["to_date"] == pd.Timestamp(DATES[2])]
    assert (week3["to_segment"] == GONE).sum() == 1  # the leaver


def test_alert_fails_the_check_but_keeps_the_history(tmp_path):
    url = f"duckdb:///{tmp_path / 'c.duckdb'}"
    seed_runs(url)
    publish(url, DATES[0], hysteresis_runs=1)
    run = publish(url, DATES[1], hysteresis_runs=1, alert_top_outflow=0.2)
    with pytest.raises(MigrationAlert, match="High-value core"):
        check_migration(run)
    with Warehouse(url) as wh:
        assert wh.scalar("SELECT COUNT(*) FROM customer_segments WHERE as_of_date = :d", {"d": DATES[1]}) == 5
    quiet = RunInfo("test_migration", "quiet", DATES[1], PipelineSettings(alert_top_outflow=1.0), url)
    assert check_migration(quiet)["outflow"] == pytest.approx(1.0)  # flapper and mover both left


def test_republishing_carries_labels_through_a_later_failed_gate(tmp_path):
    # Re-running an early date republishes later ones; a later date whose gate failed
    # carries the fold's labels forward (this once crashed on duplicated RFM columns).
    in_order = f"duckdb:///{tmp_path / 'a.duckdb'}"
    rerun = f"duckdb:///{tmp_path / 'b.duckdb'}"
    for url in (in_order, rerun):
        seed_runs(url)
        with Warehouse(url) as wh:
            wh.run_script("UPDATE label_runs SET gate_passed = FALSE WHERE as_of_date = :d", {"d": DATES[2]})
    for date in DATES:
        publish(in_order, date)
    for i in (0, 1, 2, 3, 0):
        publish(rerun, DATES[i])
    segs_a, _ = tables(in_order)
    segs_b, _ = tables(rerun)
    pd.testing.assert_frame_equal(segs_a, segs_b)
    week3 = segs_a[segs_a["as_of_date"] == pd.Timestamp(DATES[2])].set_index("customer_key")
    week2 = segs_a[segs_a["as_of_date"] == pd.Timestamp(DATES[1])].set_index("customer_key")
    common = week3.index.intersection(week2.index)
    assert (week3.loc[common, "segment_id"] == week2.loc[common, "segment_id"]).all()
    present = week3["raw_segment_id"].notna()
    assert week3.loc[present, "rfm_segment"].notna().all()


def test_failed_gate_with_nothing_to_carry_forward_fails_publishing(tmp_path):
    url = f"duckdb:///{tmp_path / 'd.duckdb'}"
    seed_runs(url)
    with Warehouse(url) as wh:
        wh.run_script("UPDATE label_runs SET gate_passed = FALSE, gate_reason = 'stability: fit segment 2 Jaccard 0.41' "
                      "WHERE as_of_date = :d", {"d": DATES[0]})
    run = RunInfo("test_migration", "gate", DATES[0], PipelineSettings(), url)
    with pytest.raises(QualityGateError, match=f"no labels published for {DATES[0]}: stability: fit segment 2 Jaccard"):
        publish_segments(run)
    with Warehouse(url) as wh:
        assert wh.scalar("SELECT COUNT(*) FROM customer_segments WHERE as_of_date = :d", {"d": DATES[0]}) == 0
