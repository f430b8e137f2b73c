"""The generated shop shapes of issue #25: a cohort shop and a one-year shop with a few wholesale buyers."""

import datetime as dt

import pandas as pd

from include.demo.transactions_only import generate_cohort_shop, generate_wholesale_shop

END = dt.date(2026, 11, 14)


def test_the_cohort_shop_acquires_everyone_in_a_quarter_and_most_buy_once():
    tables = generate_cohort_shop(3000, seed=1, end_date=END)
    orders = tables["raw_orders"].assign(ts=lambda f: pd.to_datetime(f["order_ts"]))
    first = orders.groupby("source_id")["ts"].min()
    start = pd.Timestamp(END + dt.timedelta(days=1)) - pd.Timedelta(days=18 * 30)
    assert first.min() >= start and first.max() < start + pd.Timedelta(days=91)  # 90 days, orders during the day
    days = orders.groupby("source_id")["ts"].apply(lambda t: t.dt.date.nunique())
    assert len(days) == 3000 and (days == 1).mean() > 0.5
    # The season moves a 90-day window: the holiday quarter sells more than the next summer's, with fewer alive.
    def sold(a: str, b: str) -> float:
        return float(orders.loc[(orders["ts"] >= a) & (orders["ts"] < b), "amount"].sum())

    assert sold("2025-11-01", "2026-02-01") > 2 * sold("2026-06-01", "2026-09-01")
    again = generate_cohort_shop(3000, seed=1, end_date=END)
    pd.testing.assert_frame_equal(tables["raw_orders"], again["raw_orders"])


def test_the_one_year_shop_has_a_few_wholesale_buyers_with_large_baskets():
    tables = generate_wholesale_shop(3000, seed=1, end_date=END)
    orders = tables["raw_orders"].assign(ts=lambda f: pd.to_datetime(f["order_ts"]))
    kinds = tables["truth_customer_types"].set_index("source_id")["behaviour"]
    assert (orders["ts"].max() - orders["ts"].min()).days <= 360
    wholesale = kinds[kinds == "wholesale"].index
    assert 0.003 < len(wholesale) / len(kinds) < 0.03
    basket = orders.groupby(orders["source_id"].isin(wholesale))["amount"].median()
    assert basket[True] > 20 * basket[False]
