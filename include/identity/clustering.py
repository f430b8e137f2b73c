"""Records into clusters from scored links: connected components that never join contradictory strong ids.

A cluster is a connected component of the links at or above the match
threshold (as Splink's ``cluster_pairwise_predictions_at_threshold``), with one
guard: two records whose strong identifiers (``id_*``: a national id, a
customer number) or dates of birth contradict each other are not put in one
cluster through a chain of other links on evidence that never weighed the
contradiction. Contradict means the values differ by more than the
comparison's fuzzy levels (one character, or two swapped; for dates also day
and month swapped): two persons of a household with the same name were
otherwise joined through a duplicate that lacked the differing field (the
surname's term frequency and the shared address outweighed the rest).

Components without contradicting ids (almost all) are plain connected
components. In a component holding contradicting ids the links are added
strongest first (ties by record ids). A link that would join contradicting
values the model did not see is refused (counted in :attr:`Clustering.refused`)
unless it stands with the contradiction paid for: its match weight is at least
the threshold's plus the weight the model takes off for that disagreement
(:func:`guard_penalties`). "Did not see": the two records of the link do not
both carry the contradicting values (one lacks the date of birth, say), so
the link's score never counted the disagreement; a contradiction between the
link's own two records was scored and needs nothing more.

The date of birth is guarded too (a person has one): the household trap of
generated person files without an id was two persons of one name and address
joined through a duplicate that lacked the date of birth (precision 0.9895
without the guard, 0.9971 with it). Links between records with an equal
``id_*`` value are always followed (:mod:`include.identity.scoring`).

Incremental runs pass the clusters they keep as ``groups``: their members are
joined before any link, as they were in the run that formed them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def near_identifiers(a: str, b: str) -> bool:
    """Whether two identifier values are one value keyed twice: equal, one edit apart, or two characters swapped."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if la == lb:
        diff = [i for i in range(la) if a[i] != b[i]]
        return len(diff) == 1 or (len(diff) == 2 and sorted(a) == sorted(b))
    if abs(la - lb) != 1:
        return False
    short, long_ = (a, b) if la < lb else (b, a)
    i = 0
    while i < len(short) and short[i] == long_[i]:
        i += 1
    return short[i:] == long_[i + 1:]


def near_dates(a: str, b: str) -> bool:
    """Whether two ISO dates of birth are one date keyed twice: :func:`near_identifiers`, or day and month swapped."""
    return near_identifiers(a, b) or (len(a) == len(b) == 10 and a[:4] == b[:4] and a[5:7] == b[8:10]
                                      and a[8:10] == b[5:7])


def _near(col: str, a: str, b: str) -> bool:
    return near_dates(a, b) if col == "dob" else near_identifiers(a, b)


def _conflicts(left: dict[str, set[str]], right: dict[str, set[str]]) -> list[str]:
    """Columns on which two groups of records hold values that are not one value keyed twice."""
    out = []
    for col, values in left.items():
        other = right.get(col)
        if other and not all(_near(col, a, b) for a in values for b in other):
            out.append(col)
    return out


@dataclass
class Clustering:
    """Cluster of every record (integer labels), its confidence, and the links refused."""

    cluster: np.ndarray
    confidence: np.ndarray
    refused: int
    accepted: np.ndarray | None = None  # per link: followed (False: refused by the guard)


#: Columns a person has one value of, guarded against contradiction (besides every ``id_*``).
GUARDED_COLUMNS = ("dob",)


def guarded_columns(columns) -> list[str]:
    """The columns of ``columns`` the guard watches: every ``id_*`` and :data:`GUARDED_COLUMNS`."""
    from include.identity.linkage import ID_PREFIX

    return [c for c in columns if str(c).startswith(ID_PREFIX) or c in GUARDED_COLUMNS]


def guard_penalties(model: dict) -> dict[str, float]:
    """Bits the model takes off for a disagreement on each guarded column ("all other" level), at least 0."""
    out = {}
    for comparison in model.get("comparisons", []):
        name = comparison["output_column_name"]
        if not guarded_columns([name]):
            continue
        for level in comparison["comparison_levels"]:
            m, u = level.get("m_probability"), level.get("u_probability")
            if level.get("sql_condition") == "ELSE" and m and u:
                out[name] = max(0.0, -math.log2(m / u))
    return out


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def cluster_records(unique_ids: pd.Series, links: pd.DataFrame, *, strong: pd.DataFrame | None = None,
                    groups: pd.Series | None = None, base_confidence: pd.Series | None = None,
                    threshold: float = 0.95, penalties: dict[str, float] | None = None) -> Clustering:
    """Cluster ``unique_ids`` along ``links`` (see the module docstring).

    Parameters
    ----------
    unique_ids
        Every record of the run; the outputs follow its order.
    links
        ``unique_id_l``, ``unique_id_r``, ``match_probability`` of the links to follow.
    strong
        The strong identifier columns (``id_*``), aligned with ``unique_ids``; ``None`` or no columns: no guard.
    groups
        Per record, the label of a cluster kept from an earlier run (NA for none).
    base_confidence
        Per record, the confidence it had in that cluster (used for kept clusters).
    threshold
        The match threshold (probability) the links were taken at.
    penalties
        Per guarded column, the bits the model takes off for a disagreement
        (:func:`guard_penalties`); a link joining contradicting values needs
        the threshold's weight plus the largest penalty among the columns it
        contradicts on. Columns without a penalty are not guarded.

    Returns
    -------
    Clustering
        ``confidence`` is the highest match probability of a record's followed
        links (at least its kept confidence; 1.0 for a record with neither).
    """
    uid = pd.Series(unique_ids, dtype="string").reset_index(drop=True)
    n = len(uid)
    # One factorisation of the ids and both link ends: reindexing on Arrow strings was most of
    # the clustering's time. The ids come first, so their codes are 0..n-1 exactly when unique.
    ends = [links[c].astype("string").to_numpy(dtype=object, na_value=None) for c in ("unique_id_l", "unique_id_r")]
    codes, _ = pd.factorize(np.concatenate([uid.to_numpy(dtype=object, na_value=None), *ends]))
    if n and (codes[:n] != np.arange(n)).any():
        raise ValueError("cluster_records: unique_ids are not unique")
    la, lb = codes[n:n + len(ends[0])].astype(np.int64), codes[n + len(ends[0]):].astype(np.int64)
    if (la >= n).any() or (lb >= n).any() or (la < 0).any() or (lb < 0).any():
        raise ValueError("cluster_records: a link names a record that is not among unique_ids")
    p = links["match_probability"].to_numpy(dtype=float)
    # Links of records with an equal strong id are followed whatever else their records hold
    # (scoring links those the model left apart unless everything else contradicts them).
    always = (np.array(links["kind"] == "equal_id", dtype=bool) if "kind" in links
              else np.zeros(len(p), dtype=bool))
    ga = gb = np.array([], dtype=np.int64)
    if groups is not None:
        g = pd.Series(groups).reset_index(drop=True)
        member = np.flatnonzero(g.notna().to_numpy())
        if len(member):
            codes, _ = pd.factorize(g.iloc[member].astype(str))
            first = pd.Series(member).groupby(codes).transform("min").to_numpy()
            ga, gb = member, first
    label = _components(n, np.concatenate([la, ga]), np.concatenate([lb, gb]))
    accepted = np.ones(len(p), dtype=bool)
    refused = 0
    if strong is not None and strong.shape[1]:
        strong = strong.reset_index(drop=True)
        from include.identity.linkage import ID_PREFIX

        for col in (c for c in strong.columns if str(c).startswith(ID_PREFIX)):
            values = strong[col].to_numpy(dtype=object, na_value=None)
            left, right = values[la], values[lb]
            always |= np.array([a is not None and a == b for a, b in zip(left, right, strict=True)], dtype=bool)
        conflicted = _conflicted_components(label, strong)
        if len(conflicted):
            bars = {c: math.log2(threshold / (1 - threshold)) + v for c, v in (penalties or {}).items()}
            label, accepted, refused = _guarded(label, conflicted, strong, la, lb, p, always, ga, gb, uid, bars)
    confidence = np.ones(n)
    best = np.full(n, -1.0)
    if accepted.any():
        both = np.concatenate([la[accepted], lb[accepted]])
        probs = np.concatenate([p[accepted], p[accepted]])
        frame = pd.DataFrame({"node": both, "p": probs}).groupby("node")["p"].max()
        best[frame.index.to_numpy()] = frame.to_numpy()
    if base_confidence is not None:
        base = pd.Series(base_confidence).reset_index(drop=True).to_numpy(dtype=float)
        kept = ~np.isnan(base)
        best[kept] = np.maximum(best[kept], base[kept])
    confidence = np.where(best >= 0, best, confidence)
    return Clustering(label, confidence, refused, accepted)


def _conflicted_components(label: np.ndarray, strong: pd.DataFrame) -> np.ndarray:
    """Component labels holding two strong id values of one column that are not near each other."""
    found: set[int] = set()
    for col in strong.columns:
        values = strong[col]
        have = values.notna().to_numpy()
        if not have.any():
            continue
        frame = pd.DataFrame({"comp": label[have], "v": values[have].astype(str).to_numpy()}).drop_duplicates()
        multi = frame[frame.duplicated("comp", keep=False)]
        for comp, vals in multi.groupby("comp")["v"]:
            vs = sorted(vals)
            if not all(_near(col, a, b) for i, a in enumerate(vs) for b in vs[i + 1:]):
                found.add(int(comp))
    return np.array(sorted(found), dtype=np.int64)


def _guarded(label, conflicted, strong, la, lb, p, always, ga, gb, uid, bars):
    """Greedy union-find inside ``conflicted`` components; returns new labels, accepted links, refused count."""
    in_conflict = np.isin(label, conflicted)
    nodes = np.flatnonzero(in_conflict)
    parent = {int(i): int(i) for i in nodes}
    ids: dict[int, dict[str, set[str]]] = {}
    for i in nodes:
        ids[int(i)] = {c: {str(strong.at[i, c])} for c in strong.columns if pd.notna(strong.at[i, c])}

    def _seen(col: str, a: int, b: int) -> bool:
        va, vb = strong.at[a, col], strong.at[b, col]
        return pd.notna(va) and pd.notna(vb) and not _near(col, str(va), str(vb))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(a: int, b: int) -> None:
        ra, rb = find(a), find(b)
        if ra == rb:
            return
        if rb < ra:
            ra, rb = rb, ra
        parent[rb] = ra
        merged = ids.pop(rb)
        for col, vals in merged.items():
            ids[ra].setdefault(col, set()).update(vals)

    # Kept clusters first, as they were formed in the run that kept them.
    for a, b in zip(ga, gb, strict=True):
        if in_conflict[a]:
            union(int(a), int(b))
    accepted = np.ones(len(p), dtype=bool)
    candidates = np.flatnonzero(in_conflict[la])
    lo = np.minimum(uid.to_numpy()[la[candidates]], uid.to_numpy()[lb[candidates]]).astype(str)
    hi = np.maximum(uid.to_numpy()[la[candidates]], uid.to_numpy()[lb[candidates]]).astype(str)
    order = candidates[np.lexsort((hi, lo, -p[candidates], ~always[candidates]))]
    refused = 0
    for k in order:
        a, b = int(la[k]), int(lb[k])
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        # A contradiction between the two records of the link was in the model's score; one
        # between other members of their groups was not, and must be paid for.
        unseen = [c for c in _conflicts(ids[ra], ids[rb]) if c in bars and not _seen(c, a, b)]
        weight = math.inf if p[k] >= 1.0 or always[k] else math.log2(p[k] / (1 - p[k]))
        if not unseen or weight >= max(bars[c] for c in unseen):
            union(a, b)
        else:
            accepted[k] = False
            refused += 1
    out = label.copy()
    base = int(label.max()) + 1 if len(label) else 0
    roots = np.array([find(int(i)) for i in nodes])
    out[nodes] = base + pd.factorize(roots)[0]
    return pd.factorize(out)[0], accepted, refused
