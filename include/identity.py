"""Identity resolution: one customer key per person across web, app and call-centre ids.

The foundation rule is deterministic: two source records belong to the same
customer when their normalised email or normalised phone is equal, taken
transitively (connected components of the "shares an email or phone" graph).
It is fast and explainable but over-merges households sharing a phone and
misses persons whose records share neither; the Splink stage replaces it.

Survivorship rules for the golden record (table ``customers``):

- ``email``, ``phone``: the most recently created non-null value;
- ``postcode``, ``region``: the most frequent non-null value, ties to the most recent;
- ``first_seen_at``: the earliest ``created_at``;
- ``source_systems``: the sorted, comma-separated set of systems.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from include.warehouse import Warehouse

log = logging.getLogger(__name__)

_EMAIL = re.compile(r"^[a-z0-9._%+'-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$")


def normalise_email(values: pd.Series) -> pd.Series:
    """Lower-case and trim; anything not shaped like an address becomes NULL."""
    s = values.astype("string").str.strip().str.lower()
    s = s.mask(s == "")
    return s.where(s.str.match(_EMAIL.pattern).fillna(False).astype(bool))


def normalise_phone(values: pd.Series) -> pd.Series:
    """Digits only, with a UK ``+44``/``0044`` prefix turned into a leading 0.

    Numbers that are not 10 or 11 digits long afterwards become NULL.
    """
    s = values.astype("string").str.replace(r"\D", "", regex=True)
    s = s.str.replace(r"^(00)?44", "0", regex=True)
    s = s.mask(s == "")
    ok = s.str.len().between(10, 11).fillna(False).astype(bool)
    return s.where(ok)


def connected_groups(n: int, edges: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Component label of each of ``n`` nodes given arrays of edge endpoints."""
    if edges:
        a = np.concatenate([e[0] for e in edges])
        b = np.concatenate([e[1] for e in edges])
    else:
        a = b = np.array([], dtype=np.int64)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels


def _edges_on(key: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Edges linking every record to the first record with the same non-null key."""
    valid = key.notna().to_numpy()
    idx = np.flatnonzero(valid)
    codes, _ = pd.factorize(key[valid])
    first = pd.Series(idx).groupby(codes).transform("min").to_numpy()
    return idx, first


def customer_key_for(smallest_member: str) -> str:
    """Deterministic customer key from the smallest ``system:id`` of a cluster."""
    return "C" + hashlib.md5(smallest_member.encode()).hexdigest()[:15]


@dataclass
class IdentityResult:
    identity_map: pd.DataFrame
    customers: pd.DataFrame
    metrics: dict[str, float]


def resolve_exact(records: pd.DataFrame, as_of_date: dt.date) -> IdentityResult:
    """Cluster source records on exact normalised email or phone.

    Parameters
    ----------
    records
        Staged identity records: ``source_system``, ``source_id``, ``email``,
        ``phone``, ``postcode``, ``region``, ``created_at``.
    as_of_date
        Written into every output row.
    """
    rec = records.reset_index(drop=True).copy()
    email = normalise_email(rec["email"])
    phone = normalise_phone(rec["phone"])
    metrics = {
        "identity_records": float(len(rec)),
        "emails_nulled_malformed": float((rec["email"].notna() & email.isna()).sum()),
        "phones_nulled_malformed": float((rec["phone"].notna() & phone.isna()).sum()),
        "records_without_match_keys": float((email.isna() & phone.isna()).sum()),
    }
    labels = connected_groups(len(rec), [_edges_on(email), _edges_on(phone)])
    rec["email_norm"], rec["phone_norm"], rec["_cluster"] = email, phone, labels
    rec["_member"] = rec["source_system"] + ":" + rec["source_id"]
    keys = rec.groupby("_cluster")["_member"].min().map(customer_key_for)
    rec["customer_key"] = rec["_cluster"].map(keys)
    identity_map = pd.DataFrame({
        "as_of_date": as_of_date,
        "source_system": rec["source_system"],
        "source_id": rec["source_id"],
        "customer_key": rec["customer_key"],
        "cluster_confidence": 1.0,
        "match_method": "exact_email_phone",
    })
    customers = golden_records(rec, as_of_date)
    metrics["customers"] = float(len(customers))
    metrics["multi_record_customers"] = float((customers["source_records"] > 1).sum())
    return IdentityResult(identity_map, customers, metrics)


def golden_records(rec: pd.DataFrame, as_of_date: dt.date) -> pd.DataFrame:
    """One row per ``customer_key`` by the survivorship rules in the module docstring."""
    rec = rec.sort_values(["customer_key", "created_at", "source_system", "source_id"], kind="stable")
    g = rec.groupby("customer_key", sort=True)

    def most_frequent(col: str) -> pd.Series:
        sub = rec.dropna(subset=[col])
        counts = sub.groupby(["customer_key", col]).agg(n=(col, "size"), last=("created_at", "max"))
        counts = counts.reset_index().sort_values(["customer_key", "n", "last"], ascending=[True, False, False])
        return counts.drop_duplicates("customer_key").set_index("customer_key")[col]

    out = pd.DataFrame({
        "source_records": g.size(),
        "source_systems": g["source_system"].agg(lambda s: ",".join(sorted(set(s)))),
        "email": g["email_norm"].last(),
        "phone": g["phone_norm"].last(),
        "first_seen_at": g["created_at"].min(),
    })
    out["postcode"] = most_frequent("postcode")
    out["region"] = most_frequent("region")
    out = out.reset_index()
    out.insert(0, "as_of_date", as_of_date)
    return out[["as_of_date", "customer_key", "source_records", "source_systems", "email",
                "phone", "postcode", "region", "first_seen_at"]]


def resolve_identities(wh: Warehouse, as_of_date: dt.date) -> dict[str, float]:
    """Read staged identity records for ``as_of_date``; replace its identity map and customers."""
    records = wh.query_df(
        "SELECT source_system, source_id, email, phone, postcode, region, created_at "
        "FROM stg_identity_records WHERE as_of_date = :as_of_date "
        "ORDER BY source_system, source_id",
        {"as_of_date": as_of_date},
    )
    if records.empty:
        raise ValueError(f"stg_identity_records has no rows for as_of_date={as_of_date}; run extract first")
    result = resolve_exact(records, as_of_date)
    wh.replace_partition("identity_map", result.identity_map, {"as_of_date": as_of_date})
    wh.replace_partition("customers", result.customers, {"as_of_date": as_of_date})
    log.info("identity: %d records -> %d customers (%d with several records)",
             len(records), len(result.customers), int(result.metrics["multi_record_customers"]))
    return result.metrics
