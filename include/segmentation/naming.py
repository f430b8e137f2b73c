"""Segment names from what the segment's members are and did, with the rule behind every word.

A name is built from facts, never from a numbered duplicate, and every word in it is a claim the
run can check against what the customers did next (:mod:`include.backtest`):

1. :func:`segment_stats` summarises every segment in original units: size, revenue per customer
   (12 months), lifetime orders, order value, tenure, the share of one-time buyers, and the share
   of members in each **lifecycle state** (``customer_features.lifecycle_state``: judged per
   customer against their own buying cadence) and of those who ordered in the last 90 days, plus
   every *available* behaviour feature (discounts, returns, support cost, usage, email engagement).
2. :func:`standings` places each segment on each dimension:

   - lifecycle: ``lapsed`` only when at least :data:`LIFECYCLE_MAJORITY` of the members are
     lapsed *and* at most :data:`LAPSED_MAX_RECENT_SHARE` ordered in the last
     :data:`RECENT_ORDER_DAYS` days; ``lapsing`` / ``new`` when that majority is lapsing / new;
     ``active`` when that majority still buys (active or new); else ``mixed``. The state is never
     averaged away: a segment of half active, half lapsed customers is neither (its median
     recency once named a segment holding every active customer "Lapsed");
   - value: ``top`` / ``high`` only for a segment in the top third of the segments by revenue
     per customer (:func:`top_third_rank`) with enough of a lead over the average, never for a
     lapsed one, and only where CLV (a witness, when the date has it) does not disagree;
     ``low`` / ``mid`` otherwise;
   - buying pattern (``one-time`` / ``repeat`` / ``frequent`` / ``occasional``: one-time buyers
     are customers who never bought on a second day), tenure, basket size and behaviour traits.

3. :func:`name_segments` builds the name from the strongest standing (lapse first, then novelty,
   value, ...), adds the strongest behaviour trait, and makes names unique by adding the next trait
   that tells the segments sharing a name apart, then a contrast on lifetime facts
   (:data:`CONTRASTS`) where the segments differ materially (:data:`CONTRAST_MIN_GAP`). Segments
   that nothing named tells apart are reported in ``attrs["indistinguishable"]``: the labeller
   (:mod:`include.labels`) publishes them as one segment, since two names that differ only by a
   size say nothing true about the difference.

Mixed segments get no lifecycle word rather than being split: the state is a per-customer fact
published beside the segment (``customer_features.lifecycle_state``) and the playbook's actions are
chosen per customer from the segment's standing *and* the customer's own state
(:mod:`include.economics.build`), so a segment of regulars tells its lapsed members apart without a
second segmentation whose ids would move every week as customers change state.

Claims a backtest found false (``withheld``) and claims a witness contradicts (CLV's ranking,
P(alive)) are not made: the weaker true word is used and the rule says why. The rule behind every
name is returned beside it (``name_rule``) and the standings as JSON (``standing``), which the
playbook matches on.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

#: A segment carries a lifecycle word (lapsed, lapsing, new) only when at least this share of its members
#: are in that state: three in four, so the word is true of the typical member and of most of the segment.
LIFECYCLE_MAJORITY = 0.75
#: ... and, for "lapsed", at most this share ordered in the last RECENT_ORDER_DAYS: a segment where one
#: customer in four still buys every quarter is not lapsed whatever their cadences say.
LAPSED_MAX_RECENT_SHARE = 0.25
#: The window of "ordered recently" (a quarter, as the claims check of issue #25 reads it).
RECENT_ORDER_DAYS = 90
#: A segment is called lapsed only where at most this share of its members have P(alive) >= 0.5 by the
#: CLV model (when the date has CLV): the mirror of LAPSED_MAX_RECENT_SHARE from the model's side.
LAPSED_MAX_ALIVE_SHARE = 0.25
#: One-time: at least this share of the segment never bought on a second day; repeat: at most 1 - it.
ONE_TIME_SHARE = 0.75
#: Frequent: repeat buyers whose median orders per year while active is at least this multiple of the
#: repeat buyers' median in the whole population.
FREQUENT_RATE_RATIO = 2.0
#: Value: "top" needs rank 1 and revenue per customer at least TOP_VALUE_RATIO x the population's, "high"
#: a rank in the top third (:func:`top_third_rank`) and HIGH_VALUE_RATIO x; "low" at most LOW_VALUE_RATIO x.
TOP_VALUE_RATIO, HIGH_VALUE_RATIO, LOW_VALUE_RATIO = 1.5, 1.25, 0.5
#: Order value / population mean for "large baskets" and "small baskets"; from DEFINING_BASKET_RATIO
#: large baskets are part of the name even when the name is unique without them.
LARGE_BASKET_RATIO, SMALL_BASKET_RATIO, DEFINING_BASKET_RATIO = 1.5, 0.6, 2.5
#: A contrast ("more orders", "newer", ...) is said only where the segments sharing a name differ by at
#: least this share of the larger value: below it the order flips from week to week with noise, and a
#: suffix whose meaning flips (an earlier date called the same ids "newer" and "longer-standing") is false
#: half the time.
CONTRAST_MIN_GAP = 0.2

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

#: Contrasts used to tell segments with the same name apart, all on lifetime facts that do not change
#: meaning between runs: (column, phrase when higher, when lower). Spend and orders are lifetime net revenue
#: and orders per customer (12-month figures of lapsed customers are mostly 0, and their order flips with it).
CONTRASTS: tuple[tuple[str, str, str], ...] = (
    ("spend_lifetime", "higher spend", "lower spend"),
    ("avg_order_value", "larger baskets", "smaller baskets"),
    ("orders_lifetime", "more orders", "fewer orders"),
    ("buying_share", "more still buying", "fewer still buying"),
    ("tenure_median", "longer-standing", "newer"),
    ("one_time_share", "more one-time buyers", "fewer one-time buyers"),
)

#: Claims a name or an action makes, by kind (the vocabulary of ``claims_backtest.claim``).
VALUE_CLAIMS: tuple[str, ...] = ("top value", "high value")
LIFECYCLE_CLAIMS: tuple[str, ...] = ("lapsed", "lapsing", "new")
#: The lifecycle states of ``customer_features.lifecycle_state``.
STATES: tuple[str, ...] = ("new", "active", "lapsing", "lapsed")


def top_third_rank(k: int) -> int:
    """The lowest rank (1 = highest revenue per customer) inside the top third of ``k`` segments (at least 1)."""
    return max(1, k // 3)


def segment_stats(features: pd.DataFrame, labels: np.ndarray, columns: tuple[str, ...]) -> pd.DataFrame:
    """Per-segment facts in original units, with the population's in ``attrs['population']``.

    Parameters
    ----------
    features
        ``customer_features`` rows (needs ``recency_days``, ``frequency``, ``monetary``,
        ``avg_order_value``, ``tenure_days``; ``lifecycle_state`` and ``repeat_buyer`` when present,
        else the states are unknown and one-time buyers are counted from ``orders_lifetime``).
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
    if "repeat_buyer" in features.columns:
        one_time = features["repeat_buyer"].to_numpy(float) == 0
    else:
        one_time = orders.to_numpy(float) <= 1
    recency = features["recency_days"].to_numpy(float)
    lifetime = features["revenue_lifetime"] if "revenue_lifetime" in features.columns else features["monetary"]
    frame = pd.DataFrame({
        "revenue": features["monetary"].to_numpy(float),
        "spend_lifetime": lifetime.to_numpy(float),
        "recency_median": recency,
        "frequency": features["frequency"].to_numpy(float),
        "orders_lifetime": orders.to_numpy(float),
        "one_time_share": one_time.astype(float),
        "avg_order_value": features["avg_order_value"].to_numpy(float),
        "tenure_median": features["tenure_days"].to_numpy(float),
        "recent_order_share": (recency <= RECENT_ORDER_DAYS).astype(float),
    })
    has_state = "lifecycle_state" in features.columns
    state = features["lifecycle_state"].astype(str).to_numpy() if has_state else None
    for s in STATES:
        frame[f"share_{s}"] = (state == s).astype(float) if has_state else np.nan
    frame["buying_share"] = frame["share_new"] + frame["share_active"]
    # Orders per year while active, repeat buyers only (a single purchase has no rate).
    span_years = np.maximum(features["tenure_days"].to_numpy(float) - recency, 0.0) / 365.25
    rate = orders.to_numpy(float) / (span_years + 0.25)
    frame["repeat_rate"] = np.where(one_time, np.nan, rate)
    traits = [f for f, *_ in TRAITS if f in columns]
    for f in traits:
        frame[f] = features[f].to_numpy(float)
    medians = {"recency_median", "tenure_median", "repeat_rate"}
    agg = {c: ("median" if c in medians else "mean") for c in frame.columns}
    stats = frame.groupby(np.asarray(labels)).agg(agg)
    stats.insert(0, "customers", pd.Series(np.asarray(labels)).value_counts().reindex(stats.index).to_numpy())
    stats.index.name = "segment_id"
    stats.attrs["population"] = {c: float(frame[c].median() if c in medians else frame[c].mean())
                                 for c in frame.columns}
    stats.attrs["traits"] = traits
    stats.attrs["has_state"] = has_state
    return stats


def _ratio(value: float, population: float) -> float:
    return float(value / population) if population > 0 else float("nan")


def _lifecycle(s: pd.Series, has_state: bool) -> tuple[str, str]:
    """The segment's lifecycle standing and the rule's clause for it."""
    if not has_state:
        return "mixed", "lifecycle states not recorded for these customers -> no lifecycle word"
    shares = {st: float(s[f"share_{st}"]) for st in STATES}
    recent = float(s["recent_order_share"])
    text = ", ".join(f"{v:.0%} {k}" for k, v in shares.items()) + f"; {recent:.0%} ordered in the last " \
        f"{RECENT_ORDER_DAYS} d"
    if shares["lapsed"] >= LIFECYCLE_MAJORITY and recent <= LAPSED_MAX_RECENT_SHARE:
        standing = "lapsed"
    elif shares["lapsing"] >= LIFECYCLE_MAJORITY:
        standing = "lapsing"
    elif shares["new"] + shares["active"] >= LIFECYCLE_MAJORITY:
        standing = "active"
    else:
        standing = "mixed"
    if shares["lapsed"] >= LIFECYCLE_MAJORITY and standing != "lapsed":
        text += f" (more than {LAPSED_MAX_RECENT_SHARE:.0%} ordered recently: not called lapsed)"
    return standing, f"members {text} -> {standing}"


def standings(stats: pd.DataFrame, clv: pd.Series | None = None, *, alive: pd.Series | None = None,
              withheld: dict[str, str] | None = None, clv_note: str | None = None) -> dict[int, dict]:
    """Each segment's standing on lifecycle, value, buying pattern, tenure, basket and traits.

    Parameters
    ----------
    stats
        :func:`segment_stats` output.
    clv
        Mean 365-day CLV by segment id, where the CLV stage has scored the date (a witness: it can
        withhold a value claim, never make one).
    alive
        Share of each segment's members with P(alive) >= 0.5 (a witness against "lapsed").
    withheld
        ``{claim: reason}`` for claims a backtest found false (:data:`VALUE_CLAIMS`,
        :data:`LIFECYCLE_CLAIMS`): they are not made, and the reason is added to the rule.
    clv_note
        Why CLV is not available, when it is not (said in the rule instead of "not yet checked").

    Returns
    -------
    ``{segment id: {"value", "recency", "frequency", "tenure", "basket", "traits", "lifecycle",
    "ordered_recently", "facts", "withheld"}}`` where ``recency`` is the lifecycle standing
    (``active`` / ``lapsing`` / ``lapsed`` / ``mixed``), ``lifecycle`` the member shares per state,
    ``traits`` a list of ``[phrase, ratio]`` strongest first, ``facts`` the clauses of the naming
    rule and ``withheld`` the claims not made, with why.
    """
    withheld = withheld or {}
    pop = stats.attrs["population"]
    has_state = bool(stats.attrs.get("has_state", True))
    k = len(stats)
    rev_rank = stats["revenue"].rank(ascending=False, method="first").astype(int)
    third = top_third_rank(k)
    if clv is not None:
        # A segment none of whose customers was scored has no CLV to speak for it: 0, as the cross-check reads it.
        clv = clv.reindex(stats.index).astype(float).fillna(0.0)
        clv_rank = clv.rank(ascending=False, method="first")
        clv_median = float(clv.median())
    out: dict[int, dict] = {}
    for seg, s in stats.iterrows():
        facts, not_made = [], {}
        recency, clause = _lifecycle(s, has_state)
        facts.append(clause)
        if recency == "lapsed" and alive is not None and pd.notna(alive.get(seg)) \
                and float(alive[seg]) > LAPSED_MAX_ALIVE_SHARE:
            not_made["lapsed"] = (f"CLV gives {float(alive[seg]):.0%} of members P(alive) >= 0.5 "
                                  f"(lapsed allows {LAPSED_MAX_ALIVE_SHARE:.0%})")
            recency = "mixed"
        claim = {"lapsed": "lapsed", "lapsing": "lapsing"}.get(recency)
        if claim in withheld:
            not_made[claim] = withheld[claim]
            recency = "mixed"
        one = float(s["one_time_share"])
        rate_ratio = _ratio(s["repeat_rate"], pop["repeat_rate"]) if pd.notna(s["repeat_rate"]) else float("nan")
        frequency = ("one-time" if one >= ONE_TIME_SHARE
                     else "frequent" if one <= 1 - ONE_TIME_SHARE and rate_ratio >= FREQUENT_RATE_RATIO
                     else "repeat" if one <= 1 - ONE_TIME_SHARE else "occasional")
        facts.append(f"one-time buyers {one:.0%}, repeat buyers' orders per year while active "
                     f"{rate_ratio:.1f}x the population's -> {frequency}")
        new_share = float(s["share_new"]) if has_state else float("nan")
        tenure = "new" if has_state and new_share >= LIFECYCLE_MAJORITY else None
        if tenure and "new" in withheld:
            not_made["new"] = withheld["new"]
            tenure = None
        elif tenure:
            facts.append(f"{new_share:.0%} of members are new (one purchase, within their first cadences) -> new")
        rev_ratio = _ratio(s["revenue"], pop["revenue"])
        rank = int(rev_rank[seg])
        claim = ("top" if rank == 1 and rank <= third and rev_ratio >= TOP_VALUE_RATIO
                 else "high" if rank <= third and rev_ratio >= HIGH_VALUE_RATIO
                 else "low" if rev_ratio <= LOW_VALUE_RATIO else "mid")
        value_fact = (f"12-month revenue per customer {rev_ratio:.2f}x average, rank {rank} of {k} "
                      f"(top third: rank <= {third})")
        value = claim
        if claim in ("top", "high") and recency == "lapsed":
            value = "mid"
            value_fact += f"; lapsed, so no value claim ({claim} withheld)"
        if value in ("top", "high") and clv is not None:
            c, cr = float(clv[seg]), int(clv_rank[seg])
            value_fact += f"; mean CLV rank {cr} of {k}"
            if value == "top" and cr > 2:
                value = "mid"
                value_fact += "; CLV disagrees, top-value claim withheld"
                not_made["top value"] = f"CLV disagrees: mean CLV ranks it {cr} of {k}"
            elif value == "high" and c < clv_median:
                value = "mid"
                value_fact += "; CLV below the segments' median, high-value claim withheld"
                not_made["high value"] = f"CLV disagrees: mean CLV {c:,.2f} below the segments' median {clv_median:,.2f}"
        elif value == "low" and clv is not None and float(clv[seg]) > clv_median:
            value = "mid"
            value_fact += "; CLV above the segments' median, low-value claim withheld"
        elif value in ("top", "high"):
            value_fact += f"; CLV not available ({clv_note})" if clv_note else "; CLV not yet checked"
        if value == "top" and "top value" in withheld:
            not_made["top value"] = withheld["top value"]
            value = "high" if rev_ratio >= HIGH_VALUE_RATIO and "high value" not in withheld else "mid"
        if value == "high" and "high value" in withheld:
            not_made["high value"] = withheld["high value"]
            value = "mid"
        for what, why in not_made.items():
            value_fact += f"; '{what}' {why}" if what in VALUE_CLAIMS and not why.startswith("CLV") else ""
        facts.insert(0, f"{value_fact} -> value {value}")
        for what, why in not_made.items():
            if what not in VALUE_CLAIMS:
                facts.append(f"'{what}' not said: {why}")
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
        lifecycle = ({st: round(float(s[f"share_{st}"]), 4) for st in STATES} if has_state else None)
        out[int(seg)] = {"value": value, "recency": recency, "frequency": frequency, "tenure": tenure,
                         "basket": basket, "basket_ratio": round(aov_ratio, 2) if np.isfinite(aov_ratio) else None,
                         "traits": traits, "lifecycle": lifecycle,
                         "ordered_recently": round(float(s["recent_order_share"]), 4),
                         "revenue_rank": rank, "segments": k, "facts": facts, "withheld": not_made}
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
                     else "active" if st["recency"] == "active" else None)
        return f"{base}, {qualifier}" if qualifier else base
    if st["recency"] == "lapsing":
        return f"Lapsing {_buyers(st['frequency'])}"
    if st["frequency"] == "one-time":
        return "Active one-time buyers" if st["recency"] == "active" else "One-time buyers"
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
    if st["recency"] in ("active", "lapsing"):
        phrases.append("mostly active" if st["recency"] == "active" else "lapsing")
    low = name.lower()
    return [p for p in phrases if p.lower() not in low and not (p == "repeat buyers" and "buyers" in low)
            and not (p == "mostly active" and "active" in low)]


def name_segments(stats: pd.DataFrame, clv: pd.Series | None = None, *, alive: pd.Series | None = None,
                  withheld: dict[str, str] | None = None, clv_note: str | None = None) -> pd.DataFrame:
    """Unique, fact-based segment names with the rule behind each.

    Returns ``segment_name``, ``name_rule``, ``value_standing`` and ``standing`` (JSON of
    :func:`standings`, without the facts) by segment id. Segments still sharing a name after
    traits and contrasts are listed in ``attrs["indistinguishable"]`` (lists of ids) and, for a
    caller that does not merge them, told apart by their size.
    """
    st = standings(stats, clv, alive=alive, withheld=withheld, clv_note=clv_note)
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
            _contrast(stats, members, names, notes)
    groups = pd.Series(names).groupby(pd.Series(names)).groups
    indistinguishable = [sorted(int(i) for i in ix) for ix in groups.values() if len(ix) > 1]
    for members in indistinguishable:  # nothing named tells them apart: the size is still a fact
        for seg in members:
            names[seg] = f"{names[seg]} ({int(stats.loc[seg, 'customers']):,} customers)"
            notes[seg].append("no named fact tells it from the other segments of its name")
    rows = []
    for seg, s in st.items():
        rule = f"'{head_name(s)}' from: " + "; ".join(s["facts"] + notes[seg])
        rows.append({"segment_id": seg, "segment_name": names[seg], "name_rule": rule, "value_standing": s["value"],
                     "standing": json.dumps({k: v for k, v in s.items() if k != "facts"}, sort_keys=True)})
    out = pd.DataFrame(rows).set_index("segment_id").sort_index()
    out.attrs["indistinguishable"] = indistinguishable
    return out


def _contrast(stats: pd.DataFrame, members: list[int], names: dict[int, str], notes: dict[int, list[str]]) -> None:
    """Tell apart segments still sharing a name by the lifetime fact on which they differ most.

    Only a material difference (:data:`CONTRAST_MIN_GAP`) is said; the phrase goes to the highest
    and the lowest of the segments sharing the name.
    """
    best, spread = None, CONTRAST_MIN_GAP
    for col, _, _ in CONTRASTS:
        if col not in stats.columns:
            continue
        values = stats.loc[members, col].astype(float)
        if values.isna().any():
            continue
        lo, hi = values.min(), values.max()
        gap = (hi - lo) / max(abs(hi), abs(lo), 1e-9)
        if gap >= spread and not any(p in names[m] for m in members for p in _phrases_of(col)):
            best, spread = col, gap
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
