"""An invoice-line export of a web shop's year, the shape of the UCI Online Retail data set.

One row per invoice line: ``InvoiceNo`` (a ``C`` prefix marks a cancellation,
whose quantities are negative), ``StockCode``, ``Description``, ``Quantity``,
``InvoiceDate`` (``12/1/2010 8:26``: month first, no zero padding),
``UnitPrice``, ``CustomerID`` exported as a float (``17850.0``; empty for
guest checkouts) and ``Country``. What makes such exports hard, on purpose:

- about a quarter of the lines belong to guests (no customer id), on invoices
  with many lines;
- about a third of the customers buy once; a few wholesale buyers order
  hundreds of units a line, one of them a basket of 80,995 units cancelled the
  same day;
- cancellations follow some invoices within days (part of their lines), and a
  few customers cancel purchases made before the export begins, so their
  cancellations cannot be matched and some are net-negative within the year;
- more orders in the autumn than in spring; prices of zero on some lines.

Nothing here is tuned to the pipeline; it is the shape, not the data, of a
real export (``/work/shared/notes`` has the measured facts).

``python -m include.demo.invoice_lines --customers 4372 --out data/invoice_lines.csv``
writes about 541,900 lines (the UCI size) in a few seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

START, END = dt.datetime(2010, 12, 1), dt.datetime(2011, 12, 9, 20, 0)
COUNTRIES = ("United Kingdom", "Germany", "France", "EIRE", "Spain", "Netherlands", "Belgium", "Switzerland",
             "Portugal", "Australia", "Norway", "Italy")
COUNTRY_SHARES = (0.90, 0.022, 0.02, 0.012, 0.008, 0.007, 0.007, 0.006, 0.005, 0.005, 0.004, 0.004)
WORDS = ("HEART", "VINTAGE", "CHRISTMAS", "LANTERN", "CAKE CASES", "BAG", "MUG", "CANDLE", "JAR", "BUNTING",
         "TIN", "FRAME", "CLOCK", "SIGN", "DOORMAT", "GLASS", "BOTTLE", "SET OF 3", "RED", "WHITE", "PINK", "BLUE")


def _day_weights(days: int) -> np.ndarray:
    """Orders per calendar day, relative: busier from September to November, quiet in January."""
    dates = [START.date() + dt.timedelta(days=i) for i in range(days)]
    month_weight = {1: 0.7, 2: 0.75, 3: 0.9, 4: 0.85, 5: 0.95, 6: 0.95, 7: 0.95, 8: 0.95, 9: 1.35, 10: 1.5,
                    11: 1.8, 12: 1.1}
    weights = np.array([month_weight[d.month] * (0.0 if d.weekday() == 5 else 1.0) for d in dates])
    return weights / weights.sum()


def generate_invoice_lines(customers: int = 4372, *, seed: int = 5, guest_share: float = 0.25,
                           lines_per_invoice: float = 19.8, wholesale_share: float = 0.006) -> pd.DataFrame:
    """The lines of one year of invoices, as text columns the way the export writes them.

    Parameters
    ----------
    customers
        Registered customers (each has at least one invoice); 4,372 gives about the UCI size.
    seed
        Seed of every draw (same seed, same lines).
    guest_share
        Share of lines on guest invoices (no customer id).
    lines_per_invoice
        Mean lines of a registered customer's invoice (guest invoices have about four times as many).
    wholesale_share
        Share of customers buying wholesale quantities.
    """
    if customers < 1:
        raise ValueError(f"customers must be positive, got {customers}")
    rng = np.random.default_rng(seed)
    days = (END.date() - START.date()).days + 1
    day_p = _day_weights(days)

    # Products: a long tail of stock codes, each with its own price.
    n_products = 3900
    codes = np.array([f"{84000 + i}" if i % 7 else f"{22000 + i}A" for i in range(n_products)])
    prices = np.round(np.exp(rng.normal(0.75, 0.85, n_products)), 2).clip(0.1, 300)
    popularity = 1.0 / np.arange(1, n_products + 1) ** 0.9
    popularity = rng.permutation(popularity / popularity.sum())
    names = np.array([" ".join(rng.choice(WORDS, 3, replace=False)) for _ in range(n_products)])
    names[5] = "SET OF 6 SPICE TINS, PANTRY DESIGN"  # a comma inside a quoted field

    # Customers: a third buy once; the others a negative-binomial number of invoices; a few wholesale.
    ids = rng.choice(np.arange(12346, 18288), size=customers, replace=False)
    country = rng.choice(len(COUNTRIES), size=customers, p=COUNTRY_SHARES)
    wholesale = rng.random(customers) < wholesale_share
    wholesale[0] = True
    once = (rng.random(customers) < 0.34) & ~wholesale
    invoices = np.where(once, 1, 2 + rng.negative_binomial(0.9, 0.9 / (0.9 + 4.3), size=customers))
    invoices = np.where(wholesale, 20 + rng.integers(0, 120, size=customers), invoices)

    rows = []  # (invoice key, customer index or -1, datetime, cancel flag) per invoice; lines below
    owner = np.repeat(np.arange(customers), invoices)
    day = rng.choice(days, size=owner.size, p=day_p)
    minute = rng.integers(8 * 60, 20 * 60, size=owner.size)
    invoice_ts = np.array([START + dt.timedelta(days=int(d), minutes=int(m)) for d, m in zip(day, minute, strict=True)])
    purchase = pd.DataFrame({"owner": owner, "ts": invoice_ts})
    n_lines = 1 + rng.negative_binomial(1.2, 1.2 / (1.2 + lines_per_invoice - 1), size=len(purchase))
    purchase["lines"] = np.where(wholesale[purchase["owner"]], np.maximum(1, n_lines // 3), n_lines)
    rows.append(purchase.assign(cancel=False))

    # Guest invoices carry guest_share of all lines.
    customer_lines = int(purchase["lines"].sum())
    guest_lines_wanted = customer_lines * guest_share / (1 - guest_share)
    guest_invoices = max(1, int(guest_lines_wanted / (4 * lines_per_invoice)))
    guests = pd.DataFrame({
        "owner": -1,
        "ts": [START + dt.timedelta(days=int(d), minutes=int(m)) for d, m in
               zip(rng.choice(days, guest_invoices, p=day_p), rng.integers(8 * 60, 20 * 60, guest_invoices),
                   strict=True)],
        "lines": 1 + rng.negative_binomial(1.1, 1.1 / (1.1 + 4 * lines_per_invoice - 1), size=guest_invoices),
    })
    rows.append(guests.assign(cancel=False))
    invoices_frame = pd.concat(rows, ignore_index=True).sort_values(["ts", "owner"], kind="stable")
    invoices_frame = invoices_frame.reset_index(drop=True)
    invoices_frame["no"] = 536365 + np.arange(len(invoices_frame))

    # Lines of every invoice: product, quantity (packs of 1-24; wholesale hundreds), the product's price.
    line_invoice = np.repeat(np.arange(len(invoices_frame)), invoices_frame["lines"].to_numpy())
    product = rng.choice(n_products, size=line_invoice.size, p=popularity)
    line_owner = invoices_frame["owner"].to_numpy()[line_invoice]
    packs = np.array([1, 1, 1, 2, 2, 3, 4, 6, 6, 12, 12, 24])
    quantity = rng.choice(packs, size=line_invoice.size)
    is_wholesale = (line_owner >= 0) & wholesale[np.maximum(line_owner, 0)]
    quantity = np.where(is_wholesale, quantity * rng.integers(10, 60, size=line_invoice.size), quantity)
    price = prices[product]
    price = np.where(rng.random(line_invoice.size) < 0.002, 0.0, price)
    lines = pd.DataFrame({"invoice": line_invoice, "product": product, "quantity": quantity, "price": price})

    # The famous basket: a wholesale buyer's 80,995 units of a cheap item, cancelled the same day.
    big = int(np.flatnonzero((invoices_frame["owner"] == 0).to_numpy())[0])
    lines = pd.concat([lines, pd.DataFrame({"invoice": [big], "product": [11], "quantity": [80995],
                                            "price": [2.08]})], ignore_index=True)

    # Cancellations: some invoices lose part of their lines within days; a few customers cancel
    # purchases made before the export begins (nothing in the year to match them to).
    cust_inv = invoices_frame.index[(invoices_frame["owner"] >= 0).to_numpy()].to_numpy()
    cancelled = cust_inv[rng.random(cust_inv.size) < 0.13]
    cancel_lines = []
    by_invoice = lines.groupby("invoice").indices
    for inv in cancelled:
        idx = by_invoice[inv]
        take = rng.choice(idx, size=min(len(idx), int(rng.integers(1, 4))), replace=False)
        part = lines.loc[take].copy()
        part["quantity"] = -np.maximum(1, (part["quantity"] * rng.choice([1.0, 1.0, 0.5], size=len(part))).astype(int))
        part["origin"] = inv
        cancel_lines.append(part)
    big_cancel = lines.iloc[[-1]].assign(quantity=-80995, origin=big)
    cancel_lines.append(big_cancel)
    early = invoices_frame[(invoices_frame["owner"] >= 0)
                           & (invoices_frame["ts"] < START + dt.timedelta(days=45))]["owner"].unique()
    pre_data = rng.choice(early, size=max(1, int(0.2 * len(early))), replace=False)
    for who in pre_data:
        first = invoices_frame.index[(invoices_frame["owner"] == who).to_numpy()][0]
        product_ = int(rng.choice(n_products, p=popularity))
        cancel_lines.append(pd.DataFrame({"invoice": [first], "product": [product_],
                                          "quantity": [-int(rng.choice([12, 24, 48, 96, 192]))],
                                          "price": [prices[product_]], "origin": [-int(who) - 1]}))
    cancels = pd.concat(cancel_lines, ignore_index=True)
    # One cancellation invoice per cancelled invoice (or pre-data customer), dated days after it.
    origin_ts = invoices_frame["ts"].to_numpy()
    cancel_inv = cancels.groupby("origin", sort=True)
    cancel_rows = []
    for origin, part in cancel_inv:
        if origin >= 0:
            ts = pd.Timestamp(origin_ts[origin]) + pd.Timedelta(minutes=int(rng.integers(5, 60 * 24 * 20)))
            if origin == big:
                ts = pd.Timestamp(origin_ts[origin]) + pd.Timedelta(minutes=13)
            who = int(invoices_frame.at[origin, "owner"])
        else:
            who = -int(origin) - 1
            ts = pd.Timestamp(START) + pd.Timedelta(days=int(rng.integers(0, 20)),
                                                    minutes=int(rng.integers(8 * 60, 20 * 60)))
        ts = min(ts, pd.Timestamp(END))
        cancel_rows.append((origin, who, ts, part))
    cancel_frame = pd.DataFrame([(o, w, t) for o, w, t, _ in cancel_rows], columns=["origin", "owner", "ts"])
    cancel_frame = cancel_frame.sort_values(["ts", "origin"], kind="stable").reset_index(drop=True)
    cancel_frame["no"] = 536365 + len(invoices_frame) + np.arange(len(cancel_frame))
    no_of_origin = dict(zip(cancel_frame["origin"], cancel_frame["no"], strict=True))

    # Text columns, the way the export writes them.
    inv_no = invoices_frame["no"].astype(str).to_numpy()
    inv_ts = invoices_frame["ts"].to_numpy()
    inv_owner = invoices_frame["owner"].to_numpy()
    purchases = pd.DataFrame({
        "InvoiceNo": inv_no[lines["invoice"]],
        "StockCode": codes[lines["product"]],
        "Description": names[lines["product"]],
        "Quantity": lines["quantity"].astype(int).astype(str),
        "_ts": inv_ts[lines["invoice"]],
        "UnitPrice": lines["price"].map(lambda p: f"{p:g}"),
        "_owner": inv_owner[lines["invoice"]],
    })
    cancel_ts = dict(zip(cancel_frame["origin"], cancel_frame["ts"], strict=True))
    cancel_owner = dict(zip(cancel_frame["origin"], cancel_frame["owner"], strict=True))
    cancelled_lines = pd.DataFrame({
        "InvoiceNo": ["C" + str(no_of_origin[o]) for o in cancels["origin"]],
        "StockCode": codes[cancels["product"]],
        "Description": names[cancels["product"]],
        "Quantity": cancels["quantity"].astype(int).astype(str),
        "_ts": [cancel_ts[o] for o in cancels["origin"]],
        "UnitPrice": cancels["price"].map(lambda p: f"{p:g}"),
        "_owner": [cancel_owner[o] for o in cancels["origin"]],
    })
    out = pd.concat([purchases, cancelled_lines], ignore_index=True)
    out["_ts"] = pd.to_datetime(out["_ts"])
    out = out.sort_values(["_ts", "InvoiceNo"], kind="stable").reset_index(drop=True)
    ts = out["_ts"]
    out["InvoiceDate"] = (ts.dt.month.astype(str) + "/" + ts.dt.day.astype(str) + "/" + ts.dt.year.astype(str)
                          + " " + ts.dt.hour.astype(str) + ":" + ts.dt.minute.map("{:02d}".format))
    owner_ = out["_owner"].to_numpy()
    out["CustomerID"] = np.where(owner_ >= 0, np.char.add(ids[np.maximum(owner_, 0)].astype(str), ".0"), "")
    out["Country"] = np.where(owner_ >= 0, np.array(COUNTRIES)[country[np.maximum(owner_, 0)]], "United Kingdom")
    return out[["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID",
                "Country"]]


def plant_bad_values(lines: pd.DataFrame, seed: int = 1) -> pd.DataFrame:
    """A copy of ``lines`` with the bad values real exports carry, one each, on registered customers' lines.

    A quantity of ``n/a`` (the line is set aside at load), an invoice dated ``1/1/0001`` (an order before
    any business, quarantined at extract), a unit price of ``1e308`` on an invoice of its own (an amount
    above any bound, quarantined at extract).
    """
    out = lines.copy()
    rng = np.random.default_rng(seed)
    registered = out.index[(out["CustomerID"] != "") & ~out["InvoiceNo"].str.startswith("C")].to_numpy()
    first, second = rng.choice(registered, size=2, replace=False)
    out.loc[first, "Quantity"] = "n/a"
    invoice = out.at[second, "InvoiceNo"]
    out.loc[out["InvoiceNo"] == invoice, "InvoiceDate"] = "1/1/0001 0:00"
    template = out.loc[registered[-1]].copy()
    template["InvoiceNo"], template["Quantity"], template["UnitPrice"] = "599999", "1", "1e308"
    return pd.concat([out, template.to_frame().T], ignore_index=True)


def write_invoice_lines(path: str | Path, customers: int = 4372, *, seed: int = 5) -> int:
    """Write the export to ``path`` as CSV (comma, quoted where needed, UTF-8); return the number of lines."""
    lines = generate_invoice_lines(customers, seed=seed)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    lines.to_csv(path, index=False)
    return len(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=4372)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    n = write_invoice_lines(args.out, args.customers, seed=args.seed)
    print(f"{args.out}: {n:,} invoice lines")


if __name__ == "__main__":
    main()
