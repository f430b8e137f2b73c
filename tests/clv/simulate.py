"""A transactions-only shop drawn from the MBG/NBD process: one identity row per customer plus orders, in dollars.

Each customer makes a first purchase on a uniformly drawn day, buys at a
gamma-distributed Poisson rate while active, and after every purchase, the
first included, drops out with a beta-distributed probability (Batislam et
al. 2007). Many customers therefore buy once and never return: the shape BG/NBD
handles badly. No support, usage, email or subscription tables exist.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

#: True MBG/NBD parameters of the simulation (per day).
TRUE_PARAMS = {"r": 0.8, "alpha": 40.0, "a": 1.5, "b": 2.5}


def transactions_only_shop(n: int = 1500, seed: int = 7, start: dt.date = dt.date(2025, 5, 1),
                           end: dt.date = dt.date(2026, 10, 31), params: dict[str, float] | None = None,
                           first_purchase_dropout: bool = True) -> dict[str, pd.DataFrame]:
    """``raw_identity_records`` (one row per customer) and ``raw_orders`` (USD) from ``start`` to ``end``.

    Orders after ``end`` are dropped, so an as-of date on or before ``end``
    sees exactly the history up to it. ``first_purchase_dropout=False`` draws
    from the BG/NBD process instead (dropout only after repeat purchases).
    """
    p = {**TRUE_PARAMS, **(params or {})}
    rng = np.random.default_rng(seed)
    span = (end - start).days
    birth = rng.uniform(0, span, n)
    rate = rng.gamma(p["r"], 1 / p["alpha"], n)
    dropout = rng.beta(p["a"], p["b"], n)
    mean_spend = rng.gamma(4.0, 15.0, n)
    cust, day = [], []
    for i in range(n):
        t, purchases = birth[i], 0
        while t <= span:
            cust.append(i)
            day.append(t)
            purchases += 1
            # BG/NBD: no dropout right after the first purchase; MBG/NBD: after every purchase.
            if (first_purchase_dropout or purchases > 1) and rng.random() < dropout[i]:
                break
            t += rng.exponential(1 / rate[i])
    cust, day = np.asarray(cust), np.asarray(day)
    ids = np.array([f"S{i:05d}" for i in range(n)])
    ts = pd.Timestamp(start) + pd.to_timedelta(day, unit="D")
    orders = pd.DataFrame({
        "order_id": [f"O{i:06d}" for i in range(len(cust))],
        "source_system": "shop",
        "source_id": ids[cust],
        "order_ts": ts.strftime("%Y-%m-%d %H:%M:%S"),
        "amount": np.round(rng.gamma(6.0, mean_spend[cust] / 6.0), 2).astype(str),
    })
    identity = pd.DataFrame({
        "source_system": "shop", "source_id": ids,
        "created_at": (pd.Timestamp(start) + pd.to_timedelta(birth, unit="D")).floor("D").strftime("%Y-%m-%d %H:%M:%S"),
    })
    return {"raw_identity_records": identity, "raw_orders": orders}


def stage_shop(wh, tables: dict[str, pd.DataFrame], dates: list[dt.date]) -> None:
    """Write the raw tables, extract them for each date and map each source id to itself as the customer key.

    Identity resolution is not under test here: one identity row per customer
    is already one customer.
    """
    from include.extract.validate import extract_and_validate

    for name, frame in tables.items():
        wh.replace_table(name, frame)
    for date in dates:
        extract_and_validate(wh, date, max_bad_share=0.0)
        ids = wh.query_df("SELECT DISTINCT source_system, source_id FROM stg_identity_records "
                          "WHERE as_of_date = :d", {"d": date})
        ids.insert(0, "as_of_date", date)
        ids["customer_key"] = ids["source_id"]
        ids["cluster_confidence"], ids["match_method"], ids["key_since"] = 1.0, "source_id", date
        wh.replace_partition("identity_map", ids, {"as_of_date": date})


def wholesale_invoice_shop(retail: int = 900, regulars: int = 250, wholesale: int = 25, seed: int = 11,
                           start: dt.date = dt.date(2025, 11, 1), end: dt.date = dt.date(2026, 10, 31),
                           one_time_share: float = 0.7, retail_rate_shape: float = 1.0) -> dict[str, pd.DataFrame]:
    """One year of a gift-ware web shop's invoices, shaped like the UK shop of issue #25: no dropout to see.

    Three kinds of customer arrive uniformly over the year and nobody who
    buys again stops buying within it:

    - ``retail``: ``one_time_share`` of them buy once and never come back; the
      rest buy a few times a year (Poisson, gamma-distributed rates);
    - ``regulars``: a purchase every one to two months;
    - ``wholesale``: a few large accounts ordering every week or two, several
      invoices on some days, with occasional cancellations (``returned_amount``).

    On this shape BG/NBD's likelihood rises as the dropout parameter ``a``
    goes to 0: there is no interior maximum, and the fit that stops on the
    way says P(alive) = 1 for every customer. Returns ``raw_identity_records``
    and ``raw_orders`` (GBP amounts as text, one row per invoice).
    """
    rng = np.random.default_rng(seed)
    span = (end - start).days + 1
    kinds = np.array(["retail"] * retail + ["regular"] * regulars + ["wholesale"] * wholesale)
    n = len(kinds)
    birth = rng.uniform(0, span, n)
    rate = np.where(kinds == "wholesale", rng.uniform(1 / 14, 1 / 5, n),
                    np.where(kinds == "regular", rng.gamma(4.0, 1 / 4.0 / 45, n), rng.gamma(retail_rate_shape, 1 / retail_rate_shape / 120, n)))
    once = (kinds == "retail") & (rng.random(n) < one_time_share)
    basket = np.where(kinds == "wholesale", rng.gamma(3.0, 400.0, n), rng.gamma(3.0, 12.0, n))
    cust, day = [], []
    for i in range(n):
        t = birth[i]
        while t < span:
            cust.append(i)
            day.append(t)
            if once[i]:
                break
            t += rng.exponential(1 / rate[i])
    cust, day = np.asarray(cust), np.asarray(day)
    # Wholesale accounts split a day's order over several invoices (one transaction day for CLV).
    extra = (kinds[cust] == "wholesale") & (rng.random(len(cust)) < 0.3)
    cust = np.concatenate([cust, cust[extra]])
    day = np.concatenate([day, np.floor(day[extra]) + rng.uniform(0, 0.99, int(extra.sum()))])
    amount = np.round(rng.gamma(4.0, basket[cust] / 4.0), 2)
    cancelled = (kinds[cust] == "wholesale") & (rng.random(len(cust)) < 0.05)
    returned = np.where(cancelled, np.round(amount * rng.uniform(0.1, 1.0, len(cust)), 2), 0.0)
    ids = np.array([f"{12000 + i}" for i in range(n)])
    order = np.argsort(day, kind="stable")
    cust, day, amount, returned = cust[order], day[order], amount[order], returned[order]
    ts = pd.Timestamp(start) + pd.to_timedelta(day, unit="D")
    orders = pd.DataFrame({
        "order_id": [f"{536000 + i}" for i in range(len(cust))],
        "source_system": "giftshop",
        "source_id": ids[cust],
        "order_ts": ts.strftime("%Y-%m-%d %H:%M:%S"),
        "amount": amount.astype(str),
        "returned_amount": returned.astype(str),
    })
    identity = pd.DataFrame({
        "source_system": "giftshop", "source_id": ids,
        "created_at": (pd.Timestamp(start) + pd.to_timedelta(birth, unit="D")).floor("D").strftime(
            "%Y-%m-%d %H:%M:%S"),
    })
    return {"raw_identity_records": identity, "raw_orders": orders}
