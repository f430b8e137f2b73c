"""The demo business's own customer labels (``raw_legacy_labels``), made before any segmentation.

Two schemes, the way such labels are usually made:

- ``tier``: a loyalty tier set every 1 January from the previous calendar
  year's net spend, with the noise of a real programme (manual upgrades,
  spend seen through a noisy export): the top tenth of noisy spend ``Gold``,
  the next quarter ``Silver``, everyone else ``Bronze``; customers who join
  during the year start ``Bronze`` on their sign-up day. It is held on each
  person's first record; for some persons the call-centre CRM keeps its own
  copy on their call-centre record, sometimes a year stale (the newer label
  must win) and sometimes changed by hand on the same date (a genuine conflict).
- ``persona``: marketing's nine personas from the sign-up channel (web, app,
  call centre: the system of the person's first record) and age band at sign-up
  (under 35, 35-54, 55+), ``Unprofiled`` when the sign-up form had no date of
  birth; held on the first record, dated at sign-up.

A few tier rows name records that do not exist (closed accounts): extract
quarantines them as ``unknown_customer_id``; they are added to
``truth_planted_errors``. The labels use their own random stream, so every
other generated table is the same with or without them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TIERS = ("Gold", "Silver", "Bronze")
#: Shares of last year's (noisy) spenders put in Gold and Silver; everyone else is Bronze.
GOLD_SHARE, SILVER_SHARE = 0.10, 0.25
AGE_BANDS = ((0, 35), (35, 55), (55, 200))
PERSONAS = {
    "web": ("Online explorer", "Busy professional", "Silver surfer"),
    "app": ("Mobile native", "On-the-go parent", "App adopter"),
    "call_centre": ("Service seeker", "Phone regular", "Traditional loyalist"),
}
UNPROFILED = "Unprofiled"
#: Stream offset: the labels draw from their own generator, never from the main one.
_SEED_OFFSET = 7919


def legacy_label_tables(persons: pd.DataFrame, records: pd.DataFrame, orders: pd.DataFrame,
                        planted: pd.DataFrame, end: np.datetime64, seed: int) -> dict[str, pd.DataFrame]:
    """``raw_legacy_labels`` and ``truth_planted_errors`` with the label rows planted to be quarantined.

    Parameters
    ----------
    persons, records, orders
        The generator's persons, identity records (with ``person_id``, ``_created``,
        ``loaded_at``, ``date_of_birth``) and observed orders (with ``person_id``).
    planted
        The generator's ``truth_planted_errors``; the returned one appends the label rows.
    end
        Last observed second.
    seed
        The generator's seed.
    """
    rng = np.random.default_rng(seed + _SEED_OFFSET)
    end_day = pd.Timestamp(end).normalize()
    # A record exists for extract from the day it was loaded.
    records = records.assign(_day=pd.to_datetime(records["loaded_at"]).dt.normalize())
    first = records.drop_duplicates("person_id").set_index("person_id")
    rows = [_tiers(rng, persons, records, first, orders, end_day), _personas(first)]
    labels = pd.concat(rows, ignore_index=True)
    closed = _closed_accounts(rng, labels)
    labels = pd.concat([labels, closed], ignore_index=True)
    labels = labels.sort_values(["source_system", "source_id", "scheme", "valid_from"], kind="stable")
    key = closed["source_system"] + "|" + closed["source_id"] + "|" + closed["scheme"] + "|" + closed["valid_from"]
    truth = pd.DataFrame({"source_table": "raw_legacy_labels", "source_key": key, "reason": "unknown_customer_id"})
    return {"raw_legacy_labels": labels.reset_index(drop=True),
            "truth_planted_errors": pd.concat([planted, truth], ignore_index=True)}


def _tiers(rng: np.random.Generator, persons: pd.DataFrame, records: pd.DataFrame, first: pd.DataFrame,
           orders: pd.DataFrame, end_day: pd.Timestamp) -> pd.DataFrame:
    net = orders["amount"] - orders["returned_amount"].fillna(0)
    year = pd.to_datetime(orders["order_ts"]).dt.year
    out = []
    for tier_year in (end_day.year - 1, end_day.year):
        start = pd.Timestamp(tier_year, 1, 1)
        spend = net[year == tier_year - 1].groupby(orders.loc[year == tier_year - 1, "person_id"]).sum()
        members = first.index[first["_day"] < start]
        if len(members) == 0:
            continue
        noisy = spend.reindex(members, fill_value=0.0) * rng.lognormal(0.0, 0.35, len(members))
        buyers = noisy[noisy > 0]
        gold_at = buyers.quantile(1 - GOLD_SHARE) if len(buyers) else np.inf
        silver_at = buyers.quantile(1 - GOLD_SHARE - SILVER_SHARE) if len(buyers) else np.inf
        tier = np.where(noisy >= gold_at, "Gold", np.where(noisy >= silver_at, "Silver", "Bronze")).astype(object)
        # Manual upgrades and downgrades by account managers: 3% moved one step.
        manual = rng.random(len(members)) < 0.03
        step = {"Gold": "Silver", "Silver": "Gold", "Bronze": "Silver"}
        tier[manual] = [step[t] for t in tier[manual]]
        out.append(pd.DataFrame({"person_id": members, "label": tier, "valid_from": start}))
    tiers = pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["person_id", "label", "valid_from"])
    # Joined after the last 1 January: Bronze from sign-up.
    newcomers = first.index[first["_day"] >= pd.Timestamp(end_day.year, 1, 1)]
    tiers = pd.concat([tiers, pd.DataFrame({"person_id": newcomers, "label": "Bronze",
                                            "valid_from": first.loc[newcomers, "_day"].to_numpy()})],
                      ignore_index=True)
    tiers = tiers[tiers["valid_from"] <= end_day]
    frame = tiers.assign(source_system=first.loc[tiers["person_id"], "source_system"].to_numpy(),
                         source_id=first.loc[tiers["person_id"], "source_id"].to_numpy())
    # The call-centre CRM's own copy of this year's tier, on a call-centre record that existed then.
    current = frame[frame["valid_from"] == frame.groupby("person_id")["valid_from"].transform("max")]
    cc = records[records["source_system"] == "call_centre"].drop_duplicates("person_id").set_index("person_id")
    current = current[current["person_id"].isin(cc.index)]
    current = current[current["source_system"] != "call_centre"]
    current = current[cc.loc[current["person_id"], "_day"].to_numpy() <= current["valid_from"].to_numpy()]
    copy = current[rng.random(len(current)) < 0.4].copy()
    copy["source_system"] = "call_centre"
    copy["source_id"] = cc.loc[copy["person_id"], "source_id"].to_numpy()
    cc_day = cc.loc[copy["person_id"], "_day"].to_numpy()
    draw = rng.random(len(copy))
    # Last year's tier, a year older (only where the record existed then): the newer one wins.
    stale = (draw < 0.15) & (cc_day <= (copy["valid_from"] - pd.DateOffset(years=1)).to_numpy())
    edited = (draw >= 0.15) & (draw < 0.20)  # changed by hand on the same date: a genuine conflict
    other = {"Gold": "Silver", "Silver": "Bronze", "Bronze": "Silver"}
    copy.loc[stale | edited, "label"] = [other[t] for t in copy.loc[stale | edited, "label"]]
    copy.loc[stale, "valid_from"] = copy.loc[stale, "valid_from"] - pd.DateOffset(years=1)
    frame = pd.concat([frame, copy], ignore_index=True)
    return _rows(frame, "tier")


def _personas(first: pd.DataFrame) -> pd.DataFrame:
    dob = pd.to_datetime(first["date_of_birth"], errors="coerce")
    signup = first["_day"]
    age = (signup - dob).dt.days / 365.25
    band = np.select([age < 35, age < 55, age >= 55], [0, 1, 2], default=-1)
    label = [UNPROFILED if b < 0 else PERSONAS[s][b] for s, b in zip(first["source_system"], band, strict=True)]
    frame = pd.DataFrame({"person_id": first.index, "source_system": first["source_system"].to_numpy(),
                          "source_id": first["source_id"].to_numpy(), "label": label, "valid_from": signup.to_numpy()})
    return _rows(frame, "persona")


def _closed_accounts(rng: np.random.Generator, labels: pd.DataFrame) -> pd.DataFrame:
    # Tier rows of closed accounts: ids no identity record has (0.3% of the tier rows, at least 3).
    # From the oldest tier date, so every as-of date that has tiers has these rows in scope too.
    tiers = labels[labels["scheme"] == "tier"]
    tiers = tiers[tiers["valid_from"] == tiers["valid_from"].min()]
    n = max(3, int(0.003 * len(labels[labels["scheme"] == "tier"])))
    pick = tiers.iloc[rng.choice(len(tiers), size=min(n, len(tiers)), replace=False)].copy()
    pick["source_id"] = [f"X{900000000 + i}" for i in range(len(pick))]
    return pick


def _rows(frame: pd.DataFrame, scheme: str) -> pd.DataFrame:
    return pd.DataFrame({"source_system": frame["source_system"].to_numpy(),
                         "source_id": frame["source_id"].to_numpy(), "scheme": scheme,
                         "label": frame["label"].to_numpy(),
                         "valid_from": pd.to_datetime(frame["valid_from"]).dt.strftime("%Y-%m-%d").to_numpy()})
