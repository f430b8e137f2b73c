"""Extract's plausibility rules and returns (issues #27, #31): each bad value quarantined or flagged with a
reason, returns matched to orders by the stated rule, and the errors that name their likely cause.

Hand-made raw rows in a real DuckDB file, and for the SQL shared with Snowflake in fakesnow too.
"""

import datetime as dt

import pandas as pd
import pytest

from include.extract.validate import (
    EmptyInputError,
    PlausibilityRules,
    QuarantineShareError,
    extract_and_validate,
)
from include.runtime.errors import PipelineFinding
from tests.extract.test_parsing import AS_OF, identity, orders, quarantined, staged_orders
from tests.warehouses import warehouse


def run(wh, identity_frame, orders_frame, returns_frame=None, **kwargs):
    wh.replace_table("raw_identity_records", identity_frame)
    wh.replace_table("raw_orders", orders_frame)
    if returns_frame is not None:
        wh.replace_table("raw_returns", returns_frame)
    return {r.table: r for r in extract_and_validate(wh, AS_OF, max_bad_share=1.0, **kwargs)}


def flags(wh) -> pd.DataFrame:
    return wh.query_df("SELECT source_table, source_key, column_name, rule, detail FROM extract_flags "
                       "WHERE as_of_date = :d ORDER BY source_table, source_key", {"d": AS_OF})


@pytest.mark.parametrize("kind", ["duckdb", "snowflake"])
def test_implausible_dates_and_amounts_are_quarantined_with_their_reason(kind, tmp_path):
    people = identity(created_at=["2025-01-01", "0001-01-01", "2025-01-01"])
    frame = orders(["P1"] * 6 + ["P3"] * 2,
                   order_ts=["2025-06-01", "0001-01-01 00:00:00", "1969-12-31", "2025-06-01", "2025-06-01",
                             "2025-06-01", "2024-12-20", "2024-12-31 08:00:00"],
                   amount=["10", "10", "10", "1e308", "999999999", "10", "10", "10"],
                   discount=["0", "0", "0", "0", "0", "1e308", "0", "0"])
    with warehouse(kind, tmp_path) as wh:
        reports = run(wh, people, frame)
        reasons = quarantined(wh)
        staged = staged_orders(wh).set_index("order_id")
        issues = wh.query_df("SELECT source_key, column_name, reason, detail FROM field_issues "
                             "WHERE as_of_date = :d", {"d": AS_OF})
        details = dict(wh.query_df("SELECT source_key, detail FROM quarantine WHERE as_of_date = :d",
                                   {"d": AS_OF}).itertuples(index=False))
    assert reasons == {
        "shop|P2": "date_before_business_start",  # a customer record of year 1
        "o2": "date_before_business_start", "o3": "date_before_business_start",
        "o4": "value_above_bound",
        "o7": "before_customer_created",  # 12 days before P3's record was created
    }
    assert details["o4"] == "amount=1e308"
    assert details["o7"].startswith("order_ts=2024-12-20, customer created_at=2025-01-01")
    # Within the bound and the grace day: staged. An optional value above the bound is nulled, the order kept.
    assert staged.loc["o5", "amount"] == 999999999 and staged.loc["o8", "amount"] == 10
    assert pd.isna(staged.loc["o6", "discount"])
    assert issues.to_dict("records") == [{"source_key": "o6", "column_name": "discount",
                                          "reason": "value_above_bound", "detail": "discount=1e308"}]
    assert reports["raw_orders"].rows_quarantined == 4 and reports["raw_identity_records"].rows_quarantined == 1


def test_the_bounds_are_settings(tmp_path):
    frame = orders(["P1"] * 3, order_ts=["1969-12-31", "2024-12-20", "2025-06-01"], amount=["10", "10", "5000"])
    rules = PlausibilityRules(business_start=dt.date(1960, 1, 1), max_amount=1000.0, created_at_grace_days=None)
    with warehouse("duckdb", tmp_path) as wh:
        run(wh, identity(), frame, rules=rules)
        assert quarantined(wh) == {"o3": "value_above_bound"}


def test_an_amount_far_above_the_shops_own_is_flagged_and_kept(tmp_path):
    rng = pd.Series(range(200))
    amounts = [f"{20 + (i * 37) % 60}.50" for i in rng] + ["2500000", "400"]
    frame = orders(["P1"] * len(amounts), amount=amounts)
    with warehouse("duckdb", tmp_path) as wh:
        reports = run(wh, identity(), frame)
        flagged = flags(wh)
        staged = staged_orders(wh).set_index("order_id")
        log = wh.query_df("SELECT source_table, rows_flagged FROM extract_log WHERE as_of_date = :d", {"d": AS_OF})
    assert flagged[["source_key", "column_name", "rule"]].to_dict("records") == [
        {"source_key": "o201", "column_name": "amount", "rule": "far_above_typical"}]
    assert flagged["detail"].iloc[0].startswith("amount=2500000")
    assert staged.loc["o201", "amount"] == 2500000  # kept: a statistical rule flags, it never drops
    assert reports["raw_orders"].rows_flagged == 1 and reports["raw_orders"].rows_quarantined == 0
    assert dict(log.itertuples(index=False))["raw_orders"] == 1


def test_an_empty_required_table_is_a_finding_at_extract(tmp_path):
    with warehouse("duckdb", tmp_path) as wh:
        with pytest.raises(EmptyInputError, match="required table raw_orders is empty"):
            run(wh, identity(), orders([]))
        with pytest.raises(EmptyInputError, match=r"raw_orders has no row on or before the as-of date 2026-01-31 "
                                                  r"\(1 rows are later\)"):
            run(wh, identity(), orders(["P1"], order_ts=["2026-05-01"]))
    assert issubclass(EmptyInputError, PipelineFinding) and issubclass(QuarantineShareError, PipelineFinding)


@pytest.mark.parametrize(("frame", "cause"), [
    (orders(["P1"] * 10, order_id=["inv1"] * 5 + ["inv2"] * 5), "are these invoice lines\\? set group_lines_by"),
    (orders(["17850.0"] * 10), "17850.0 vs 17850"),
    (orders(["P1"] * 10, amount=["-5"] * 10), "cancellations or returns\\? map them to raw_returns"),
])
def test_the_quarantine_share_error_names_the_likely_cause(tmp_path, frame, cause):
    with warehouse("duckdb", tmp_path) as wh:
        wh.replace_table("raw_identity_records", identity())
        wh.replace_table("raw_orders", frame)
        with pytest.raises(QuarantineShareError, match=f"raw_orders .* of 10 rows .*likely cause .*{cause}"):
            extract_and_validate(wh, AS_OF)


def returns(*rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["return_id", "source_system", "source_id", "return_ts", "amount", "order_id"])


@pytest.mark.parametrize("kind", ["duckdb", "snowflake"])
def test_returns_are_matched_to_their_order_then_to_earlier_purchases_latest_first(kind, tmp_path):
    people = identity(created_at=["2024-01-01"] * 2)
    frame = orders(["P1", "P1", "P1", "P2"], order_ts=["2025-01-10", "2025-02-10", "2025-03-10", "2025-04-01"],
                   amount=["100", "50", "30", "40"], returned_amount=["0", "0", "40", None])
    back = returns(
        ("r1", "shop", "P1", "2025-02-15", "20", "o1"),    # names o1: matched to it
        ("r2", "shop", "P1", "2025-02-20", "70", None),    # o2 (latest before it) takes 50, o1 20
        ("r3", "shop", "P1", "2025-01-05", "15", None),    # before any purchase: unattributed
        ("r4", "shop", "P1", "2025-03-15", "10", "o3"),    # o3 is fully returned already: o1 takes it
        ("r5", "shop", "P2", "2025-04-02", "60", "o4"),    # 40 to o4, 20 more than P2 ever bought
        ("r6", "shop", "P1", "2026-03-01", "5", "o1"),     # after the as-of date: not in this run
        ("r7", "shop", "P9", "2025-04-02", "5", None),     # nobody's: quarantined
    )
    with warehouse(kind, tmp_path) as wh:
        reports = run(wh, people, frame, back)
        staged = staged_orders(wh).set_index("order_id")
        matched = wh.query_df("SELECT return_id, matched_to_order, matched_to_prior, unattributed FROM stg_returns "
                              "WHERE as_of_date = :d ORDER BY return_id", {"d": AS_OF})
        attribution = wh.query_df("SELECT * FROM return_attribution WHERE as_of_date = :d", {"d": AS_OF})
        flagged = flags(wh)
        reasons = quarantined(wh)
    assert reasons == {"r7": "unknown_customer_id"}
    assert reports["raw_returns"].rows_after_as_of == 1
    assert staged["returned_amount"].to_dict() == {"o1": 50.0, "o2": 50.0, "o3": 30.0, "o4": 40.0}
    assert (staged["amount"] - staged["returned_amount"] >= 0).all()
    assert matched.set_index("return_id").to_dict("index") == {
        "r1": {"matched_to_order": 20.0, "matched_to_prior": 0.0, "unattributed": 0.0},
        "r2": {"matched_to_order": 0.0, "matched_to_prior": 70.0, "unattributed": 0.0},
        "r3": {"matched_to_order": 0.0, "matched_to_prior": 0.0, "unattributed": 15.0},
        "r4": {"matched_to_order": 0.0, "matched_to_prior": 10.0, "unattributed": 0.0},
        "r5": {"matched_to_order": 40.0, "matched_to_prior": 0.0, "unattributed": 20.0},
    }
    row = attribution.iloc[0]
    assert (row["returns"], row["returned_amount"], row["matched_to_order"], row["matched_to_prior"],
            row["unattributed_amount"], row["returns_unattributed"], row["records_with_returns"],
            row["records_zero_net_spend"], row["order_returned_amount"]) == (5, 175, 60, 80, 35, 2, 2, 1, 170)
    assert flagged[["source_key", "rule"]].to_dict("records") == [
        {"source_key": "o3", "rule": "returned_above_amount"}]


def test_matching_is_point_in_time_and_a_rerun_gives_the_same_figures(tmp_path):
    frame = orders(["P1", "P1"], order_ts=["2025-01-10", "2025-06-10"], amount=["100", "80.123456789"])
    back = returns(("r1", "shop", "P1", "2025-03-01", "30", None), ("r2", "shop", "P1", "2025-07-01", "80.123456789",
                                                                  "o2"))
    with warehouse("duckdb", tmp_path) as wh:
        wh.replace_table("raw_identity_records", identity())
        wh.replace_table("raw_orders", frame)
        wh.replace_table("raw_returns", back)
        extract_and_validate(wh, dt.date(2025, 4, 30))
        early = wh.query_df("SELECT order_id, returned_amount FROM stg_orders WHERE as_of_date = '2025-04-30' "
                            "ORDER BY 1")
        extract_and_validate(wh, AS_OF)
        first = staged_orders(wh)
        extract_and_validate(wh, AS_OF)
        again = staged_orders(wh)
    # On 04-30 only r1 had happened (and o2 had not been placed).
    assert early.to_dict("records") == [{"order_id": "o1", "returned_amount": 30.0}]
    # o2 is returned whole: its net is exactly 0, never a rounding below it.
    assert first.set_index("order_id")["returned_amount"].to_dict() == {"o1": 30.0, "o2": 80.123456789}
    pd.testing.assert_frame_equal(first, again)
