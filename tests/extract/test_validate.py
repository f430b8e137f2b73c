"""Extract/validate: contract checks, quarantine reasons, conservation, idempotency."""

import datetime as dt

import pandas as pd
import pytest

from include.extract.validate import TABLE_SPECS, BadDataError, check_contract, extract_and_validate
from include.runtime.warehouse import WarehouseError
from tests.conftest import AS_OF


def test_planted_bad_rows_are_quarantined_with_their_reason(wh):
    extract_and_validate(wh, AS_OF)
    got = wh.query_df(
        "SELECT t.source_key, t.reason AS planted, q.reason AS quarantined "
        "FROM truth_planted_errors t LEFT JOIN quarantine q "
        "ON q.source_table = t.source_table AND q.source_key = t.source_key AND q.as_of_date = :d",
        {"d": AS_OF},
    )
    assert len(got) > 0
    mismatched = got[got["planted"] != got["quarantined"]]
    assert mismatched.empty, mismatched.head()
    # Nothing clean was quarantined by mistake.
    assert wh.scalar("SELECT COUNT(*) FROM quarantine WHERE as_of_date = :d", {"d": AS_OF}) == len(got)


def test_every_in_scope_row_is_staged_or_quarantined(wh):
    reports = extract_and_validate(wh, AS_OF)
    assert {r.table for r in reports if not r.present} == {"raw_returns"}  # the demo has no returns table
    for r in reports:
        if not r.present:
            continue
        spec = next(s for s in TABLE_SPECS if s.raw == r.table)
        staged = wh.scalar(f"SELECT COUNT(*) FROM {spec.staged} WHERE as_of_date = :d", {"d": AS_OF})
        quarantined = wh.scalar(
            "SELECT COUNT(*) FROM quarantine WHERE as_of_date = :d AND source_table = :t", {"d": AS_OF, "t": r.table})
        raw_total = wh.scalar(f"SELECT COUNT(*) FROM {spec.raw}")
        assert staged == r.rows_staged and quarantined == r.rows_quarantined
        assert staged + quarantined + r.rows_after_as_of == raw_total, r.table


def test_duplicate_order_keeps_exactly_one_copy(wh):
    extract_and_validate(wh, AS_OF)
    dups = wh.query_df("SELECT source_key FROM truth_planted_errors WHERE reason = 'duplicate_key'")
    counts = wh.query_df(
        "SELECT order_id, COUNT(*) AS n FROM stg_orders WHERE as_of_date = :d GROUP BY order_id HAVING COUNT(*) > 1",
        {"d": AS_OF})
    assert counts.empty
    kept = wh.query_df("SELECT order_id FROM stg_orders WHERE as_of_date = :d", {"d": AS_OF})
    assert set(dups["source_key"]) <= set(kept["order_id"])


def test_rerun_of_a_date_replaces_its_rows(wh):
    extract_and_validate(wh, AS_OF)
    first = wh.query_df("SELECT * FROM stg_orders WHERE as_of_date = :d ORDER BY order_id", {"d": AS_OF})
    q_first = wh.scalar("SELECT COUNT(*) FROM quarantine WHERE as_of_date = :d", {"d": AS_OF})
    extract_and_validate(wh, AS_OF)
    second = wh.query_df("SELECT * FROM stg_orders WHERE as_of_date = :d ORDER BY order_id", {"d": AS_OF})
    pd.testing.assert_frame_equal(first, second)
    assert wh.scalar("SELECT COUNT(*) FROM quarantine WHERE as_of_date = :d", {"d": AS_OF}) == q_first
    assert wh.scalar("SELECT COUNT(*) FROM extract_log WHERE as_of_date = :d", {"d": AS_OF}) == len(TABLE_SPECS)


def test_nothing_after_the_as_of_date_is_staged(wh):
    early = dt.date(2025, 6, 30)
    extract_and_validate(wh, early)
    latest = wh.scalar("SELECT MAX(order_ts) FROM stg_orders WHERE as_of_date = :d", {"d": early})
    assert latest < dt.datetime(2025, 7, 1)
    assert wh.scalar("SELECT MAX(created_at) FROM stg_identity_records WHERE as_of_date = :d", {"d": early}) < dt.datetime(2025, 7, 1)


def test_missing_required_table_is_named(wh):
    wh.run_script("DROP TABLE raw_orders")
    with pytest.raises(WarehouseError, match="raw_orders"):
        check_contract(wh)


def test_missing_required_column_is_named(wh, demo_tables):
    wh.replace_table("raw_orders", demo_tables["raw_orders"].drop(columns=["amount"]))
    with pytest.raises(WarehouseError, match=r"raw_orders.*amount"):
        extract_and_validate(wh, AS_OF)


def test_optional_tables_may_be_absent(wh):
    for table in ("raw_support_contacts", "raw_product_usage", "raw_email_activity", "raw_subscriptions"):
        wh.run_script(f"DROP TABLE {table}")
    reports = {r.table: r for r in extract_and_validate(wh, AS_OF)}
    assert reports["raw_orders"].rows_staged > 0
    assert not reports["raw_support_contacts"].present


def test_optional_columns_may_be_absent(wh, demo_tables):
    orders = demo_tables["raw_orders"].drop(columns=["discount", "returned_amount", "channel", "category", "loaded_at"])
    wh.replace_table("raw_orders", orders)
    extract_and_validate(wh, AS_OF)
    assert wh.scalar("SELECT COUNT(*) FROM stg_orders WHERE as_of_date = :d AND discount IS NULL", {"d": AS_OF}) > 0
    # Without loaded_at, a far-future order is simply after the as-of date, not staged.
    assert wh.scalar("SELECT MAX(order_ts) FROM stg_orders WHERE as_of_date = :d", {"d": AS_OF}) < dt.datetime(2026, 11, 8)


def test_bad_share_above_threshold_fails_after_writing_quarantine(wh):
    with pytest.raises(BadDataError, match=r"raw_orders .*unparsable_date"):
        extract_and_validate(wh, AS_OF, max_bad_share=0.001)
    assert wh.scalar("SELECT COUNT(*) FROM quarantine WHERE as_of_date = :d", {"d": AS_OF}) > 0


def test_typed_raw_columns_are_accepted(wh, demo_tables):
    orders = demo_tables["raw_orders"]
    planted = set(demo_tables["truth_planted_errors"]["source_key"])
    typed = orders[~orders["order_id"].isin(planted)].copy()
    typed["order_ts"] = pd.to_datetime(typed["order_ts"])
    typed["amount"] = typed["amount"].astype(float)
    wh.replace_table("raw_orders", typed)
    reports = {r.table: r for r in extract_and_validate(wh, AS_OF)}
    assert reports["raw_orders"].rows_quarantined == 0
    assert reports["raw_orders"].rows_staged > 0


def test_a_date_written_other_than_checked_fails_naming_the_table():
    from include.extract.validate import SPECS_BY_RAW, StagedCountError, _check_written

    spec = SPECS_BY_RAW["raw_email_activity"]
    _check_written(spec, AS_OF, 10, 2, 10, 2)  # as the checks gave them: passes
    with pytest.raises(StagedCountError, match=r"stg_email_activity holds 20 rows .* the checks staged 10"):
        _check_written(spec, AS_OF, 10, 2, 20, 2)
    with pytest.raises(StagedCountError, match=r"quarantine holds 0 rows of raw_email_activity"):
        _check_written(spec, AS_OF, 10, 2, 10, 0)
