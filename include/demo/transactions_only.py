"""A transactions-only shop: one identity record per customer and their orders, nothing else.

The shape many real businesses have: 18 months of orders in US dollars, no
support, usage, email or subscription data, no discounts or returns recorded,
one identity record per customer (the shop's own customer id). Most customers
buy once; repeat buyers churn at random times, so many are lapsed by the end;
a small group buys often. Some one-time buyers place one large basket, the
case that naming by order value alone once called "Big spenders".

Two further shapes real shops brought (issue #25), for tests and benchmarks of the claims the run
publishes (:func:`generate_cohort_shop`, :func:`generate_wholesale_shop`):

- a **cohort shop**: every customer acquired in one three-month window, most of them buying once,
  the rest buying while alive at their own rate (gamma-distributed across customers) with a
  season that doubles the holiday months against the summer, so a 90-day window moves with the
  calendar (the CD retailer's shape);
- a **one-year shop with a few wholesale buyers**: one year of orders, customers acquired all year,
  a percent of them wholesale (frequent orders with baskets of thousands).

Neither is tuned to any claim threshold: their parameters are the shapes' (shares, horizons,
seasons), and the tests plant untrue claims in them and assert that the backtest catches them.

``python -m include.demo.transactions_only --customers 50000 --out data/shop.duckdb`` (``--shape
cohort`` or ``wholesale`` for the others) writes ``raw_identity_records`` and ``raw_orders`` into a
DuckDB warehouse.
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


def _seasonal_purchases(rng: np.random.Generator, start: np.datetime64, first: np.ndarray, stop: np.ndarray,
                        rate: np.ndarray, season: float, peak_day: int) -> tuple[np.ndarray, np.ndarray]:
    """(owner, day) of repeat purchases: a Poisson process per customer between ``first`` and ``stop`` (days).

    The intensity is ``rate`` x (1 + ``season`` x cos(2 pi (day of year - ``peak_day``) / 365)),
    drawn by thinning candidates at the peak intensity.
    """
    peak = rate * (1 + season)
    n_candidates = rng.poisson(peak * np.maximum(stop - first, 0.0))
    owner = np.repeat(np.arange(len(first)), n_candidates)
    day = rng.uniform(np.repeat(first, n_candidates), np.repeat(stop, n_candidates))
    doy = ((start + day.astype("int64").astype("timedelta64[D]")).astype("datetime64[D]")
           - (start + day.astype("int64").astype("timedelta64[D]")).astype("datetime64[Y]")).astype(int)
    keep = rng.random(len(day)) < (1 + season * np.cos(2 * np.pi * (doy - peak_day) / 365.25)) / (1 + season)
    return owner[keep], day[keep]


def _tables(rng: np.random.Generator, start: np.datetime64, end: np.datetime64, first: np.ndarray,
            owner: np.ndarray, day: np.ndarray, basket: np.ndarray, kinds: np.ndarray, prefix: str,
            channel_web: float = 0.7) -> dict[str, pd.DataFrame]:
    """Raw tables from first purchase days plus repeat purchases (owner, day) and mean baskets."""
    customers = len(first)
    owner = np.concatenate([np.arange(customers), owner])
    day = np.concatenate([first, day])
    order = np.lexsort((day, owner))
    owner, day = owner[order], day[order]
    seconds = (day * 86400).astype("int64") + rng.integers(8 * 3600, 22 * 3600, len(owner))
    ts = start.astype("datetime64[s]") + seconds.astype("timedelta64[s]")
    ts = np.minimum(ts, end.astype("datetime64[s]") - np.timedelta64(1, "s"))
    amount = np.round(basket[owner] * rng.lognormal(0, 0.3, len(owner)), 2)
    ids = np.array([f"{prefix}{i:07d}" for i in range(customers)])
    orders = pd.DataFrame({
        "order_id": [f"{prefix}O{i:09d}" for i in range(len(owner))], "source_system": "shop",
        "source_id": ids[owner], "order_ts": pd.to_datetime(ts).strftime("%Y-%m-%d %H:%M:%S"), "amount": amount,
        "channel": np.where(rng.random(len(owner)) < channel_web, "web", "app"),
    }).sort_values(["order_ts", "order_id"], kind="stable").reset_index(drop=True)
    first_ts = orders.groupby("source_id")["order_ts"].min()
    identity = pd.DataFrame({"source_system": "shop", "source_id": ids,
                             "email": [f"{prefix.lower()}shopper{i}@example.invalid" for i in range(customers)],
                             "created_at": first_ts.reindex(ids).to_numpy()})
    return {"raw_identity_records": identity, "raw_orders": orders,
            "truth_customer_types": pd.DataFrame({"source_id": ids, "behaviour": kinds})}


def generate_cohort_shop(customers: int, *, seed: int = 7, end_date: dt.date = dt.date(2026, 11, 14),
                         months: int = 18, cohort_days: int = 90, trier_share: float = 0.5,
                         season: float = 0.5, peak_day: int = 350) -> dict[str, pd.DataFrame]:
    """A cohort shop: every customer acquired in the first ``cohort_days`` of ``months`` (30-day) months.

    ``trier_share`` of the customers buy once and never again; the others buy while alive (an
    exponential lifetime, mean 240 days) at their own rate (gamma, shape 0.7, mean one purchase
    per 45 days), so some of them buy once too: more than half the customers are one-time buyers.
    The season raises the rate by ``season`` around ``peak_day`` (mid-December) and lowers it as
    much half a year away. Baskets: lognormal around 35 USD per customer.
    Returns the tables of :func:`generate_transactions_only`.
    """
    if customers < 1:
        raise ValueError(f"customers must be positive, got {customers}")
    rng = np.random.default_rng(seed)
    span = months * 30
    end = np.datetime64(end_date) + np.timedelta64(1, "D")
    start = end - np.timedelta64(span, "D")
    first = rng.uniform(0, min(cohort_days, span), customers)
    trier = rng.random(customers) < trier_share
    rate = rng.gamma(0.7, 1 / (45 * 0.7), customers)
    life = rng.exponential(240.0, customers)
    stop = np.where(trier, first, np.minimum(first + life, span - 1e-3))
    owner, day = _seasonal_purchases(rng, start, first, stop, rate, season, peak_day)
    basket = 35.0 * rng.lognormal(0, 0.5, customers)
    tables = _tables(rng, start, end, first, owner, day, basket, np.where(trier, "trier", "repeater"), "C")
    log.info("cohort shop: %d customers, %d orders over %d months to %s", customers, len(tables["raw_orders"]),
             months, end_date)
    return tables


def generate_wholesale_shop(customers: int, *, seed: int = 7, end_date: dt.date = dt.date(2026, 11, 14),
                            months: int = 12, wholesale_share: float = 0.01) -> dict[str, pd.DataFrame]:
    """One year of a shop with a few wholesale buyers, customers acquired all year.

    Retail customers buy like the cohort shop's (a third buy once and stop; the rest at a gamma rate,
    mean one purchase per 60 days, for an exponential lifetime, mean 300 days), with a season peaking
    in December; ``wholesale_share`` of the customers are wholesale: a purchase every 10 days on
    average, for the whole year, with baskets around 2,000 USD.
    Returns the tables of :func:`generate_transactions_only`.
    """
    if customers < 1:
        raise ValueError(f"customers must be positive, got {customers}")
    rng = np.random.default_rng(seed)
    span = months * 30
    end = np.datetime64(end_date) + np.timedelta64(1, "D")
    start = end - np.timedelta64(span, "D")
    wholesale = rng.random(customers) < wholesale_share
    first = rng.uniform(0, span, customers)
    trier = ~wholesale & (rng.random(customers) < 1 / 3)
    rate = np.where(wholesale, 0.1, rng.gamma(0.8, 1 / (60 * 0.8), customers))
    life = np.where(wholesale, np.inf, rng.exponential(300.0, customers))
    stop = np.where(trier, first, np.minimum(first + life, span - 1e-3))
    owner, day = _seasonal_purchases(rng, start, first, stop, rate, 0.4, 350)
    basket = np.where(wholesale, 2000.0, 30.0) * rng.lognormal(0, 0.4, customers)
    kinds = np.where(wholesale, "wholesale", np.where(trier, "trier", "retail"))
    tables = _tables(rng, start, end, first, owner, day, basket, kinds, "W")
    log.info("one-year shop: %d customers (%d wholesale), %d orders to %s", customers, int(wholesale.sum()),
             len(tables["raw_orders"]), end_date)
    return tables


SHAPES = {"default": generate_transactions_only, "cohort": generate_cohort_shop, "wholesale": generate_wholesale_shop}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--end-date", type=dt.date.fromisoformat, default=dt.date(2026, 11, 14))
    parser.add_argument("--out", required=True, help="DuckDB file to write the raw tables into")
    parser.add_argument("--shape", choices=list(SHAPES), default="default",
                        help="default (mixed acquisition), cohort (all acquired in 3 months) or wholesale (one year)")
    args = parser.parse_args()
    from include.runtime.warehouse import Warehouse

    tables = SHAPES[args.shape](args.customers, seed=args.seed, end_date=args.end_date)
    with Warehouse(f"duckdb:///{args.out}") as wh:
        for name, frame in tables.items():
            wh.replace_table(name, frame)
    print(f"wrote {', '.join(f'{k} ({len(v):,} rows)' for k, v in tables.items())} to {args.out}")


if __name__ == "__main__":
    main()
