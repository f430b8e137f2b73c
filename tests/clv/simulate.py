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
