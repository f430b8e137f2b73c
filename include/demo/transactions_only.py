"""A transactions-only shop: one identity record per customer and their orders, nothing else.

The shape many real businesses have: 18 months of orders in US dollars, no
support, usage, email or subscription data, no discounts or returns recorded,
one identity record per customer (the shop's own customer id). Most customers
buy once; repeat buyers churn at random times, so many are lapsed by the end;
a small group buys often. Some one-time buyers place one large basket, the
case that naming by order value alone once called "Big spenders".

``python -m include.demo.transactions_only --customers 50000 --out data/shop.duckdb``
writes ``raw_identity_records`` and ``raw_orders`` into a DuckDB warehouse.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

#: Behaviour mix: (type, share of customers, orders per 30 days while active, mean active days, order value USD).
BEHAVIOURS: tuple[tuple[str, float, float, float, float], ...] = (
    ("one_time", 0.50, 0.0, 0.0, 45.0),
    ("one_time_large", 0.06, 0.0, 0.0, 320.0),
    ("occasional", 0.24, 0.35, 240.0, 55.0),
    ("regular", 0.15, 1.2, 300.0, 60.0),
    ("frequent", 0.05, 3.0, 420.0, 95.0),
)
CURRENCY_CODE, CURRENCY_SYMBOL = "USD", "$"


def generate_transactions_only(customers: int, *, seed: int = 7, end_date: dt.date = dt.date(2026, 11, 14),
                               months: int = 18) -> dict[str, pd.DataFrame]:
    """Raw tables of a transactions-only shop.

    Parameters
    ----------
    customers
        Number of customers (each has one identity record and at least one order).
    seed
        Seed of every random draw (same seed, same tables).
    end_date
        Last day of the order history.
    months
        Length of the order history (30-day months).

    Returns
    -------
    ``raw_identity_records`` (source_system, source_id, email, created_at),
    ``raw_orders`` (order_id, source_system, source_id, order_ts, amount, channel)
    and ``truth_customer_types`` (source_id, behaviour: evaluation only).
    """
    if customers < 1:
        raise ValueError(f"customers must be positive, got {customers}")
    rng = np.random.default_rng(seed)
    span = months * 30
    end = np.datetime64(end_date) + np.timedelta64(1, "D")
    start = end - np.timedelta64(span, "D")
    shares = np.array([b[1] for b in BEHAVIOURS])
    kind = rng.choice(len(BEHAVIOURS), customers, p=shares / shares.sum())
    rate = np.array([b[2] for b in BEHAVIOURS])[kind] / 30.0
    mean_life = np.array([b[3] for b in BEHAVIOURS])[kind]
    aov = np.array([b[4] for b in BEHAVIOURS])[kind] * rng.lognormal(0, 0.35, customers)
    # Acquisition spread over the history (a little more in recent months: a growing shop).
    first = (span * rng.beta(1.2, 1.0, customers)).astype(float)
    life = np.where(mean_life > 0, rng.exponential(np.maximum(mean_life, 1.0)), 0.0)
    stop = np.minimum(first + life, span - 1e-3)
    extra = rng.poisson(rate * (stop - first))
    n_orders = 1 + extra
    owner = np.repeat(np.arange(customers), n_orders)
    offset = np.repeat(first, n_orders)
    is_first = np.ones(len(owner), dtype=bool)
    is_first[1:] = owner[1:] != owner[:-1]
    later = rng.uniform(np.repeat(first, n_orders), np.repeat(stop, n_orders))
    day = np.where(is_first, offset, later)
    seconds = (day * 86400).astype("int64") + rng.integers(8 * 3600, 22 * 3600, len(owner))
    ts = start.astype("datetime64[s]") + seconds.astype("timedelta64[s]")
    ts = np.minimum(ts, end.astype("datetime64[s]") - np.timedelta64(1, "s"))
    amount = np.round(aov[owner] * rng.lognormal(0, 0.25, len(owner)), 2)
    ids = np.array([f"S{i:07d}" for i in range(customers)])
    orders = pd.DataFrame({
        "order_id": [f"O{i:09d}" for i in range(len(owner))],
        "source_system": "shop",
        "source_id": ids[owner],
        "order_ts": pd.to_datetime(ts).strftime("%Y-%m-%d %H:%M:%S"),
        "amount": amount,
        "channel": np.where(rng.random(len(owner)) < 0.7, "web", "app"),
    }).sort_values(["order_ts", "order_id"], kind="stable").reset_index(drop=True)
    first_ts = orders.groupby("source_id")["order_ts"].min()
    identity = pd.DataFrame({
        "source_system": "shop",
        "source_id": ids,
        "email": [f"shopper{i}@example.invalid" for i in range(customers)],
        "created_at": first_ts.reindex(ids).to_numpy(),
    })
    truth = pd.DataFrame({"source_id": ids, "behaviour": np.array([b[0] for b in BEHAVIOURS])[kind]})
    log.info("transactions-only shop: %d customers, %d orders over %d months to %s", customers, len(orders),
             months, end_date)
    return {"raw_identity_records": identity, "raw_orders": orders, "truth_customer_types": truth}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--end-date", type=dt.date.fromisoformat, default=dt.date(2026, 11, 14))
    parser.add_argument("--out", required=True, help="DuckDB file to write the raw tables into")
    args = parser.parse_args()
    from include.runtime.warehouse import Warehouse

    tables = generate_transactions_only(args.customers, seed=args.seed, end_date=args.end_date)
    with Warehouse(f"duckdb:///{args.out}") as wh:
        for name, frame in tables.items():
            wh.replace_table(name, frame)
    print(f"wrote {', '.join(f'{k} ({len(v):,} rows)' for k, v in tables.items())} to {args.out}")


if __name__ == "__main__":
    main()
