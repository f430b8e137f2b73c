"""How the example's person files were made (re-running it rewrites them identically).

Two registries of the same shop (a web shop and a loyalty scheme), one file each, in the
shape of the public record-linkage benchmarks (FEBRL): given name, surname, the address
in four columns (street number, address line 1 and 2, suburb), postcode, state, date of
birth as YYYYMMDD and a national id; many people are in both files, the second copy with
typos, a missing part or two swapped id digits. The loyalty file is written with ';'.
The orders name the registry and record they were placed under.
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GIVEN = ["james", "olivia", "jack", "charlotte", "william", "ava", "thomas", "mia", "lachlan", "chloe", "noah",
         "isla", "ethan", "grace", "liam", "ruby", "oscar", "zoe", "henry", "emily", "samuel", "lily", "max"]
SURNAME = ["smith", "jones", "williams", "brown", "wilson", "taylor", "johnson", "white", "martin", "anderson",
           "thompson", "nguyen", "thomas", "walker", "harris", "lee", "ryan", "robinson", "kelly", "king"]
STREETS = ["main street", "king street", "station road", "high street", "church street", "park avenue"]
SUBURBS = [("bondi", "2026", "nsw"), ("fitzroy", "3065", "vic"), ("newtown", "2042", "nsw"),
           ("toowong", "4066", "qld"), ("glenelg", "5045", "sa"), ("fremantle", "6160", "wa")]


def typo(text: str, rng: np.random.Generator) -> str:
    if len(text) < 3:
        return text
    i = int(rng.integers(1, len(text) - 1))
    return text[:i] + text[i + 1] + text[i] + text[i + 2:] if rng.random() < 0.5 else text[:i] + text[i + 1:]


def main(persons: int = 320, seed: int = 6) -> None:
    rng = np.random.default_rng(seed)
    header = ["rec_id", "given_name", "surname", "street_number", "address_1", "address_2", "suburb", "postcode",
              "state", "date_of_birth", "soc_sec_id", "registered"]
    files = {"registry_a": [], "registry_b": []}
    orders = []
    order_no = 50000
    for p in range(persons):
        suburb, postcode, state = SUBURBS[int(rng.integers(len(SUBURBS)))]
        person = {
            "given_name": GIVEN[int(rng.integers(len(GIVEN)))], "surname": SURNAME[int(rng.integers(len(SURNAME)))],
            "street_number": str(int(rng.integers(1, 200))), "address_1": STREETS[int(rng.integers(len(STREETS)))],
            "address_2": f"unit {int(rng.integers(1, 30))}" if rng.random() < 0.3 else "", "suburb": suburb,
            "postcode": postcode, "state": state,
            "date_of_birth": (dt.date(1950, 1, 1) + dt.timedelta(days=int(rng.integers(0, 18000)))).strftime("%Y%m%d"),
            "soc_sec_id": str(int(rng.integers(1000000, 9999999))),
        }
        registered = dt.date(2023, 1, 1) + dt.timedelta(days=int(rng.integers(0, 540)))
        where = ["registry_a"] if rng.random() < 0.45 else ["registry_b"] if rng.random() < 0.35 else \
            ["registry_a", "registry_b"]
        records = []
        for k, system in enumerate(where):
            record = dict(person, rec_id=f"{system[-1]}-{p:04d}-{k}",
                          registered=(registered + dt.timedelta(days=30 * k)).strftime("%Y%m%d"))
            if k:  # the second copy: one kind of noise
                noise = rng.integers(4)
                if noise == 0:
                    record["given_name"] = typo(record["given_name"], rng)
                elif noise == 1:
                    record["address_2"] = ""
                elif noise == 2:
                    s = record["soc_sec_id"]
                    record["soc_sec_id"] = s[:2] + s[3] + s[2] + s[4:]
                else:
                    record["surname"] = typo(record["surname"], rng)
            files[system].append(record)
            records.append((system, record["rec_id"], dt.date.fromisoformat(
                f"{record['registered'][:4]}-{record['registered'][4:6]}-{record['registered'][6:]}")))
        # Three kinds of customer, so there are segments to find.
        kind = int(rng.choice(3, p=[0.5, 0.3, 0.2]))
        n, value = [(1, 45.0), (int(rng.integers(3, 8)), 60.0), (int(rng.integers(8, 16)), 110.0)][kind]
        for _ in range(n):
            system, rec_id, since = records[int(rng.integers(len(records)))]
            day = since + dt.timedelta(days=int(rng.integers(0, max(1, (dt.date(2025, 6, 30) - since).days))))
            order_no += 1
            orders.append({"registry": system, "rec_id": rec_id, "order_no": str(order_no),
                           "order_date": day.isoformat(), "total": f"{value * rng.uniform(0.6, 1.5):.2f}"})
    for system, rows in files.items():
        with (HERE / f"{system}.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=header, delimiter=";" if system == "registry_b" else ",")
            writer.writeheader()
            writer.writerows(rows)
        print(f"{system}.csv: {len(rows)} records")
    with (HERE / "orders.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(orders[0]))
        writer.writeheader()
        writer.writerows(orders)
    print(f"orders.csv: {len(orders)} orders")


if __name__ == "__main__":
    main()
