"""The labeller: one owner of ids and names; look-alikes published as one; stable ids in any run order; the gate."""

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from include.features.build import NUMERIC_FEATURES
from include.labels.build import label_date, name_fit, withheld_claims
from include.runtime.errors import QualityGateError
from include.runtime.run import RunInfo
from include.runtime.settings import PipelineSettings
from include.runtime.warehouse import Warehouse
from include.segmentation.model import available_features, z_profiles
from tests.segmentation.test_naming import LAPSED, customers

DATES = [dt.date(2026, 10, 31), dt.date(2026, 11, 7), dt.date(2026, 11, 14)]
#: Three kinds; "regulars" and "twins" differ by nothing a name says (tenure 400 against 440 days).
GROUPS = {1: dict(monetary=900, frequency=9, orders_lifetime=12), 2: dict(orders_lifetime=3, tenure_days=400),
          3: dict(orders_lifetime=3, tenure_days=440), 4: dict(LAPSED, orders_lifetime=1)}


def test_segments_no_name_tells_apart_are_published_as_one_label():
    features, fit = customers(GROUPS, n=150)
    columns, _ = available_features(features, NUMERIC_FEATURES)
    named = name_fit(features, fit, columns)
    assert named.group_of[2] == named.group_of[3] and len(set(named.group_of.values())) == 3
    assert named.merged == ["fit segments 2, 3 differ on nothing their names say: one label"]
    names = named.names["segment_name"]
    assert names.is_unique and not names.str.contains("customers\\)").any()
    assert named.names.loc[named.group_of[2], "customers"] == 300
    # Groups are numbered by revenue per customer: 1 is the top.
    assert named.names["revenue_per_customer"].is_monotonic_decreasing and names[1].startswith("Top value")


def test_failed_backtest_rows_become_withheld_claims():
    rows = pd.DataFrame({"claim": ["top value", "lapsed", "deprioritise or exclude", "new"],
                         "segment_name": ["Top value", None, None, None], "realised": [10.0, 0.1, 0.3, None],
                         "bar": [60.0, 0.25, 0.1, None], "verdict": ["failed", "held", "failed", "not checked"],
                         "backtest_date": pd.Timestamp("2026-08-16"),
                         "detail": ["Customers of 'Top value' (50) spent 10.00 each.", "x", "Customers told x.", "y"]})
    withheld = withheld_claims(rows)
    assert set(withheld) == {"top value", "deprioritise", "exclude"}
    assert withheld["top value"] == "withheld: backtest on 2026-08-16 showed customers of 'Top value' (50) spent 10.00 each"
    # Together the tiers held 13%, "exclude" alone 11.5% (failed), "deprioritise" alone 1.5%: only "exclude" goes.
    tiers = pd.DataFrame({"claim": ["deprioritise", "exclude", "deprioritise or exclude"],
                          "segment_name": ["deprioritise", "exclude", None], "realised": [0.015, 0.115, 0.13],
                          "bar": 0.1, "verdict": ["held", "failed", "failed"], "backtest_date": pd.Timestamp("2026-08-16"),
                          "detail": ["a", "b", "c"]})
    assert set(withheld_claims(tiers)) == {"exclude"}
    # Each alone passed, together they did not: both go.
    assert set(withheld_claims(tiers.assign(realised=[0.06, 0.07, 0.13], verdict=["held", "held", "failed"]))) == {
        "deprioritise", "exclude"}


def write_fit(wh: Warehouse, date: dt.date, groups: dict[int, dict], seed: int, gate: bool = True) -> None:
    """customer_features and a fit of ``date`` (fit segment = the group's rank by revenue), as the stages write them."""
    features, fit = customers(groups, n=120, seed=seed)
    features.insert(0, "customer_key", [f"K{i:05d}" for i in range(len(features))])
    features.insert(0, "as_of_date", date)
    order = {g: i for i, g in enumerate(features.groupby(fit)["monetary"].mean().sort_values(ascending=False).index, 1)}
    local = np.array([order[g] for g in fit])
    d = {"as_of_date": date}
    columns, _ = available_features(features, NUMERIC_FEATURES)
    centroids = z_profiles(features, local, columns).stack().rename("z_value").reset_index()
    centroids.columns = ["fit_segment", "feature", "z_value"]
    wh.replace_partition("customer_features", features, d)
    wh.replace_partition("segment_assignments", pd.DataFrame({"as_of_date": date, "customer_key": features["customer_key"],
                                                              "fit_segment": local, "model_run_id": f"m{date}"}), d)
    sizes = pd.Series(local).value_counts().sort_index()
    wh.replace_partition("segment_profiles", pd.DataFrame({"as_of_date": date, "fit_segment": sizes.index,
                                                           "customers": sizes.to_numpy(), "jaccard": 0.9}), d)
    wh.replace_partition("segment_centroids", centroids.assign(as_of_date=date), d)
    wh.replace_partition("segmentation_runs", pd.DataFrame([{
        "as_of_date": date, "model_run_id": f"m{date}", "algorithm": "test", "k": len(groups), "gate_passed": gate,
        "gate_reason": None if gate else "fit segment 2 bootstrap Jaccard 0.41 < min_jaccard 0.75",
        "published": False}]), d)


def labelled(url: str, order: list[int]) -> pd.DataFrame:
    with Warehouse(url) as wh:
        wh.ensure_schema()
        for i, date in enumerate(DATES):
            write_fit(wh, date, GROUPS if i != 1 else {k: v for k, v in GROUPS.items() if k != 3}, seed=i)
        for i in order:
            label_date(wh, DATES[i], max_distance=1.5)
        return wh.query_df("SELECT * FROM segment_labels ORDER BY as_of_date, fit_segment")


def test_stable_ids_and_names_do_not_depend_on_the_labelling_order(tmp_path):
    in_order = labelled(f"duckdb:///{tmp_path / 'a.duckdb'}", [0, 1, 2])
    shuffled = labelled(f"duckdb:///{tmp_path / 'b.duckdb'}", [2, 0, 1, 2])
    pd.testing.assert_frame_equal(in_order, shuffled)
    # One name per id and date; the same kinds keep their ids from date to date.
    per_date = in_order.drop_duplicates(["as_of_date", "segment_id"])
    assert not per_date.duplicated(["as_of_date", "segment_name"]).any()
    heads = per_date.assign(head=per_date["segment_name"].str.split(",").str[0]).groupby("segment_id")["head"].agg(set)
    assert all(len(h) == 1 for h in heads), heads
    assert in_order["backtest_verdict"].eq("not checked: no backtest for this date").all()


def test_the_gate_says_whether_stability_or_validity_failed(tmp_path):
    url = f"duckdb:///{tmp_path / 'gate.duckdb'}"
    look_alikes = {1: dict(orders_lifetime=3, tenure_days=400), 2: dict(orders_lifetime=3, tenure_days=420)}
    with Warehouse(url) as wh:
        wh.ensure_schema()
        write_fit(wh, DATES[0], look_alikes, seed=1, gate=False)
        out = label_date(wh, DATES[0], max_distance=1.5)
    assert not out.run["stability_passed"] and not out.run["validity_passed"] and not out.run["gate_passed"]
    assert out.run["gate_reason"].startswith("stability: fit segment 2 bootstrap Jaccard 0.41")
    assert "validity: the fit's segments differ on nothing their names say" in out.run["gate_reason"]
    assert json.loads(out.run["claims_withheld"]) == {}
    run = RunInfo("test_labels", "gate", DATES[0], PipelineSettings(), url)
    from include.stages.publish import publish_segments

    with pytest.raises(QualityGateError, match="validity: the fit's segments differ on nothing"):
        publish_segments(run)


def test_clv_is_a_witness_lapsed_with_many_alive_is_withheld_and_flagged(tmp_path):
    """A segment the members' states call lapsed, where the CLV model gives most of them P(alive) >= 0.5."""
    from include.stages.clv import crosscheck_clv

    url = f"duckdb:///{tmp_path / 'clv.duckdb'}"
    groups = {1: dict(monetary=900, frequency=9, orders_lifetime=12), 2: dict(orders_lifetime=3),
              3: dict(LAPSED, orders_lifetime=3)}
    with Warehouse(url) as wh:
        wh.ensure_schema()
        write_fit(wh, DATES[0], groups, seed=4)
        features = wh.query_df("SELECT customer_key FROM customer_features ORDER BY customer_key")
        lapsed = wh.query_df("SELECT customer_key FROM segment_assignments WHERE fit_segment = 3")["customer_key"]
        p_alive = np.where(features["customer_key"].isin(lapsed), 0.8, 0.9)
        wh.replace_partition("customer_clv", pd.DataFrame({
            "as_of_date": DATES[0], "customer_key": features["customer_key"], "p_alive": p_alive,
            "clv_365d": np.where(features["customer_key"].isin(lapsed), 5.0, 100.0)}), {"as_of_date": DATES[0]})
        out = label_date(wh, DATES[0], max_distance=1.5)
    names = out.labels.drop_duplicates("label_group").set_index("fit_segment")["segment_name"]
    assert not names[3].startswith("Lapsed") and out.run["clv_check"] == "checked"
    rule = out.labels.set_index("fit_segment").loc[3, "name_rule"]
    assert "'lapsed' not said: CLV gives 100% of members P(alive) >= 0.5" in rule
    crosscheck_clv(RunInfo("test_labels", "clv", DATES[0], PipelineSettings(), url))
    with Warehouse(url) as wh:
        check = wh.query_df("SELECT * FROM segment_clv_check WHERE as_of_date = :d", {"d": DATES[0]})
    flagged = check[check["flag"]]
    assert len(flagged) == 1 and "'lapsed' withheld by the labeller" in flagged["reason"].iloc[0]
    assert check["alive_share"].notna().all()


def test_bgnbd_p_alive_of_one_time_buyers_is_no_witness(tmp_path):
    """BG/NBD gives a customer without a repeat purchase P(alive) = 1 by construction: it cannot deny 'lapsed'."""
    url = f"duckdb:///{tmp_path / 'bgnbd.duckdb'}"
    groups = {1: dict(monetary=900, frequency=9, orders_lifetime=12), 2: dict(orders_lifetime=3),
              3: dict(LAPSED, orders_lifetime=1)}
    with Warehouse(url) as wh:
        wh.ensure_schema()
        write_fit(wh, DATES[0], groups, seed=4)
        features = wh.query_df("SELECT customer_key, repeat_buyer FROM customer_features ORDER BY customer_key")
        p_alive = np.where(features["repeat_buyer"] == 0, 1.0, 0.9)
        wh.replace_partition("customer_clv", pd.DataFrame({
            "as_of_date": DATES[0], "customer_key": features["customer_key"], "p_alive": p_alive,
            "clv_365d": 10.0, "clv_model": "BG/NBD"}), {"as_of_date": DATES[0]})
        out = label_date(wh, DATES[0], max_distance=1.5)
    names = out.labels.set_index("fit_segment")["segment_name"]
    assert names[3].startswith("Lapsed one-time buyers"), names.tolist()
