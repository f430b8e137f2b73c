"""Segment names from each segment's standing relative to the other segments of the run.

A name is built from facts, never from a numbered duplicate:

1. :func:`segment_stats` summarises every segment in original units: size,
   12-month revenue, median recency, 12-month orders, the share of one-time
   buyers, order value, tenure and every *available* behaviour feature
   (discounts, returns, support cost, usage, email engagement).
2. :func:`standings` places each segment on each dimension against the
   population: value (``top``/``high``/``mid``/``low``), recency
   (``recent``/``active``/``lapsing``/``lapsed``), buying pattern
   (``one-time``/``occasional``/``repeat``/``frequent``), tenure (``new``),
   basket size and behaviour traits (``high returns``, ``discount-driven``,
   ``costly to serve``, ...), strongest first.
3. :func:`name_segments` builds the name from the strongest standing
   (lapse first, then novelty, value, ...), adds the strongest behaviour
   trait, and makes names unique by adding the next trait that tells the
   segments sharing a name apart.

A name claims value ("Top value", "High value") only when revenue says so,
the segment is not lapsed, and, where mean CLV per segment is given, CLV
ranks it the same way; otherwise the claim is withheld and the rule says why.
The rule behind every name is returned beside it (``name_rule``) and the
standings as JSON (``standing``), which the playbook matches on.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

#: A segment is lapsed when its median days since the last order reach
#: max(LAPSED_MIN_DAYS, LAPSED_GAP_MULTIPLE x the typical days between purchases of repeat buyers),
#: lapsing from max(LAPSING_MIN_DAYS, LAPSING_GAP_MULTIPLE x that gap). The gap, not the population's
#: recency, sets the scale: in a shop where most customers are lapsed, their recency is no yardstick.
LAPSED_MIN_DAYS, LAPSED_GAP_MULTIPLE = 180, 3.0
LAPSING_MIN_DAYS, LAPSING_GAP_MULTIPLE = 90, 1.5
#: Recent: median recency at most max(RECENT_MAX_DAYS, half the population median).
RECENT_MAX_DAYS = 14
#: One-time: at least this share of the segment has a single order ever.
ONE_TIME_SHARE = 0.6
#: Repeat buyers: fewer than this share of one-time buyers.
REPEAT_MAX_ONE_TIME_SHARE = 0.3
#: New: median tenure at most this many days and at most half the population's.
NEW_MAX_TENURE_DAYS = 90
#: Value claims on mean 12-month revenue / population mean.
TOP_VALUE_RATIO, HIGH_VALUE_RATIO, LOW_VALUE_RATIO = 1.5, 1.25, 0.5
#: Order value / population mean for "large baskets" and "small baskets"; from DEFINING_BASKET_RATIO
#: large baskets are part of the name even when the name is unique without them.
LARGE_BASKET_RATIO, SMALL_BASKET_RATIO, DEFINING_BASKET_RATIO = 1.5, 0.6, 2.5

#: Behaviour traits: (feature, phrase, minimum ratio to the population mean, minimum segment mean).
TRAITS: tuple[tuple[str, str, float, float], ...] = (
    ("return_rate", "high returns", 2.0, 0.05),
    ("discount_share", "discount-driven", 1.5, 0.3),
    ("cost_to_serve", "costly to serve", 2.0, 0.0),
    ("support_contacts", "frequent support contacts", 2.0, 0.0),
    ("usage_sessions", "heavy product users", 1.5, 0.0),
    ("email_open_rate", "email-engaged", 1.5, 0.0),
    ("email_click_rate", "email clickers", 1.5, 0.0),
)

#: Contrasts used to tell segments with the same name apart: (column, phrase when higher, when lower).
CONTRASTS: tuple[tuple[str, str, str], ...] = (
    ("revenue", "higher spend", "lower spend"),
    ("avg_order_value", "larger baskets", "smaller baskets"),
    ("frequency", "more orders", "fewer orders"),
    ("recency_median", "less recent", "more recent"),
    ("tenure_median", "longer-standing", "newer"),
    ("one_time_share", "more one-time buyers", "fewer one-time buyers"),
)


def segment_stats(features: pd.DataFrame, labels: np.ndarray, columns: tuple[str, ...]) -> pd.DataFrame:
    """Per-segment facts in original units, with the population's in ``attrs['population']``.

    Parameters
    ----------
    features
        ``customer_features`` rows (needs ``recency_days``, ``frequency``,
        ``monetary``, ``avg_order_value``, ``tenure_days``; ``orders_lifetime``
        when present counts one-time buyers, else 12-month ``frequency`` does).
    labels
        Segment id of each row.
    columns
        Numeric features available this run: behaviour traits are read only from these.
    """
    needed = ["recency_days", "frequency", "monetary", "avg_order_value", "tenure_days"]
    missing = [c for c in needed if c not in features.columns]
    if missing:
        raise ValueError(f"customer_features lacks column(s) needed for naming: {', '.join(missing)}")
    orders = features["orders_lifetime"] if "orders_lifetime" in features.columns else features["frequency"]
    frame = pd.DataFrame({
        "revenue": features["monetary"].to_numpy(float),
        "recency_median": features["recency_days"].to_numpy(float),
        "frequency": features["frequency"].to_numpy(float),
        "one_time_share": (orders.to_numpy(float) <= 1).astype(float),
        "avg_order_value": features["avg_order_value"].to_numpy(float),
        "tenure_median": features["tenure_days"].to_numpy(float),
    })
    traits = [f for f, *_ in TRAITS if f in columns]
    for f in traits:
        frame[f] = features[f].to_numpy(float)
    medians = {"recency_median", "tenure_median"}
    agg = {c: ("median" if c in medians else "mean") for c in frame.columns}
    stats = frame.groupby(np.asarray(labels)).agg(agg)
    stats.insert(0, "customers", pd.Series(np.asarray(labels)).value_counts().reindex(stats.index).to_numpy())
    stats.index.name = "segment_id"
    stats.attrs["population"] = {c: float(frame[c].median() if c in medians else frame[c].mean())
                                 for c in frame.columns}
    stats.attrs["traits"] = traits
    # Typical days between purchases: first-to-last order span over gaps, for customers with 2+ orders.
    repeat = orders.to_numpy(float) >= 2
    span = (features["tenure_days"] - features["recency_days"]).to_numpy(float)
    gaps = span[repeat] / (orders.to_numpy(float)[repeat] - 1)
    gaps = gaps[np.isfinite(gaps) & (gaps > 0)]
    stats.attrs["purchase_gap_days"] = float(np.median(gaps)) if len(gaps) else float("nan")
    return stats


def _ratio(value: float, population: float) -> float:
    return float(value / population) if population > 0 else float("nan")


def standings(stats: pd.DataFrame, clv: pd.Series | None = None) -> dict[int, dict]:
    """Each segment's standing on value, recency, buying pattern, tenure, basket and traits.

    Parameters
    ----------
    stats
        :func:`segment_stats` output.
    clv
        Mean 365-day CLV by segment id, where the CLV stage has scored the date.

    Returns
    -------
    ``{segment id: {"value", "recency", "frequency", "tenure", "basket", "traits", "facts"}}``
    where ``traits`` is a list of ``[phrase, ratio]`` strongest first and
    ``facts`` the clauses of the naming rule.
    """
    pop = stats.attrs["population"]
    k = len(stats)
    rev_rank = stats["revenue"].rank(ascending=False, method="first").astype(int)
    if clv is not None:
        # A segment none of whose customers was scored has no CLV to speak for it: 0, as the cross-check reads it.
        clv = clv.reindex(stats.index).astype(float).fillna(0.0)
        clv_rank = clv.rank(ascending=False, method="first")
        clv_median = float(clv.median())
    gap = stats.attrs.get("purchase_gap_days", float("nan"))
    if not np.isfinite(gap):  # nobody bought twice: the population's recency is the only scale left
        gap = pop["recency_median"] / LAPSING_GAP_MULTIPLE
    lapsed_days = max(LAPSED_MIN_DAYS, LAPSED_GAP_MULTIPLE * gap)
    lapsing_days = max(LAPSING_MIN_DAYS, LAPSING_GAP_MULTIPLE * gap)
    recent_days = max(RECENT_MAX_DAYS, 0.5 * pop["recency_median"])
    out: dict[int, dict] = {}
    for seg, s in stats.iterrows():
        facts = []
        rec = s["recency_median"]
        recency = ("lapsed" if rec >= lapsed_days else "lapsing" if rec >= lapsing_days
                   else "recent" if rec <= recent_days and rec < pop["recency_median"] else "active")
        facts.append(f"median recency {rec:.0f} d (population {pop['recency_median']:.0f} d, typical gap between "
                     f"orders {gap:.0f} d: lapsed from {lapsed_days:.0f} d, lapsing from {lapsing_days:.0f} d) "
                     f"-> {recency}")
        one = s["one_time_share"]
        freq_ratio = _ratio(s["frequency"], pop["frequency"])
        frequency = ("one-time" if one >= ONE_TIME_SHARE
                     else "frequent" if one < REPEAT_MAX_ONE_TIME_SHARE and freq_ratio >= 2
                     else "repeat" if one < REPEAT_MAX_ONE_TIME_SHARE else "occasional")
        facts.append(f"one-time buyers {one:.0%}, orders in 12 m {freq_ratio:.1f}x average -> {frequency}")
        tenure = ("new" if s["tenure_median"] <= NEW_MAX_TENURE_DAYS and s["tenure_median"] <= 0.5 * pop["tenure_median"]
                  else None)
        if tenure:
            facts.append(f"median tenure {s['tenure_median']:.0f} d (population {pop['tenure_median']:.0f} d) -> new")
        rev_ratio = _ratio(s["revenue"], pop["revenue"])
        claim = ("top" if rev_rank[seg] == 1 and rev_ratio >= TOP_VALUE_RATIO
                 else "high" if rev_ratio >= HIGH_VALUE_RATIO
                 else "low" if rev_ratio <= LOW_VALUE_RATIO else "mid")
        value_fact = f"12-month revenue {rev_ratio:.2f}x average, rank {rev_rank[seg]} of {k}"
        value = claim
        if claim in ("top", "high") and recency == "lapsed":
            value = "mid"
            value_fact += f"; lapsed, so no value claim ({claim} withheld)"
        if clv is not None:
            c, cr = float(clv[seg]), int(clv_rank[seg])
            value_fact += f"; mean CLV rank {cr} of {k}"
            if value == "top" and cr > 2:
                value = "mid"
                value_fact += "; CLV disagrees, top-value claim withheld"
            elif value == "high" and c < clv_median:
                value = "mid"
                value_fact += "; CLV below the segments' median, high-value claim withheld"
            elif value == "low" and c > clv_median:
                value = "mid"
                value_fact += "; CLV above the segments' median, low-value claim withheld"
        elif value in ("top", "high"):
            value_fact += "; CLV not yet checked"
        facts.insert(0, f"{value_fact} -> value {value}")
        aov_ratio = _ratio(s["avg_order_value"], pop["avg_order_value"])
        basket = ("large baskets" if aov_ratio >= LARGE_BASKET_RATIO
                  else "small baskets" if aov_ratio <= SMALL_BASKET_RATIO else None)
        if basket:
            facts.append(f"order value {aov_ratio:.1f}x average -> {basket}")
        traits = []
        for feature, phrase, min_ratio, min_mean in TRAITS:
            if feature not in stats.attrs["traits"]:
                continue
            r = _ratio(s[feature], pop[feature])
            if np.isfinite(r) and r >= min_ratio and s[feature] >= min_mean:
                traits.append([phrase, round(r, 2)])
                facts.append(f"{feature} {r:.1f}x average -> {phrase}")
        traits.sort(key=lambda t: -t[1])
        out[int(seg)] = {"value": value, "recency": recency, "frequency": frequency, "tenure": tenure,
                         "basket": basket, "basket_ratio": round(aov_ratio, 2) if np.isfinite(aov_ratio) else None,
                         "traits": traits, "facts": facts}
    return out


def _buyers(frequency: str) -> str:
    return {"one-time": "one-time buyers", "frequent": "repeat buyers", "repeat": "repeat buyers"}.get(
        frequency, "buyers")


def head_name(st: dict) -> str:
    """The name from a segment's strongest standing, before traits and disambiguation."""
    if st["recency"] == "lapsed":
        return f"Lapsed {_buyers(st['frequency'])}"
    if st["tenure"] == "new":
        return "New customers"
    if st["value"] in ("top", "high"):
        base = "Top value" if st["value"] == "top" else "High value"
        qualifier = ("lapsing" if st["recency"] == "lapsing" else "frequent" if st["frequency"] == "frequent"
                     else "recent" if st["recency"] == "recent" else None)
        return f"{base}, {qualifier}" if qualifier else base
    if st["recency"] == "lapsing":
        return f"Lapsing {_buyers(st['frequency'])}"
    if st["frequency"] == "one-time":
        return "Recent one-time buyers" if st["recency"] == "recent" else "One-time buyers"
    if st["frequency"] == "frequent":
        return "Frequent buyers"
    if st["value"] == "low":
        return "Low spenders"
    return "Regular buyers" if st["frequency"] == "repeat" else "Occasional buyers"


def _extra_phrases(st: dict, name: str) -> list[str]:
    """Further true phrases about a segment, most distinguishing first, not already in ``name``."""
    phrases = [t[0] for t in st["traits"]]
    if st["basket"]:
        phrases.append(st["basket"])
    if st["frequency"] == "one-time":
        phrases.append("mostly one-time buyers")
    elif st["frequency"] in ("repeat", "frequent"):
        phrases.append("repeat buyers" if st["frequency"] == "repeat" else "frequent buyers")
    if st["recency"] in ("recent", "lapsing"):
        phrases.append(st["recency"])
    low = name.lower()
    return [p for p in phrases if p.lower() not in low and not (p == "repeat buyers" and "buyers" in low)]


def name_segments(stats: pd.DataFrame, clv: pd.Series | None = None) -> pd.DataFrame:
    """Unique, fact-based segment names with the rule behind each.

    Returns ``segment_name``, ``name_rule``, ``value_standing`` and
    ``standing`` (JSON of :func:`standings`, without the facts) by segment id.
    """
    st = standings(stats, clv)
    names: dict[int, str] = {}
    used: dict[int, list[str]] = {}
    for seg, s in st.items():
        name = head_name(s)
        extra = _extra_phrases(s, name)
        used[seg] = []
        if s["traits"] and s["traits"][0][0] in extra:
            # The strongest behaviour trait defines the segment as much as its value does.
            name = f"{name}, {s['traits'][0][0]}"
            used[seg].append(s["traits"][0][0])
        elif s["basket"] == "large baskets" and (s["basket_ratio"] or 0) >= DEFINING_BASKET_RATIO:
            name = f"{name}, large baskets"
            used[seg].append("large baskets")
        names[seg] = name
    notes: dict[int, list[str]] = {seg: [] for seg in st}
    # Same name: add each member's next true phrase that the others sharing the name lack.
    for _ in range(len(st)):
        groups = pd.Series(names).groupby(pd.Series(names)).groups
        clashes = [list(ix) for ix in groups.values() if len(ix) > 1]
        if not clashes:
            break
        for members in clashes:
            phrases = {m: [p for p in _extra_phrases(st[m], names[m]) if p not in used[m]] for m in members}
            for m in members:
                others = set().union(*(set(phrases[o]) for o in members if o != m))
                own = [p for p in phrases[m] if p not in others]
                if own:
                    names[m] = f"{names[m]}, {own[0]}"
                    used[m].append(own[0])
                    notes[m].append(f"'{own[0]}' added to tell it from other segments with the same name")
        groups = pd.Series(names).groupby(pd.Series(names)).groups
        for members in [list(ix) for ix in groups.values() if len(ix) > 1]:
            _contrast(stats, members, names, notes, st)
    if len(set(names.values())) < len(names):
        for seg in names:  # identical on every contrast: the size is still a fact
            if list(names.values()).count(names[seg]) > 1:
                names[seg] = f"{names[seg]} ({int(stats.loc[seg, 'customers']):,} customers)"
    rows = []
    for seg, s in st.items():
        rule = f"'{head_name(s)}' from: " + "; ".join(s["facts"] + notes[seg])
        rows.append({"segment_id": seg, "segment_name": names[seg], "name_rule": rule, "value_standing": s["value"],
                     "standing": json.dumps({k: v for k, v in s.items() if k != "facts"}, sort_keys=True)})
    return pd.DataFrame(rows).set_index("segment_id").sort_index()


def _recency_band(days: float) -> str:
    return ("last order over a year ago" if days >= 365 else "last order 6-12 months ago" if days >= 180
            else "last order 3-6 months ago" if days >= 90 else "last order within 3 months")


def _contrast(stats: pd.DataFrame, members: list[int], names: dict[int, str], notes: dict[int, list[str]],
              st: dict[int, dict] | None = None) -> None:
    """Tell apart segments still sharing a name by the dimension on which they differ most.

    Segments that share a lapsed or lapsing standing are told apart by how long ago they last
    ordered first, where that differs by a band: it is what defines them.
    """
    best, spread = None, 0.0
    for col, _, _ in CONTRASTS:
        values = stats.loc[members, col].astype(float)
        lo, hi = values.min(), values.max()
        gap = (hi - lo) / max(abs(hi), abs(lo), 1e-9)
        if gap > spread and not any(p in names[m] for m in members for p in _phrases_of(col)):
            best, spread = col, gap
    recency = stats.loc[members, "recency_median"].astype(float)
    bands = {m: _recency_band(recency[m]) for m in members}
    away = st is not None and all(st[m]["recency"] in ("lapsed", "lapsing") for m in members)
    if (away or best == "recency_median") and len(set(bands.values())) > 1:
        for m in (recency.idxmax(), recency.idxmin()):
            names[m] = f"{names[m]}, {bands[m]}"
            notes[m].append(f"'{bands[m]}' (median recency {recency[m]:,.0f} d) added to tell it from other "
                            "segments with the same name")
        return
    if best is None:
        return
    _, higher, lower = next(c for c in CONTRASTS if c[0] == best)
    values = stats.loc[members, best].astype(float)
    top, bottom = values.idxmax(), values.idxmin()
    for m, phrase in ((top, higher), (bottom, lower)):
        names[m] = f"{names[m]}, {phrase}"
        notes[m].append(f"'{phrase}' ({best} {values[m]:,.2f} against {values.drop(m).round(2).tolist()} "
                        "in segments with the same name)")


def _phrases_of(col: str) -> tuple[str, str]:
    _, higher, lower = next(c for c in CONTRASTS if c[0] == col)
    return higher, lower
