"""How the example shop's own customer labels, ``kundenstatus.csv``, were made (re-running rewrites it identically).

The shop's loyalty status and its marketing personas, as its CRM exports them:
one row per customer number and scheme (``Schema``: ``Kundenstufe`` or
``Persona``), the label (``Status``) and the day it applies from
(``GueltigAb``, DD.MM.YYYY; empty for personas set at sign-up).
``Kundenstufe`` is Gold / Silber / Bronze from 2024 net spend (top 15% Gold,
next 30% Silber), valid from 01.01.2025; the store system (``filiale``) keeps
its own copy, which for a few people says something else on the same day.
``Persona`` comes from the sign-up channel and the birth year. One row names
a customer number nobody has (a closed account): extract quarantines it.

Load it after the shop itself::

    python -m include.load --mapping examples/shop/legacy_labels.toml
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent


def main() -> None:
    customers = pd.read_csv(HERE / "customers.csv", sep=";", dtype=str, keep_default_na=False)
    orders = pd.read_csv(HERE / "orders.csv", sep=";", dtype=str, keep_default_na=False)
    amount = pd.to_numeric(orders["Betrag"].str.replace(".", "", regex=False).str.replace(",", ".", regex=False),
                           errors="coerce")
    in_2024 = orders["Bestelldatum"].str.startswith("2024") & amount.notna()
    person = customers["KundenNr"].str[1:]
    spend = amount[in_2024].groupby(orders.loc[in_2024, "KundenNr"].str[1:]).sum()
    webshop = customers[customers["System"] == "webshop"].assign(person=person)
    webshop = webshop[webshop["Angelegt"] < "20250101"]
    spend = spend.reindex(webshop["person"], fill_value=0.0)
    gold, silber = spend.quantile(0.85), spend.quantile(0.55)
    tier = dict(zip(spend.index, ["Gold" if s >= gold and s > 0 else "Silber" if s >= silber and s > 0 else "Bronze"
                                  for s in spend], strict=True))
    rows = []
    for r in customers.assign(person=person).itertuples():
        if r.person in tier:
            label = tier[r.person]
            # The store system's copy: every seventh differs (hand-edited on the same day).
            if r.System == "filiale" and int(r.person) % 7 == 0:
                label = "Silber" if label != "Silber" else "Gold"
            rows.append({"System": r.System, "KundenNr": r.KundenNr, "Schema": "Kundenstufe", "Status": label,
                         "GueltigAb": "01.01.2025"})
        if r.System == "webshop":
            year = int(r.Geburtsdatum[-4:]) if r.Geburtsdatum[-4:].isdigit() else None
            persona = ("Unbekannt" if year is None else "Junge Familie" if year >= 1985
                       else "Berufstätige" if year >= 1965 else "Best Ager")
            rows.append({"System": r.System, "KundenNr": r.KundenNr, "Schema": "Persona", "Status": persona,
                         "GueltigAb": ""})
    rows.append({"System": "webshop", "KundenNr": "W99998", "Schema": "Kundenstufe", "Status": "Gold",
                 "GueltigAb": "01.01.2025"})
    with (HERE / "kundenstatus.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=";")
        writer.writeheader()
        writer.writerows(rows)
    print(f"kundenstatus.csv: {len(rows)} rows")


if __name__ == "__main__":
    main()
