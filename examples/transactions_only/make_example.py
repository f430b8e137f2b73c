"""How the example's transactions file was made (re-running it rewrites it identically).

The shape of the CDNOW master file (the one ``lifetimes`` ships): a cohort of customers
who first bought in the first quarter, then 18 months of their purchases, one row per
purchase: customer id, date as YYYYMMDD, number of items, dollar value, separated by
runs of spaces (right-aligned columns), CRLF line ends, a header line. No order id and
no customer file. Purchases follow the BG/NBD story (Fader, Hardie & Lee 2005): a
customer buys at their own rate until, after some purchase, they drop out; most buy
once. Three bad values real files carry: a date of 00010101, an amount of NaN and one
of 1e308.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
START, END = dt.date(1997, 1, 1), dt.date(1998, 6, 30)


def main(customers: int = 400, seed: int = 4) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(customers):
        first = START + dt.timedelta(days=int(rng.integers(0, 84)))
        rate = rng.gamma(0.5, 1 / 18.0)          # purchases per day while active
        dropout = rng.beta(0.9, 2.6)             # chance to drop out after each purchase
        spend = rng.gamma(6.0, 2.6)              # the customer's mean dollars per item
        day = first
        while day <= END:
            items = int(rng.integers(1, 6))
            value = round(items * spend * rng.uniform(0.7, 1.3), 2)
            rows.append((f"{c + 1:05d}", day.strftime("%Y%m%d"), str(items), f"{value:.2f}"))
            if rng.random() < 0.04:              # a second purchase the same day
                rows.append((f"{c + 1:05d}", day.strftime("%Y%m%d"), "1", f"{spend:.2f}"))
            if rng.random() < dropout or rate <= 0:
                break
            day += dt.timedelta(days=1 + int(rng.exponential(1 / rate)))
    rows[10] = (rows[10][0], "00010101", rows[10][2], rows[10][3])
    rows[20] = (rows[20][0], rows[20][1], rows[20][2], "NaN")
    rows[30] = (rows[30][0], rows[30][1], rows[30][2], "1e308")
    lines = [" customer_id  date number_of_cds  dollar_value"]
    lines += [f" {c} {d} {n:>2} {v:>8}" for c, d, n, v in rows]
    (HERE / "transactions.txt").write_bytes(("\r\n".join(lines) + "\r\n").encode("ascii"))
    print(f"transactions.txt: {len(rows)} purchases of {customers} customers")


if __name__ == "__main__":
    main()
