"""Identity resolution: one customer key per person across web, app and call-centre ids.

Two methods, selectable per run (``identity_method``):

- ``splink`` (default): probabilistic record linkage over the columns that
  carry data this run, see :mod:`include.identity.linkage`;
- ``exact``: the deterministic rule, kept as the baseline: two records belong
  together when their normalised email, phone (E.164) or any extra identifier
  (``id_*``, e.g. a national id) is equal, taken transitively. Its
  ``match_method`` names the keys it used (``exact_email_phone``,
  ``exact_email_phone_id_national``). Fast and explainable, but it over-merges
  households sharing a phone and misses persons whose records share none.

Never silently degraded: when Splink cannot be trained and no model over the
same columns is given, the exact rule runs, the log says so at WARNING and the
row of ``identity_runs`` is marked ``degraded`` with the reason; when the run
links no two records although some share strong identifiers (equal email,
phone, ``id_*``, or full name + date of birth or postcode), it fails with
:class:`IdentityError`.

Stable customer keys (:func:`assign_stable_keys`) are a pure function of a
cluster's members: the key is a hash of its earliest record (first seen, ties
by ``system:id``), so a merge keeps the oldest key, the part of a split
without that record takes its own earliest record's key, and resolving dates
in any order, or re-running one, gives the same keys.

Survivorship rules for the golden record (table ``customers``):

- ``email``, ``phone``: the most recently created non-null value;
- ``postcode``, ``region``: the most frequent non-null value, ties to the most recent;
- ``first_seen_at``: the earliest ``created_at``;
- ``source_systems``: the sorted, comma-separated set of systems.

Size: the orchestration of one identity run (exact rule, stable keys, golden records,
evaluation, the degraded-run record) around :mod:`include.identity.linkage`; each part is a
short function, kept together because they share the record frame and its normalised columns.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from include.identity import incremental
from include.identity import linkage as splink_linkage
from include.identity.clustering import cluster_records, guard_penalties, guarded_columns
from include.identity.normalise import normalise_email, normalise_phone  # noqa: F401
from include.identity.quality import (
    SCOPE_ALL,
    SCOPE_INCREMENTAL,
    QualityEstimate,
    check_bar,
    estimate_quality,
    exact_quality,
)
from include.identity.scoring import LinkageSession
from include.runtime.errors import NoRowsError, PipelineFinding
from include.runtime.warehouse import Warehouse

log = logging.getLogger(__name__)

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


def customer_key_for(earliest_member: str) -> str:
    """The customer key of a cluster: a hash of its earliest record's ``system:id``.

    The earliest record is the one first seen (``created_at``; ties and unknown
    times by ``system:id``): see :func:`assign_stable_keys`.
    """
    return "C" + hashlib.md5(earliest_member.encode()).hexdigest()[:15]


def customer_keys_for(earliest_members: np.ndarray) -> np.ndarray:
    """:func:`customer_key_for` of many records at once (MD5 in DuckDB: 2-3 s less at 800k clusters)."""
    import duckdb
    import pyarrow as pa

    if not len(earliest_members):
        return np.array([], dtype=object)
    con = duckdb.connect()
    try:
        con.execute("SET threads = 1")
        con.register("earliest", pa.table({"m": pa.array(list(earliest_members), type=pa.string())}))
        keys = con.execute("SELECT 'C' || substr(md5(m), 1, 15) AS k FROM earliest").fetchnumpy()["k"]
    finally:
        con.close()
    return np.asarray(keys, dtype=object)


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
    members = rec["source_system"] + ":" + rec["source_id"]
    clusters = exact_clusters(pd.DataFrame({"email": email, "phone": phone}))
    keyed = assign_stable_keys(pd.DataFrame({"member": members, "cluster": clusters,
                                             "first_seen": rec["created_at"]}), as_of_date)
    rec["email_norm"], rec["phone_norm"], rec["customer_key"] = email, phone, keyed["customer_key"]
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


def _first_seen_order(group: np.ndarray, seen_key: np.ndarray, tiebreak: pd.DataFrame) -> np.ndarray:
    """Row order by ``group``, then ``seen_key``, then the columns of ``tiebreak`` (all ascending).

    Integer sorts only: the text tiebreak is sorted for the rows that tie on
    ``(group, seen_key)`` alone (a string sort of every record's id took 2-3 s
    of the 13.6 CPU-s keys and golden records cost at 1.4M records).
    """
    order = np.lexsort((seen_key, group))
    g, s = group[order], seen_key[order]
    same = (g[1:] == g[:-1]) & (s[1:] == s[:-1])
    tied = np.zeros(len(order), dtype=bool)
    tied[1:] |= same
    tied[:-1] |= same
    if tied.any():
        rows = order[tied]
        sub = tiebreak.iloc[rows].astype(str).reset_index(drop=True)
        sub.insert(0, "__seen", seen_key[rows])
        sub.insert(0, "__group", group[rows])
        # Tied rows sit in runs of equal (group, seen_key), already in order: sorting them
        # on the full key and writing them back into their positions orders each run.
        order[np.flatnonzero(tied)] = rows[sub.sort_values(list(sub.columns), kind="stable").index.to_numpy()]
    return order


def _seen_key(times: pd.Series) -> np.ndarray:
    """``created_at`` as int64 nanoseconds, unknown after every known time."""
    seen = pd.to_datetime(times, errors="coerce", utc=True).dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    return np.where(np.isnat(seen), np.iinfo(np.int64).max, seen.astype("int64"))


def golden_records(rec: pd.DataFrame, as_of_date: dt.date) -> pd.DataFrame:
    """One row per ``customer_key`` by the survivorship rules in the module docstring.

    On integer codes of the keys and values (grouping and sorting 1.4M records on
    text took most of the 13.6 CPU-s keys and golden records cost).
    """
    rec = rec.reset_index(drop=True)
    code, keys = pd.factorize(rec["customer_key"], sort=True)
    n = len(keys)
    seen = _seen_key(rec["created_at"])
    order = _first_seen_order(code, seen, rec[["source_system", "source_id"]])
    created = pd.to_datetime(rec["created_at"], errors="coerce")
    # Known times as int64; unknown ones before every known one (a value last seen at an
    # unknown time loses a tie to one seen at a known time, as NaT sorted last descending).
    known = np.where(seen == np.iinfo(np.int64).max, np.iinfo(np.int64).min + 1, seen)

    def latest(col: str) -> np.ndarray:
        """The most recent non-null value per key (ties: the greatest system, id)."""
        values = rec[col].to_numpy(dtype=object, na_value=None)[order]
        have = pd.notna(values)
        out = np.full(n, None, dtype=object)
        out[code[order][have]] = values[have]  # later rows overwrite earlier ones
        return out

    def most_frequent(col: str) -> np.ndarray:
        """The most frequent non-null value per key (ties: the most recent, then the smallest value)."""
        values = rec[col]
        have = values.notna().to_numpy()
        vcode, uniques = pd.factorize(values[have], sort=True)
        counts = pd.DataFrame({"k": code[have], "v": vcode, "t": known[have]})
        agg = counts.groupby(["k", "v"], sort=True).agg(n=("t", "size"), last=("t", "max")).reset_index()
        best = np.lexsort((agg["v"].to_numpy(), -agg["last"].to_numpy(), -agg["n"].to_numpy(), agg["k"].to_numpy()))
        first = np.ones(len(best), dtype=bool)
        first[1:] = agg["k"].to_numpy()[best][1:] != agg["k"].to_numpy()[best][:-1]
        out = np.full(n, None, dtype=object)
        out[agg["k"].to_numpy()[best][first]] = np.asarray(uniques, dtype=object)[agg["v"].to_numpy()[best][first]]
        return out

    # The set of systems as text, built per system rather than per customer
    # (a Python lambda per group took 25 s at 480k customers).
    system = rec["source_system"].astype(str).to_numpy()
    systems = pd.Series("", index=range(n))
    for name in sorted(set(system)):
        present = pd.Series(np.bincount(code[system == name], minlength=n) > 0)
        systems = systems.where(~present, systems.where(systems == "", systems + ",") + name)
    first_seen = created.groupby(code).min().reindex(range(n))
    out = pd.DataFrame({
        "as_of_date": as_of_date,
        "customer_key": np.asarray(keys, dtype=object),
        "source_records": np.bincount(code, minlength=n).astype("int64"),
        "source_systems": systems.to_numpy(dtype=object),
        "email": latest("email_norm"),
        "phone": latest("phone_norm"),
        "postcode": most_frequent("postcode"),
        "region": most_frequent("region"),
        "first_seen_at": first_seen.to_numpy(),
    })
    return out


def assign_stable_keys(clusters: pd.DataFrame, as_of_date: dt.date | None = None) -> pd.DataFrame:
    """Customer key and ``key_since`` of every record: a pure function of each cluster's members.

    A cluster's key is :func:`customer_key_for` its earliest record (earliest
    ``first_seen``, unknown last; ties by ``system:id``), and ``key_since`` is
    that record's first-seen date (``None`` when unknown). No earlier run is
    read, so dates can be resolved in any order and a re-run gives the same keys.

    Parameters
    ----------
    clusters
        ``member`` (``system:id``), ``cluster`` (any label) and, optionally,
        ``first_seen`` (the record's ``created_at``) of every record.
    as_of_date
        Not used for the keys; kept so callers read the same as before.
    """
    members = clusters["member"].astype(str).to_numpy()
    cluster_code, _ = pd.factorize(clusters["cluster"].astype(str), sort=False)
    n_clusters = int(cluster_code.max()) + 1 if len(cluster_code) else 0
    if "first_seen" in clusters:
        seen_key = _seen_key(clusters["first_seen"])
    else:
        seen_key = np.full(len(members), np.iinfo(np.int64).max, dtype=np.int64)
    order = _first_seen_order(cluster_code, seen_key, pd.DataFrame({"member": members}))
    first = np.ones(len(order), dtype=bool)
    first[1:] = cluster_code[order][1:] != cluster_code[order][:-1]
    earliest = np.empty(n_clusters, dtype=object)
    earliest[cluster_code[order][first]] = members[order][first]
    since_key = np.empty(n_clusters, dtype=np.int64)
    since_key[cluster_code[order][first]] = seen_key[order][first]
    # Dates as datetime.date objects (None when unknown), converted once per cluster.
    since = np.where(since_key == np.iinfo(np.int64).max, np.datetime64("NaT"),
                     since_key.astype("datetime64[ns]")).astype("datetime64[D]").astype(object)
    key = customer_keys_for(earliest)
    result = pd.DataFrame({"member": members, "cluster": clusters["cluster"].to_numpy(),
                           "customer_key": key[cluster_code], "key_since": since[cluster_code]},
                          index=clusters.index)
    if len(set(key)) != n_clusters:
        raise AssertionError("stable keys: one customer_key was given to two clusters")
    return result


def evaluate_clusters(predicted: pd.Series, truth: pd.Series) -> dict[str, float]:
    """Pairwise and cluster-level quality of ``predicted`` cluster labels against ``truth``.

    Both series are indexed by record. Pairwise precision/recall/F1 count record
    pairs put together; ``persons_exact`` is the share of true persons whose
    records form exactly one predicted cluster; ``over_merge_rate`` the share of
    predicted clusters holding several persons; ``split_rate`` the share of
    persons spread over several clusters.
    """
    both = pd.DataFrame({"pred": predicted.to_numpy(), "true": truth.to_numpy()}).dropna()
    # Integer codes: grouping on strings is several times slower at 1M records.
    frame = pd.DataFrame({"pred": pd.factorize(both["pred"].astype(str))[0],
                          "true": pd.factorize(both["true"].astype(str))[0]})

    def pairs(counts: pd.Series) -> float:
        return float((counts * (counts - 1) // 2).sum())

    together = pairs(frame.groupby(["pred", "true"]).size())
    pred_pairs = pairs(frame.groupby("pred").size())
    true_pairs = pairs(frame.groupby("true").size())
    precision = together / pred_pairs if pred_pairs else 1.0
    recall = together / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    persons_per_cluster = frame.groupby("pred")["true"].nunique()
    clusters_per_person = frame.groupby("true")["pred"].nunique()
    cluster_sizes = frame.groupby("pred").size()
    person_sizes = frame.groupby("true").size()
    # A person is recovered exactly when all its records sit in one cluster holding nothing else.
    one_cluster = clusters_per_person[clusters_per_person == 1].index
    its_cluster = frame.drop_duplicates("true").set_index("true")["pred"].reindex(one_cluster)
    exact = (cluster_sizes.reindex(its_cluster.to_numpy()).to_numpy() == person_sizes.reindex(one_cluster).to_numpy())
    return {
        "pairwise_precision": precision, "pairwise_recall": recall, "pairwise_f1": f1,
        "persons_exact": float(exact.sum()) / len(person_sizes),
        "over_merge_rate": float((persons_per_cluster > 1).mean()),
        "split_rate": float((clusters_per_person > 1).mean()),
        "clusters": float(len(cluster_sizes)), "persons": float(len(person_sizes)),
    }


def strong_identifier_keys(linkage: pd.DataFrame) -> pd.DataFrame:
    """The exact rule's keys: normalised email, phone and every ``id_*`` column of the linkage input."""
    cols = ["email", "phone", *splink_linkage.identifier_columns(linkage.columns)]
    return linkage[[c for c in cols if c in linkage.columns]].reset_index(drop=True)


def exact_clusters(keys: pd.DataFrame) -> pd.Series:
    """Cluster label of every record under the exact rule: equal value in any column of ``keys``, transitively."""
    keys = keys.reset_index(drop=True)
    return pd.Series(connected_groups(len(keys), [_edges_on(keys[c]) for c in keys.columns]))


def exact_method_name(keys: pd.DataFrame) -> str:
    """``match_method`` of the exact rule over ``keys``: ``exact_`` and the key columns it used."""
    return "exact_" + "_".join(keys.columns)


class IdentityError(PipelineFinding):
    """Identity resolution could not link records that share strong identifiers."""


class IdentityQualityError(IdentityError):
    """The run's truth-free quality estimate is below the bar and the settings say to fail."""


@dataclass
class IdentityRun:
    """Everything one identity run produced, for the task to log."""

    result: IdentityResult
    model: dict | None
    model_trained: bool
    evaluation: pd.DataFrame | None
    columns: tuple[str, ...] = ()
    degraded_reason: str | None = None
    model_refused_reason: str | None = None
    mode: str = "full"
    mode_reason: str = ""
    base_as_of_date: dt.date | None = None
    quality: QualityEstimate | None = None
    changes: pd.DataFrame | None = None
    plan_counts: dict = field(default_factory=dict)
    quality_below_bar: str | None = None
    run_row: dict = field(default_factory=dict)  # the row of identity_runs
    state: pd.DataFrame | None = None  # the rows of incremental.STATE_TABLE (Splink runs)
    timings: dict[str, float] = field(default_factory=dict)  # CPU seconds per phase


@dataclass
class Linked:
    """Clusters of one Splink run (full or incremental) and what they were built from."""

    cluster: pd.Series  # label per record (aligned with the linkage input)
    confidence: pd.Series
    quality: QualityEstimate
    mode: str
    mode_reason: str
    records_relinked: int
    plan_counts: dict = field(default_factory=dict)
    kept: pd.Series | None = None  # incremental: per record, the base key of the cluster kept whole (NA elsewhere)


def link_records(linkage: pd.DataFrame, model: dict, threshold: float, *, relink: str = incremental.INCREMENTAL,
                 base: incremental.BaseRun | None = None, threads: int = 2,
                 memory_limit: str | None = "3GB", fingerprints: pd.Series | None = None,
                 base_position: np.ndarray | None = None) -> Linked:
    """Cluster the linkage input with a trained model: incrementally on ``base`` when allowed, else in full.

    See :mod:`include.identity.incremental` for when a run is incremental and
    what it keeps; :mod:`include.identity.scoring` and
    :mod:`include.identity.clustering` for how pairs become clusters. ``fingerprints``: the
    records' :func:`~include.identity.incremental.record_fingerprints`, when the caller has them;
    ``base_position``: each record's row in ``base.members`` (-1 when new), when the caller has it.
    """
    columns = splink_linkage.model_columns(model)
    mode, why = incremental.choose_mode(relink, base, model, columns)
    session = LinkageSession(linkage, model, threshold, threads=threads, memory_limit=memory_limit)
    members = linkage["unique_id"].astype("string").reset_index(drop=True)
    guarded = linkage[guarded_columns(linkage.columns)].reset_index(drop=True)
    plan = None
    if mode == incremental.INCREMENTAL:
        if fingerprints is None:
            fingerprints = incremental.record_fingerprints(linkage)
        plan = incremental.plan_incremental(members, fingerprints, base, base_position)
        scored = session.score_incremental(plan.new_ids, plan.regroup)
        relinked = len(plan.new_ids) + len(plan.regroup)
    else:
        scored = session.score_all()
        relinked = len(members)
    clustering = cluster_records(members, scored.links, strong=guarded,
                                 groups=None if plan is None else plan.groups,
                                 base_confidence=None if plan is None else plan.base_confidence,
                                 threshold=threshold, penalties=guard_penalties(model))
    quality = estimate_quality(scored, clustering.cluster, guarded,
                               scope=SCOPE_INCREMENTAL if plan is not None else SCOPE_ALL,
                               links_refused=clustering.refused)
    if scored.equal_ids_contradicted:
        # Logged without values: only counts.
        log.warning("identity: %d pair(s) with an equal strong id (%s) kept apart: every other comparison "
                    "contradicts them", scored.equal_ids_contradicted, ", ".join(session.strong_ids))
    return Linked(pd.Series(clustering.cluster.astype(str)), pd.Series(clustering.confidence), quality, mode, why,
                  relinked, {} if plan is None else plan.counts, None if plan is None else plan.groups)


def load_identity_records(wh: Warehouse, as_of_date: dt.date) -> pd.DataFrame:
    """Staged identity records of ``as_of_date`` in a fixed order.

    With ``date_of_birth_text``: the text of a date of birth extract nulled as no calendar
    date, from ``field_issues`` (linkage compares it as keyed: :func:`include.identity.linkage.linkage_input`).
    """
    records = wh.query_df(
        "SELECT r.source_system, r.source_id, r.first_name, r.last_name, r.email, r.phone, r.address, r.postcode, "
        "r.date_of_birth, r.device_id, r.region, r.created_at, f.date_of_birth_text "
        "FROM stg_identity_records r LEFT JOIN ("
        # field_issues' detail is 'date_of_birth=<value as loaded>', its key 'system|id' (include/sql/validate.sql).
        "  SELECT source_key, MIN(SUBSTR(detail, 15)) AS date_of_birth_text FROM field_issues "
        "  WHERE as_of_date = :as_of_date AND source_table = 'raw_identity_records' "
        "  AND column_name = 'date_of_birth' AND detail LIKE 'date_of_birth=%' GROUP BY source_key"
        ") f ON f.source_key = r.source_system || '|' || r.source_id "
        "WHERE r.as_of_date = :as_of_date ORDER BY r.source_system, r.source_id",
        {"as_of_date": as_of_date},
    )
    if records.empty:
        raise NoRowsError(f"stg_identity_records has no rows for as_of_date={as_of_date}; run extract first")
    return records


IDENTIFIERS_TABLE = "stg_identity_identifiers"


def load_identity_identifiers(wh: Warehouse, as_of_date: dt.date) -> pd.DataFrame | None:
    """Extra identifiers of ``as_of_date`` (long: ``source_system, source_id, id_type, id_value``), if staged."""
    if not wh.has_table(IDENTIFIERS_TABLE):
        return None
    return wh.query_df(
        f"SELECT source_system, source_id, id_type, id_value FROM {IDENTIFIERS_TABLE} "
        "WHERE as_of_date = :as_of_date ORDER BY source_system, source_id, id_type, id_value",
        {"as_of_date": as_of_date})


def truth_persons_of(wh: Warehouse, records: pd.DataFrame) -> pd.Series | None:
    """Generator ground truth (person of each record) when the warehouse has it; used only for scoring."""
    if not wh.has_table("truth_identity"):
        return None
    truth = wh.query_df("SELECT source_system || ':' || source_id AS member, person_id FROM truth_identity")
    members = records["source_system"] + ":" + records["source_id"]
    out = members.map(truth.set_index("member")["person_id"])
    return out if out.notna().all() else None


#: Combinations of person details that, equal on two records, call for a link.
SHARED_DETAIL_KEYS = (("first_name", "last_name", "dob"), ("first_name", "last_name", "postcode"))


def shared_strong_identifiers(linkage: pd.DataFrame) -> dict[str, int]:
    """Records that share a strong identifier with another record, per identifier (no values).

    Counts equal email, phone and ``id_*`` values, and equal full name with
    equal date of birth or postcode; only non-zero counts are returned.
    """
    out = {}
    keys = [[c] for c in strong_identifier_keys(linkage).columns] + [list(k) for k in SHARED_DETAIL_KEYS]
    for key in keys:
        if not set(key) <= set(linkage.columns):
            continue
        sub = linkage[key].dropna()
        n = int(sub.duplicated(keep=False).sum())
        if n:
            out[" + ".join(key)] = n
    return out


def _check_linked(cluster: pd.Series, linkage: pd.DataFrame, method: str, columns: tuple[str, ...],
                  degraded_reason: str | None) -> None:
    """Raise :class:`IdentityError` when no two records were linked although some share strong identifiers."""
    if cluster.duplicated().any():
        return
    shared = shared_strong_identifiers(linkage)
    if not shared:
        return
    why = (f"Splink could not be trained ({degraded_reason}) and the exact rule only links equal "
           f"email, phone or id_* values" if degraded_reason else f"method {method!r} found no match")
    raise IdentityError(
        f"identity: {method} linked no two of {len(linkage)} records although records share strong identifiers ("
        + "; ".join(f"{k}: {n} records" for k, n in shared.items())
        + f"). {why}. Linkage columns with data: {', '.join(columns) or 'none'}. "
        "Provide an email, phone or id_* identifier (stg_identity_identifiers), or enough records "
        "to train Splink, or reuse an accepted model trained on these columns.")


#: ``resolve_identities(base=...)`` default: find the base run in the warehouse.
FIND_BASE = object()
#: ``match_method`` of a single-source run whose own ids are the customers.
SOURCE_ID_METHOD = "source_id"


def _single_source_identity(records: pd.DataFrame, linkage: pd.DataFrame) -> bool:
    """One source system whose records share no strong identifier: each source id is a customer.

    A shop exporting its own customer table (``source_id`` = its customer id)
    has nothing to link: Splink has no pairs to learn from, and that is not a
    degraded run.
    """
    return records["source_system"].nunique() == 1 and not shared_strong_identifiers(linkage)


def resolve_identities(wh: Warehouse, as_of_date: dt.date, *, method: str = "splink",
                       threshold: float = 0.95, model: dict | None = None, seed: int = 42,
                       u_max_pairs: float = 5e6, phone_country: str = "GB",
                       relink: str = incremental.INCREMENTAL, base: object = FIND_BASE,
                       model_trained_for: dt.date | None = None, min_estimated_precision: float = 0.0,
                       min_estimated_recall: float = 0.0, below_bar: str = "degrade") -> IdentityRun:
    """Resolve the staged identity records of ``as_of_date`` into customers; replace its rows.

    Reads the staged records, the base run (``base``, by default the latest earlier Splink
    run in the warehouse, with its kept state) and the generator's truth when present, calls
    :func:`resolve_records`, and writes ``identity_map``, ``customers``, ``identity_runs``,
    ``identity_changes`` and :data:`~include.identity.incremental.STATE_TABLE` of the date in
    one transaction. The parameters are :func:`resolve_records`'.

    Raises
    ------
    IdentityError
        When the run linked no two records although some share an email,
        phone, ``id_*`` value, or full name + date of birth or postcode.
    IdentityQualityError
        When the estimate is below the bar and ``below_bar`` is ``fail`` (nothing is written).
    """
    if method not in ("splink", "exact"):
        raise ValueError(f"identity_method must be 'splink' or 'exact', got {method!r}")
    if below_bar not in ("degrade", "fail"):
        raise ValueError(f"identity_below_bar must be 'degrade' or 'fail', got {below_bar!r}")
    records = load_identity_records(wh, as_of_date)
    identifiers = load_identity_identifiers(wh, as_of_date)
    if base is FIND_BASE:
        base = incremental.latest_base(wh, as_of_date)
    out = resolve_records(records, identifiers, as_of_date, method=method, threshold=threshold, model=model,
                          seed=seed, u_max_pairs=u_max_pairs, phone_country=phone_country, relink=relink,
                          base=base, model_trained_for=model_trained_for,
                          min_estimated_precision=min_estimated_precision,
                          min_estimated_recall=min_estimated_recall, below_bar=below_bar,
                          truth=truth_persons_of(wh, records))
    write_run(wh, as_of_date, out)
    return out


def write_run(wh: Warehouse, as_of_date: dt.date, out: IdentityRun) -> None:
    """Replace the date's rows of the identity stage's tables with ``out``'s, in one transaction."""
    state = out.state if out.state is not None else pd.DataFrame(columns=["as_of_date", "source_system",
                                                                           "source_id"])
    if not wh.has_table(incremental.STATE_TABLE):
        wh.ensure_schema()  # a warehouse from before the table (the DAG's extract task creates it first)
    have = set(wh.table_columns(incremental.STATE_TABLE) or [])
    added = [c for c in splink_linkage.identifier_columns(state.columns) if c not in have]
    if added:
        # One column per identifier type linked on (added before the transaction: a new empty
        # column changes no visible row, and DDL commits on its own on Snowflake).
        wh.run_script(";\n".join(f"ALTER TABLE {incremental.STATE_TABLE} ADD COLUMN {c} VARCHAR" for c in added))
    with wh.transaction() as tx:  # every table of the date becomes visible together
        tx.replace_partition("identity_map", out.result.identity_map, {"as_of_date": as_of_date})
        tx.replace_partition("customers", out.result.customers, {"as_of_date": as_of_date})
        tx.replace_partition("identity_runs", pd.DataFrame([out.run_row]), {"as_of_date": as_of_date})
        tx.replace_partition("identity_changes", out.changes, {"as_of_date": as_of_date})
        tx.replace_partition(incremental.STATE_TABLE, state, {"as_of_date": as_of_date})


def resolve_records(records: pd.DataFrame, identifiers: pd.DataFrame | None, as_of_date: dt.date, *,
                    method: str = "splink", threshold: float = 0.95, model: dict | None = None, seed: int = 42,
                    u_max_pairs: float = 5e6, phone_country: str = "GB", relink: str = incremental.INCREMENTAL,
                    base: incremental.BaseRun | None = None, model_trained_for: dt.date | None = None,
                    min_estimated_precision: float = 0.0, min_estimated_recall: float = 0.0,
                    below_bar: str = "degrade", truth: pd.Series | None = None) -> IdentityRun:
    """Resolve staged identity records into customers (no warehouse: :func:`resolve_identities` reads and writes).

    Parameters
    ----------
    records, identifiers
        The staged records (:func:`load_identity_records`) and extra identifiers of the date.
    method
        ``splink`` or ``exact``.
    threshold
        Match probability at which Splink links two records.
    model
        A trained Splink model JSON to reuse; ``None`` trains a new one. A
        model over other columns than the ones with data this run is not used
        (a new one is trained; :attr:`IdentityRun.model_refused_reason` says why).
    phone_country
        Country of phone numbers written without a calling code.
    relink
        ``incremental`` (link new and changed records against the base run's
        clusters when it used the same model and columns) or ``full``; see
        :mod:`include.identity.incremental`.
    base
        The run this one builds on (:class:`~include.identity.incremental.BaseRun`), or ``None``.
        Merges and splits against it go to ``identity_changes``. With its kept state
        (:data:`~include.identity.incremental.STATE_TABLE`) and an incremental run, only the records
        whose staged values changed are normalised, and only the clusters that changed are keyed
        and get new golden records; the others keep the base's.
    model_trained_for
        The as-of date the given model was trained for (recorded in ``identity_runs``).
    min_estimated_precision, min_estimated_recall
        The bar for the truth-free quality estimate (:mod:`include.identity.quality`).
    below_bar
        ``degrade``: a run below the bar is marked degraded (WARNING,
        ``identity_runs.degraded``); ``fail``: it raises :class:`IdentityQualityError`.
    truth
        The generator's person of each record (scoring only: it never reaches training or clustering).

    Notes
    -----
    When Splink cannot be trained and no compatible model is given, the exact
    rule runs instead and the run is *degraded*: a WARNING, the metric
    ``identity.degraded`` and a row in ``identity_runs`` say so. Not degraded:
    one source system whose records share no strong identifier (each source id
    is a customer, method ``source_id``).
    """
    if method not in ("splink", "exact"):
        raise ValueError(f"identity_method must be 'splink' or 'exact', got {method!r}")
    if below_bar not in ("degrade", "fail"):
        raise ValueError(f"identity_below_bar must be 'degrade' or 'fail', got {below_bar!r}")
    timings: dict[str, float] = {}
    clock = time.process_time()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.process_time()
        timings[name] = timings.get(name, 0.0) + now - clock
        clock = now

    records = records.reset_index(drop=True)
    members = (records["source_system"] + ":" + records["source_id"]).reset_index(drop=True)
    from_state = None
    if (method == "splink" and relink == incremental.INCREMENTAL and isinstance(base, incremental.BaseRun)
            and base.state is not None):
        # The base's normalised values for every record whose staged values are unchanged.
        from_state = incremental.linkage_from_state(records, identifiers, phone_country, base)
        linkage, fingerprints, source_hash = from_state.linkage, from_state.fingerprints, from_state.source_hash
    else:
        linkage = splink_linkage.linkage_input(records, identifiers, phone_country)
        fingerprints = source_hash = None
    columns = splink_linkage.present_columns(linkage)
    email, phone = linkage["email"], linkage["phone"]
    identifying = [c for c in linkage.columns if c not in ("unique_id", *splink_linkage.CONTEXT_COLUMNS)]
    no_identifier = linkage[identifying].isna().all(axis=1)
    metrics = {
        "identity_records": float(len(records)),
        "emails_nulled_malformed": float((records["email"].notna().to_numpy() & email.isna().to_numpy()).sum()),
        "phones_nulled_malformed": float((records["phone"].notna().to_numpy() & phone.isna().to_numpy()).sum()),
        "records_without_identifiers": float(no_identifier.sum()),
        "linkage_columns": float(len(columns)),
        "records_normalised": float(len(records) if from_state is None else from_state.normalised),
    }
    exact_keys = strong_identifier_keys(linkage)
    lap("normalise")
    trained, degraded_reason, refused = False, None, None
    if method == "splink" and model is not None:
        model_cols = splink_linkage.model_columns(model)
        if model_cols != columns:
            refused = (f"model compares {', '.join(model_cols) or 'nothing'}; this run has data in "
                       f"{', '.join(columns) or 'nothing'}")
            log.info("identity: not reusing the given model (%s); training a new one", refused)
            model = None
    single_source = False
    if method == "splink" and model is None:
        try:
            model = splink_linkage.train_model(linkage, columns=columns, seed=seed, u_max_pairs=u_max_pairs)
            trained, model_trained_for = True, as_of_date
        except splink_linkage.TrainingError as exc:
            method = "exact"
            single_source = _single_source_identity(records, linkage)
            if single_source:
                log.info("identity: one source system whose records share no strong identifier; each source "
                         "id is a customer (Splink has nothing to learn: %s)", exc)
            else:
                degraded_reason = f"Splink cannot be trained: {exc}"
                log.warning("identity DEGRADED: %s; no accepted model over these columns to reuse; "
                            "using the exact rule on %s this run", degraded_reason, ", ".join(exact_keys.columns))
    lap("train")
    mode, mode_reason, plan_counts, relinked = incremental.FULL, "", {}, len(records)
    kept = None  # per record: it sits in a cluster kept whole from the base with its staged values unchanged
    if fingerprints is None:
        fingerprints = incremental.record_fingerprints(linkage)  # stored, and compared with the base's
    if method == "splink":
        linked = link_records(linkage, model, threshold, relink=relink, base=base, fingerprints=fingerprints,
                              base_position=None if from_state is None else from_state.base_position)
        cluster, confidence = linked.cluster, linked.confidence
        mode, mode_reason, plan_counts, relinked = linked.mode, linked.mode_reason, linked.plan_counts, \
            linked.records_relinked
        quality = linked.quality
        metrics["pairs_scored"] = float(quality.pairs_scored)
        match_method = "splink"
        if from_state is not None and linked.kept is not None:
            kept = linked.kept.notna().to_numpy() & from_state.unchanged
    else:
        baseline = exact_clusters(exact_keys)
        cluster, confidence = baseline.astype(str), pd.Series(1.0, index=members.index)
        match_method = SOURCE_ID_METHOD if single_source else exact_method_name(exact_keys)
        mode_reason = "one source system: its own ids are the customers" if single_source else "exact rule"
        quality = exact_quality(baseline.to_numpy(), linkage[splink_linkage.identifier_columns(linkage.columns)],
                                scope="no model: " + mode_reason)
    log.info("identity: %s link (%s); %d of %d records scored, %d normalised", mode, mode_reason, relinked,
             len(records), int(metrics["records_normalised"]))
    # Records with nothing to match on stay alone, whatever the method did.
    cluster = cluster.astype(str).where(~no_identifier, "solo:" + members)
    _check_linked(cluster, linkage, match_method, columns, degraded_reason)
    below = check_bar(quality, min_estimated_precision, min_estimated_recall)
    if below:
        if below_bar == "fail":
            raise IdentityQualityError(f"identity_runs {as_of_date}: {below}. Nothing was written; lower "
                                       "identity_min_estimated_precision / identity_min_estimated_recall, set "
                                       "identity_below_bar = degrade, or look at the identity records.")
        degraded_reason = f"{degraded_reason}; {below}" if degraded_reason else below
        log.warning("identity DEGRADED: %s", below)
    metrics["degraded"] = float(degraded_reason is not None)
    metrics.update(quality.metrics())
    lap("link")
    rec = records.copy()
    rec["email_norm"], rec["phone_norm"] = email.to_numpy(), phone.to_numpy()
    keys, key_since, customers, rebuilt = keys_and_golden_records(
        rec, cluster, as_of_date, reuse=None if kept is None else (kept, from_state.base_position, base))
    identity_map = pd.DataFrame({
        "as_of_date": as_of_date,
        "source_system": records["source_system"].to_numpy(),
        "source_id": records["source_id"].to_numpy(),
        "customer_key": keys,
        "cluster_confidence": confidence.round(6).to_numpy(),
        "match_method": match_method,
        "key_since": key_since,
        "record_hash": fingerprints.to_numpy(),
    })
    metrics["customers"] = float(len(customers))
    metrics["multi_record_customers"] = float((customers["source_records"] > 1).sum())
    metrics["customers_rebuilt"] = float(rebuilt)
    changes = pd.DataFrame(columns=incremental.CHANGE_COLUMNS)
    if isinstance(base, incremental.BaseRun):
        moved = np.ones(len(records), dtype=bool) if kept is None else ~kept  # kept records keep their keys
        changes = incremental.identity_changes(
            base.members, pd.DataFrame({"member": members[moved].to_numpy(), "customer_key": keys[moved]}),
            as_of_date, keys_after=keys)
    metrics["customer_merges"] = float((changes["change"] == "merge").sum())
    metrics["customer_splits"] = float((changes["change"] == "split").sum())
    state = None
    if method == "splink":
        if source_hash is None:
            source_hash = incremental.source_hashes(records, identifiers, phone_country)
        state = incremental.state_rows(records, linkage, source_hash, fingerprints, as_of_date)
    lap("keys_golden")
    evaluation = None
    if truth is not None:
        # Scoring only: the truth never reaches training or clustering.
        truth = pd.Series(truth).reset_index(drop=True)
        rows = {"exact_email_phone": evaluate_clusters(exact_clusters(pd.DataFrame({"email": email, "phone": phone})),
                                                       truth)}
        if exact_keys.shape[1] > 2:
            rows[exact_method_name(exact_keys)] = evaluate_clusters(exact_clusters(exact_keys), truth)
        if method == "splink":
            rows["splink"] = evaluate_clusters(pd.Series(keys), truth)
        evaluation = pd.DataFrame(rows).T.rename_axis("method").reset_index()
        for row in evaluation.itertuples(index=False):
            for k, v in row._asdict().items():
                if k != "method":
                    metrics[f"eval.{row.method}.{k}"] = float(v)
    base_date = base.as_of_date if isinstance(base, incremental.BaseRun) else None
    run_row = {
        "as_of_date": as_of_date, "method": match_method, "degraded": degraded_reason is not None,
        "reason": degraded_reason or refused or "", "records": len(records), "customers": len(customers),
        "linkage_columns": ",".join(columns), "model_trained": trained,
        "mode": mode if method == "splink" else match_method, "mode_reason": mode_reason,
        "base_as_of_date": base_date, "records_relinked": relinked,
        "model_id": incremental.model_id(model) if method == "splink" else None,
        "model_trained_for": model_trained_for if method == "splink" else None,
        "estimated_precision": quality.estimated_precision, "estimated_recall": quality.estimated_recall,
        "estimated_f1": quality.estimated_f1, "estimated_scope": quality.scope,
        "estimated_links_near_threshold_share": quality.links_near_threshold_share,
        "contradictory_id_cluster_share": quality.contradictory_id_cluster_share,
        "equal_id_pairs_apart_share": quality.equal_id_pairs_apart_share,
        "largest_cluster": quality.largest_cluster, "quality_below_bar": below or "",
    }
    log.info("identity (%s, %s): %d records -> %d customers (%d with several records, %d without identifiers, "
             "%d rebuilt); linkage columns: %s; %d merges, %d splits against %s", match_method, mode, len(records),
             len(customers), int(metrics["multi_record_customers"]), int(metrics["records_without_identifiers"]),
             int(metrics["customers_rebuilt"]), ", ".join(columns), int(metrics["customer_merges"]),
             int(metrics["customer_splits"]), base_date or "no earlier run")
    log.info("identity quality (no truth; %s): estimated precision %s, recall %s; %s", quality.scope,
             _fmt(quality.estimated_precision), _fmt(quality.estimated_recall), _quality_words(quality))
    log.info("identity CPU seconds: %s", ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    return IdentityRun(IdentityResult(identity_map, customers, metrics), model, trained, evaluation,
                       columns, degraded_reason, refused, mode, mode_reason, base_date, quality, changes, plan_counts,
                       below, run_row, state, timings)


def keys_and_golden_records(rec: pd.DataFrame, cluster: pd.Series, as_of_date: dt.date, *,
                            reuse: tuple[np.ndarray, np.ndarray, incremental.BaseRun] | None = None
                            ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame, int]:
    """Customer key and ``key_since`` of every record, the golden records (table ``customers``), and how many were built.

    ``rec``: the staged records with ``email_norm`` and ``phone_norm``; ``cluster``: their
    cluster labels. ``reuse``: per record, whether it sits in a cluster the run kept whole
    from the base with its staged values unchanged, its row in ``base.members``, and the
    base. A cluster of such records only is the base's cluster with the same members and
    values, so its key (a function of its members, :func:`assign_stable_keys`) and golden
    record are the base's: only the other clusters are keyed and rebuilt.
    """
    rec = rec.reset_index(drop=True)
    cluster = pd.Series(cluster).reset_index(drop=True)
    keys = np.empty(len(rec), dtype=object)
    since = np.empty(len(rec), dtype=object)
    reused = None
    if reuse is not None and reuse[2].customers is not None and "key_since" in reuse[2].members:
        kept, at, base = reuse
        code, _ = pd.factorize(cluster)
        mixed = np.zeros(int(code.max()) + 1 if len(code) else 0, dtype=bool)
        mixed[code[~kept]] = True
        reused = ~mixed[code]  # records of clusters made of kept records only
        keys[reused] = base.members["customer_key"].to_numpy(dtype=object)[at[reused]]
        # Dates as datetime.date objects (None when unknown), as assign_stable_keys gives them.
        base_since = pd.to_datetime(base.members["key_since"]).to_numpy(dtype="datetime64[ns]")[at[reused]]
        since[reused] = base_since.astype("datetime64[D]").astype(object)
    rebuild = np.flatnonzero(~reused) if reused is not None else np.arange(len(rec))
    sub = rec.iloc[rebuild].reset_index(drop=True)
    keyed = assign_stable_keys(pd.DataFrame({"member": (sub["source_system"] + ":" + sub["source_id"]).to_numpy(),
                                             "cluster": cluster.iloc[rebuild].to_numpy(),
                                             "first_seen": sub["created_at"].to_numpy()}), as_of_date)
    keys[rebuild] = keyed["customer_key"].to_numpy()
    since[rebuild] = keyed["key_since"].to_numpy()
    sub["customer_key"] = keys[rebuild]
    customers = golden_records(sub, as_of_date)
    rebuilt = len(customers)
    if reused is not None and reused.any():
        old = reuse[2].customers
        # A base cluster is kept whole or not at all: the base's customers but those of its records
        # not reused here (a small set: the clusters that changed or lost a record).
        base_reused = np.zeros(len(base.members), dtype=bool)
        base_reused[at[reused]] = True
        gone = pd.Index(pd.unique(base.members["customer_key"].to_numpy(dtype=object)[~base_reused]))
        keep = gone.get_indexer(old["customer_key"].to_numpy(dtype=object)) < 0
        kept_rows = old[keep][list(customers.columns)].assign(as_of_date=as_of_date)
        if len(kept_rows) != len(pd.unique(keys[reused])):
            raise AssertionError("identity: the base's customers do not match its kept clusters")
        # The rebuilt customers (by key), then the kept ones in the base's order: deterministic. Keys
        # cannot repeat: a key is its cluster's earliest record, and the two sets share no record.
        customers = pd.concat([customers, kept_rows.astype(customers.dtypes.to_dict(), errors="ignore")],
                              ignore_index=True)
    return keys, since, customers, rebuilt


def _fmt(value: float | None) -> str:
    return "not estimated" if value is None else f"{value:.4f}"


def _quality_words(q: QualityEstimate) -> str:
    parts = [f"largest cluster {q.largest_cluster} records", f"{q.singleton_share:.1%} of records alone"]
    if q.contradictory_id_cluster_share is not None:
        parts.append(f"{q.contradictory_id_cluster_share:.2%} of multi-record clusters hold contradictory ids")
    if q.equal_id_pairs_apart_share is not None:
        parts.append(f"{q.equal_id_pairs_apart_share:.2%} of equal-id pairs apart")
    if q.links_refused:
        parts.append(f"{q.links_refused} links refused for contradicting ids or dates of birth")
    return "; ".join(parts)
