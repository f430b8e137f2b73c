"""Features on a hand-built dataset, on DuckDB and on Snowflake (through fakesnow)."""


import datetime as dt

import pandas as pd
import pytest

from include.extract.validate import extract_and_validate
from include.features.build import build_customer_features, features_as_of, load_features
from include.identity.resolve import resolve_identities
from include.runtime.settings import DEFAULT_SUPPORT_COST_BY_CHANNEL
from tests.handbuilt import ANN, AS_OF, raw_tables
from tests.warehouses import warehouse


def run_stages(wh):
    for name, frame in raw_tables().items():
        wh.replace_table(name, frame)
    extract_and_validate(wh, AS_OF, max_bad_share=1.0)
    resolve_identities(wh, AS_OF)
    build_customer_features(wh, AS_OF, DEFAULT_SUPPORT_COST_BY_CHANNEL)
    return load_features(wh, AS_OF)


@pytest.mark.parametrize("kind", ["duckdb", "snowflake"])
def test_features_match_the_hand_computed_values(kind, tmp_path):
    with warehouse(kind, tmp_path) as wh:
        features = run_stages(wh)
        quarantine = wh.query_df("SELECT source_key, reason FROM quarantine")
        key = wh.query_df("SELECT customer_key FROM identity_map WHERE source_id = 'W1'")["customer_key"][0]
    # W1 and A1 share an email: one customer; C1 is another; W2's only order is negative.
    assert len(features) == 2
    assert dict(zip(quarantine["source_key"], quarantine["reason"], strict=True)) == {"o7": "negative_value"}
    ann = features.set_index("customer_key").loc[key]
    for column, expected in ANN.items():
        if isinstance(expected, str):
            assert ann[column] == expected, column
        else:
            assert ann[column] == pytest.approx(expected), column


def test_duckdb_and_snowflake_give_the_same_features(tmp_path):
    with warehouse("duckdb", tmp_path) as wh:
        duck = run_stages(wh)
    with warehouse("snowflake", tmp_path) as wh:
        snow = run_stages(wh)
    cols = [c for c in duck.columns if c != "as_of_date"]
    d = duck[cols].sort_values("customer_key").reset_index(drop=True)
    s = snow[cols].sort_values("customer_key").reset_index(drop=True)
    assert len(d) == 2
    pd.testing.assert_frame_equal(d, s, check_dtype=False, rtol=1e-9)


def test_later_data_does_not_change_an_earlier_date(tmp_path):
    with warehouse("duckdb", tmp_path) as wh:
        before = run_stages(wh)
        extra = raw_tables()["raw_orders"].iloc[[1]].assign(
            order_id="o99", order_ts="2026-03-01 10:00:00", loaded_at="2026-03-01 11:00:00", amount="500")
        wh.run_script("DELETE FROM stg_orders")
        wh.replace_table("raw_orders", pd.concat([raw_tables()["raw_orders"], extra]))
        extract_and_validate(wh, AS_OF, max_bad_share=1.0)
        build_customer_features(wh, AS_OF, DEFAULT_SUPPORT_COST_BY_CHANNEL)
        after = load_features(wh, AS_OF)
    assert before.drop(columns="as_of_date").equals(after.drop(columns="as_of_date"))


def test_lifecycle_and_unknown_rates(tmp_path):
    with warehouse("duckdb", tmp_path) as wh:
        features = run_stages(wh).set_index("customer_key")
        key = wh.query_df("SELECT source_id, customer_key FROM identity_map").set_index("source_id")["customer_key"]
    ann, bob = features.loc[key["W1"]], features.loc[key["C1"]]
    # Ann bought on 4 days over 598 days: own mean gap 199.3 d, which is also the shop's typical gap (the only
    # repeat buyer), so the shrunk cadence is (598 + 199.3) / (3 + 1) = 199.3 d; last order 11 d ago: active.
    assert ann["purchase_days"] == 4 and ann["repeat_buyer"] == 1
    assert ann["cadence_days"] == pytest.approx(598 / 3)
    assert ann["lifecycle_state"] == "active"
    # Bob bought once, 336 d ago: his cadence is the shop's (199.3 d); new until 2 cadences (398.7 d).
    assert bob["purchase_days"] == 1 and bob["repeat_buyer"] == 0 and bob["cadence_days"] == pytest.approx(598 / 3)
    assert bob["lifecycle_state"] == "new"
    # No email data for Bob: his email rates are unknown (NULL), not 0; Ann's exist.
    for col in ("email_open_rate", "email_click_rate", "email_open_rate_active", "email_click_per_open"):
        assert pd.isna(bob[col]), col
    assert ann["email_click_per_open"] == pytest.approx(0.5)


def test_features_of_an_earlier_date_from_a_later_snapshot_equal_that_dates_own(tmp_path):
    """The backtest's features: the run's staged data read as of an earlier date give that date's features."""
    earlier = AS_OF - dt.timedelta(days=70)
    with warehouse("duckdb", tmp_path) as wh:
        run_stages(wh)
        from_later = features_as_of(wh, earlier, AS_OF)
        extract_and_validate(wh, earlier, max_bad_share=1.0)
        resolve_identities(wh, earlier)
        build_customer_features(wh, earlier, DEFAULT_SUPPORT_COST_BY_CHANNEL)
        own = load_features(wh, earlier)
        later = load_features(wh, AS_OF)
    assert len(own) == 2 and own["lifecycle_state"].notna().all()
    pd.testing.assert_frame_equal(from_later.reset_index(drop=True), own.reset_index(drop=True), check_dtype=False)
    assert not later.drop(columns="as_of_date").equals(own.drop(columns="as_of_date"))
