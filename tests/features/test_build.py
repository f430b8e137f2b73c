"""Features on a hand-built dataset, on DuckDB and on Snowflake (through fakesnow)."""


import pandas as pd
import pytest

from include.extract.validate import extract_and_validate
from include.features.build import build_customer_features, load_features
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
