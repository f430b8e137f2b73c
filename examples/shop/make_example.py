"""How the example shop's CSV files were made (re-running it rewrites them identically).

A small German shop export, the way real ones look: ``;`` as delimiter,
decimal commas, birth dates as DD.MM.YYYY (some invalid), sign-up and order
dates as YYYYMMDD, a national tax id and a loyalty card number, and people
who are customers of both the web shop and a store (same email or card).
A few orders are bad on purpose: an amount of ``n/a``, a customer number
nobody has.
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FIRST = ["Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hans", "Ida", "Jonas", "Katja", "Lukas",
         "Mia", "Noah", "Olga", "Paul", "Quirin", "Rosa", "Sven", "Tina"]
LAST = ["Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Schulz", "Hoffmann",
        "Koch", "Richter", "Klein", "Wolf", "Neumann"]


def main(persons: int = 300, seed: int = 3) -> None:
    rng = np.random.default_rng(seed)
    start = dt.date(2024, 1, 1)
    customers, orders = [], []
    order_no = 100000
    for p in range(persons):
        first, last = FIRST[p % len(FIRST)], LAST[(p * 7) % len(LAST)]
        email = f"{first.lower()}.{last.lower().replace('ü', 'ue')}{p}@example.de"
        born = dt.date(1950, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365 * 50)))
        dob = born.strftime("%d.%m.%Y")
        if p % 37 == 5:
            dob = "31.02.1980"
        elif p % 41 == 7:
            dob = "unbekannt"
        signup = start + dt.timedelta(days=int(rng.integers(0, 500)))
        card = f"KK-{700000 + p}" if rng.random() < 0.6 else ""
        systems = ["webshop"] + (["filiale"] if rng.random() < 0.3 else [])
        ids = []
        for system in systems:
            number = f"{'W' if system == 'webshop' else 'F'}{10000 + p}"
            ids.append((system, number))
            customers.append({
                "System": system, "KundenNr": number, "Vorname": first, "Nachname": last,
                "E-Mail": email if system == "webshop" or rng.random() < 0.5 else "",
                "Telefon": f"+49 30 {5550000 + p}" if rng.random() < 0.7 else "",
                "PLZ": f"{10115 + (p % 90):05d}", "Geburtsdatum": dob,
                "Angelegt": signup.strftime("%Y%m%d"),
                "Steuer-ID": f"{12345678900 + p}" if system == "webshop" else "",
                "Kundenkarte": card,
            })
        # Four kinds of customer, so the example has segments to find: loyal
        # regulars, one-time buyers, discount hunters, lapsed big spenders.
        kind = ("regular", "one_time", "discount", "lapsed")[int(rng.choice(4, p=[0.25, 0.35, 0.2, 0.2]))]
        value, n_orders, discount_share, last_day = {
            "regular": (rng.lognormal(4.3, 0.3), int(rng.integers(8, 16)), 0.0, dt.date(2025, 12, 31)),
            "one_time": (rng.lognormal(3.3, 0.3), 1, 0.0, dt.date(2025, 12, 31)),
            "discount": (rng.lognormal(3.6, 0.3), int(rng.integers(3, 7)), 0.3, dt.date(2025, 12, 31)),
            "lapsed": (rng.lognormal(5.3, 0.3), int(rng.integers(3, 6)), 0.0, dt.date(2024, 12, 31)),
        }[kind]
        signup = min(signup, last_day - dt.timedelta(days=30))
        for record in customers[-len(systems):]:
            record["Angelegt"] = signup.strftime("%Y%m%d")
        for _ in range(n_orders):
            system, number = ids[int(rng.integers(0, len(ids)))]
            day = signup + dt.timedelta(days=int(rng.integers(0, max(1, (last_day - signup).days))))
            amount = value * rng.uniform(0.8, 1.2)
            discount = amount * discount_share
            order_no += 1
            orders.append({
                "BestellNr": str(order_no), "System": system, "KundenNr": number,
                "Bestelldatum": day.strftime("%Y%m%d"),
                "Betrag": f"{amount:,.2f}".replace(",", "X").replace(".", ",").replace("X", "."),
                "Rabatt": f"{discount:.2f}".replace(".", ","),
                "Kanal": "online" if system == "webshop" else "laden",
                "Kategorie": ["haushalt", "garten", "technik"][int(rng.integers(0, 3))],
            })
    orders[3]["Betrag"] = "n/a"
    orders[5]["Betrag"] = "1.249,90"
    orders[8]["KundenNr"] = "W99999"
    for name, rows in (("customers.csv", customers), ("orders.csv", orders)):
        with (HERE / name).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=";")
            writer.writeheader()
            writer.writerows(rows)
        print(f"{name}: {len(rows)} rows")


if __name__ == "__main__":
    main()
