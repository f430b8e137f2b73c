"""The CLV backtest: deciles, Gini and the holdout figures against direct computations from the raw orders."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from include.clv.backtest import clv_backtest, decile_of, normalised_gini
from include.clv.fit import fit_and_score, judge_fit
from include.clv.mbgnbd import ModifiedBetaGeoNBD
from include.clv.models import ClvSettings, GammaGammaSpend, build_clv_summary
from include.runtime.warehouse import Warehouse
from tests.clv.simulate import stage_shop, transactions_only_shop, wholesale_invoice_shop

END = dt.date(2026, 10, 31)


def test_normalised_gini_by_hand():
    realised = np.array([0.0, 10.0, 0.0, 30.0, 60.0])
    predicted = np.array([0.1, 0.5, 0.2, 0.9, 0.8])
    # By prediction: 30, 60, 10, 0, 0 -> cumulative shares .3 .9 1 1 1; area under the gains curve
    # (trapezoids from (0, 0)) = (.3 + .9 + 1 + 1 + 1 - 1/2) / 5 = .74, Gini 2 x .74 - 1 = .48.
    # Perfect order: 60, 30, 10, 0, 0 -> .6 .9 1 1 1: area .8, Gini .6. Normalised: .48 / .6 = .8.
    assert normalised_gini(realised, predicted) == pytest.approx(0.8)
    assert normalised_gini(realised, realised) == pytest.approx(1.0)
    # The reversed order: 0, 0, 10, 30, 60 -> 0 0 .1 .4 1: area (1.5 - .5) / 5 = .2, Gini -.6: normalised -1.
    assert normalised_gini(realised, -realised) == pytest.approx(-1.0)
    # All tied: every order of the tie is as likely, the expected curve is the diagonal.
    assert normalised_gini(realised, np.ones(5)) == pytest.approx(0.0)
    # Nobody bought: nothing to rank.
    assert np.isnan(normalised_gini(np.zeros(5), predicted))
    # A random score on many customers ranks no better than chance.
    rng = np.random.default_rng(1)
    spend = rng.gamma(0.5, 100, 20000) * (rng.random(20000) < 0.3)
    assert abs(normalised_gini(spend, rng.random(20000))) < 0.05


def test_deciles_are_tenths_by_prediction_with_deterministic_ties():
    predicted = np.array([5.0, 1.0, 3.0, 3.0, 9.0, 0.0, 2.0, 8.0, 7.0, 3.0, 4.0])
    keys = np.array([f"k{i:02d}" for i in range(11)])
    deciles = decile_of(predicted, keys)
    order = np.lexsort((keys, -predicted))
    assert list(deciles[order]) == [1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]  # position i -> floor(10 i / 11) + 1
    assert deciles[4] == 1 and deciles[5] == 10  # highest first, lowest last
    assert list(deciles[[2, 3, 9]]) == [5, 6, 7]  # three tied at 3.0: by key


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    """A shop with dropout (MBG/NBD process), its summaries and raw orders; holdout 90 days to END."""
    tables = transactions_only_shop(1500, seed=7, end=END)
    with Warehouse(f"duckdb:///{tmp_path_factory.mktemp('bt') / 'w.duckdb'}") as wh:
        wh.ensure_schema()
        stage_shop(wh, tables, [END])
        build_clv_summary(wh, END, ClvSettings())
        full, calibration = (wh.query_df(f"SELECT * FROM clv_summary WHERE period = '{p}' ORDER BY customer_key")
                             for p in ("full", "calibration"))
    return tables, full, calibration


def _holdout_by_hand(orders: pd.DataFrame, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Transaction days and net value per customer in (start, end], from the raw orders."""
    o = orders.assign(day=pd.to_datetime(orders["order_ts"]).dt.date,
                      value=orders["amount"].astype(float) - orders.get("returned_amount", 0).astype(float)
                      if "returned_amount" in orders else orders["amount"].astype(float))
    o = o[(o["day"] > start) & (o["day"] <= end)]
    return o.groupby("source_id").agg(days=("day", "nunique"), value=("value", "sum"))


def test_holdout_figures_match_the_raw_orders(tmp_path):
    """holdout_purchases / holdout_value: transaction days and net value (cancellations out) after the calibration."""
    tables = wholesale_invoice_shop(retail=200, regulars=60, wholesale=10)
    with Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}") as wh:
        wh.ensure_schema()
        stage_shop(wh, tables, [END])
        build_clv_summary(wh, END, ClvSettings(holdout_days=90))
        calibration = wh.query_df("SELECT * FROM clv_summary WHERE period = 'calibration'").set_index("customer_key")
    by_hand = _holdout_by_hand(tables["raw_orders"], END - dt.timedelta(days=90), END)
    joined = calibration.join(by_hand, how="left").fillna({"days": 0, "value": 0.0})
    assert (joined["holdout_purchases"] == joined["days"]).all()
    np.testing.assert_allclose(joined["holdout_value"], joined["value"], atol=1e-6)
    assert (joined["holdout_value"] > 0).sum() > 20 and (tables["raw_orders"]["returned_amount"].astype(float) > 0).any()


def test_backtest_deciles_and_gini_against_a_direct_computation(shop):
    tables, _, calibration = shop
    holdout_units = 90 / 7
    bg = ModifiedBetaGeoNBD.fit(calibration)
    gg, _ = GammaGammaSpend.fit(calibration)
    rows, summary = clv_backtest(calibration, bg, gg, holdout_units)
    # Directly: predicted holdout revenue per customer, sorted (ties by key), cut into tenths by position.
    x, tx, t = (calibration[c].to_numpy(float) for c in ("frequency", "recency", "t"))
    purchases = bg.expected_purchases(x, tx, t, holdout_units)
    value = purchases * gg.expected_spend(x, calibration["monetary_value"])
    realised = _holdout_by_hand(tables["raw_orders"], END - dt.timedelta(days=90), END).reindex(
        calibration["customer_key"]).fillna(0.0)
    direct = pd.DataFrame({"key": calibration["customer_key"].to_numpy(), "value": value, "purchases": purchases,
                           "realised_revenue": realised["value"].to_numpy(),
                           "realised_purchases": realised["days"].to_numpy()})
    direct = direct.sort_values(["value", "key"], ascending=[False, True]).reset_index(drop=True)
    n = len(direct)
    direct["decile"] = [min(i * 10 // n, 9) + 1 for i in range(n)]
    expected = direct.groupby("decile").agg(customers=("key", "size"), predicted_purchases=("purchases", "sum"),
                                            realised_purchases=("realised_purchases", "sum"),
                                            predicted_revenue=("value", "sum"),
                                            realised_revenue=("realised_revenue", "sum"))
    got = rows[rows["row_kind"] == "decile"].set_index("decile")
    assert list(got.index) == list(range(1, 11))
    for column in expected.columns:
        np.testing.assert_allclose(got[column].to_numpy(float), expected[column].to_numpy(float), rtol=1e-9,
                                   err_msg=column)
    assert got["customers"].max() - got["customers"].min() <= 1
    assert summary["normalised_gini_revenue"] == pytest.approx(
        normalised_gini(direct["realised_revenue"].to_numpy(), direct["value"].to_numpy()))
    assert summary["normalised_gini"] == summary["normalised_gini_revenue"]
    total = direct["realised_revenue"].sum()
    assert summary["top_decile_realised_revenue_share"] == pytest.approx(
        direct.loc[direct["decile"] == 1, "realised_revenue"].sum() / total)
    assert summary["purchase_error_pct"] == pytest.approx(
        100 * (direct["purchases"].sum() / direct["realised_purchases"].sum() - 1))
    # The model ranks customers far better than chance on a shop it describes, and the top tenth holds the most.
    assert 0.4 < summary["normalised_gini_revenue"] <= 1.0
    assert got.loc[1, "realised_revenue"] == got["realised_revenue"].max()
    summary_rows = rows[rows["row_kind"] == "summary"].set_index("metric")
    assert summary_rows.loc["normalised_gini_revenue", "value"] == summary["normalised_gini_revenue"]


def test_a_failed_check_is_not_presented_as_true(shop):
    """A CLV that fails its check: status 'fitted' (not champion), the reason names the bar it missed."""
    _, full, calibration = shop
    passed = fit_and_score(full, calibration, ClvSettings())
    assert passed.status == "champion" and passed.check_passed and passed.reason is None
    assert passed.backtest["verdict"].eq("held").sum() == 2  # the Gini and the purchase error, both checked
    strict = fit_and_score(full, calibration, ClvSettings(max_holdout_error_pct=0.01, min_gini=0.99))
    assert strict.status == "fitted" and strict.check_passed is False
    assert strict.reason.startswith("CLV check failed: holdout purchase error")
    assert "normalised Gini of" in strict.reason and "clv_min_gini" in strict.reason
    assert not strict.scores.empty  # written, but flagged
    row = strict.run_row(END, "r").iloc[0]
    assert row["status"] == "fitted" and not row["check_passed"] and row["reason"] == strict.reason
    bt = strict.backtest_rows(END)
    assert set(bt.loc[bt["row_kind"] == "summary", "verdict"]) == {"failed", "not checked"}
    assert (bt["calibration_end"] == END - dt.timedelta(days=90)).all() and (bt["horizon_days"] == 90).all()
    # Nobody bought in the holdout: the ranking cannot be checked, and an unchecked figure does not pass.
    ok, why = judge_fit({"holdout_aggregate_error_pct": 1.0}, {"normalised_gini": float("nan")}, ClvSettings())
    assert not ok and "could not be checked" in why
