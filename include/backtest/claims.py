"""Each claim made on the backtest date against what its customers did next: held, failed or not checked.

Claims and their bars (a claim holds when its customers did next what the words say):

- **value** ("top value", "high value", per segment): the segment's revenue per customer in the
  horizon ranks in the top third of the segments (:func:`include.segmentation.naming.top_third_rank`),
  the rule the names are given by; bar: the revenue per customer of the segment at that rank.
- **lifecycle**:
  "lapsed" (per segment called lapsed, and run-wide for every customer whose own state was lapsed):
  at most :data:`~include.segmentation.naming.LAPSED_MAX_RECENT_SHARE` of them ordered in the
  horizon, the share a segment may have ordered recently and still be called lapsed;
  "lapsing" (per segment): fewer of them came back than of the customers whose own state was active;
  "new" (per segment): more of them came back than of the customers whose own state was lapsed.
- **action** ("account team": revenue per customer in the horizon at least the value bar;
  "deprioritise", "exclude" and both together: at most :data:`DEPRIORITISE_MAX_REVENUE_SHARE` of
  the horizon's revenue, the issue's claims check).

A claim not made on the backtest date gets a 'not checked' row saying so, and so does every claim
when the data do not reach back far enough (:func:`not_checked`). Revenue is net (paid minus
returned); "came back": ordered at least once in the horizon; "repeat": ordered on two or more days.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from include.segmentation.naming import LAPSED_MAX_RECENT_SHARE, top_third_rank

#: Customers told "deprioritise" or "exclude" may hold at most this share of the next horizon's revenue
#: (issue #25's claims check: "deprioritised segments hold <= 10% of revenue"): beyond it, deprioritising
#: them gives up more than a tenth of what the customers brought.
DEPRIORITISE_MAX_REVENUE_SHARE = 0.10
#: Claims by kind (``claims_backtest.claim``), in the order rows are written.
CLAIMS: dict[str, tuple[str, ...]] = {
    "value": ("top value", "high value"),
    "lifecycle": ("lapsed", "lapsing", "new"),
    "action": ("account team", "deprioritise", "exclude", "deprioritise or exclude"),
}
COLUMNS = ("as_of_date", "backtest_date", "horizon_days", "claim_kind", "claim", "segment_name", "customers",
           "metric", "realised", "bar", "verdict", "detail", "customer_share", "revenue_per_customer",
           "revenue_share", "came_back_share", "repeat_share")
REVENUE_PER_CUSTOMER = "revenue per customer in the next {h} days"
CAME_BACK = "share who ordered in the next {h} days"
REVENUE_SHARE = "share of the next {h} days' revenue"


def _money(x: float) -> str:
    return f"{x:,.2f}"


def not_checked(as_of_date: dt.date, backtest_date: dt.date, horizon_days: int, why: str) -> pd.DataFrame:
    """One 'not checked' row per claim, each saying ``why``."""
    rows = [{"claim_kind": kind, "claim": claim, "verdict": "not checked", "detail": why}
            for kind, claims in CLAIMS.items() for claim in claims]
    return _finish(pd.DataFrame(rows), as_of_date, backtest_date, horizon_days)


def _finish(frame: pd.DataFrame, as_of_date: dt.date, backtest_date: dt.date, horizon_days: int) -> pd.DataFrame:
    frame = frame.copy()
    frame["as_of_date"], frame["backtest_date"], frame["horizon_days"] = as_of_date, backtest_date, int(horizon_days)
    for col in COLUMNS:
        if col not in frame.columns:
            frame[col] = None
    frame["customers"] = frame["customers"].astype("Int64")
    for col in ("realised", "bar", "customer_share", "revenue_per_customer", "revenue_share", "came_back_share",
                "repeat_share"):
        frame[col] = frame[col].astype(float)
    return frame[list(COLUMNS)]


def evaluate_claims(customers: pd.DataFrame, segments: pd.DataFrame, as_of_date: dt.date, backtest_date: dt.date,
                    horizon_days: int) -> pd.DataFrame:
    """The claims of the backtest date, each against what its customers did in the horizon.

    Parameters
    ----------
    customers
        One row per customer known on the backtest date: ``segment`` (label group), ``lifecycle_state``,
        ``action_claim`` (the tier their action claimed, NULL for none), ``next_revenue`` and
        ``next_purchase_days`` in the horizon.
    segments
        One row per label group (index): ``segment_name`` and ``standing`` (parsed dict) on the backtest date.
    """
    h = int(horizon_days)
    n_all = len(customers)
    total = float(customers["next_revenue"].sum())
    came = customers["next_purchase_days"].to_numpy(float) >= 1
    repeat = customers["next_purchase_days"].to_numpy(float) >= 2
    frame = customers.assign(came=came, repeat=repeat)
    by_seg = frame.groupby("segment").agg(customers=("came", "size"), revenue=("next_revenue", "sum"),
                                          came=("came", "mean"), repeat=("repeat", "mean"))
    by_seg["per_customer"] = by_seg["revenue"] / by_seg["customers"]
    k = len(by_seg)
    third = top_third_rank(k)
    ranked = by_seg["per_customer"].sort_values(ascending=False)
    value_bar = float(ranked.iloc[min(third, k) - 1]) if k else float("nan")
    state = frame["lifecycle_state"].astype(str)

    def facts(mask: np.ndarray) -> dict:
        sub = frame[mask]
        n = len(sub)
        revenue = float(sub["next_revenue"].sum())
        return {"customers": n, "customer_share": n / n_all if n_all else np.nan,
                "revenue_per_customer": revenue / n if n else np.nan,
                "revenue_share": revenue / total if total > 0 else np.nan,
                "came_back_share": float(sub["came"].mean()) if n else np.nan,
                "repeat_share": float(sub["repeat"].mean()) if n else np.nan}

    rows: list[dict] = []
    made: set[str] = set()
    for seg, row in segments.iterrows():
        standing, name = row["standing"], row["segment_name"]
        mask = (frame["segment"] == seg).to_numpy()
        f = facts(mask)
        if not f["customers"]:
            continue
        value = {"top": "top value", "high": "high value"}.get(standing.get("value"))
        if value:
            made.add(value)
            rank = int(ranked.index.get_loc(seg)) + 1
            held = rank <= third  # by rank: the bar is a segment's own figure, summed in another order
            rows.append({**f, "claim_kind": "value", "claim": value, "segment_name": name,
                         "metric": REVENUE_PER_CUSTOMER.format(h=h), "realised": f["revenue_per_customer"],
                         "bar": value_bar, "verdict": "held" if held else "failed",
                         "detail": f"Customers of '{name}' ({f['customers']:,}) spent {_money(f['revenue_per_customer'])} "
                                   f"each in the {h} days after {backtest_date}: rank {rank} of {k} segments, where "
                                   f"'{value}' needs the top third (rank {third} or better, {_money(value_bar)})."})
        lifecycle = {"lapsed": "lapsed", "lapsing": "lapsing"}.get(standing.get("recency"))
        if standing.get("tenure") == "new":
            lifecycle = lifecycle or "new"
        if lifecycle:
            made.add(lifecycle)
            rows.append({**f, "claim_kind": "lifecycle", "claim": lifecycle, "segment_name": name,
                         **_lifecycle_verdict(lifecycle, f, frame, state, name, h, backtest_date)})
    lapsed = (state == "lapsed").to_numpy()
    if lapsed.any():
        made.add("lapsed")
        f = facts(lapsed)
        rows.append({**f, "claim_kind": "lifecycle", "claim": "lapsed", "segment_name": None,
                     **_lifecycle_verdict("lapsed", f, frame, state, "customers whose own state was lapsed", h,
                                          backtest_date)})
    claim = frame["action_claim"].astype(object).where(frame["action_claim"].notna(), None)
    for tier in ("account team", "deprioritise", "exclude", "deprioritise or exclude"):
        tiers = ("deprioritise", "exclude") if tier == "deprioritise or exclude" else (tier,)
        mask = claim.isin(tiers).to_numpy()
        if not mask.any():
            continue
        made.add(tier)
        f = facts(mask)
        told = f"Customers told '{tier}'" if len(tiers) == 1 else "Customers told 'deprioritise' or 'exclude'"
        if tier == "account team":
            held = f["revenue_per_customer"] >= value_bar * (1 - 1e-9)
            rows.append({**f, "claim_kind": "action", "claim": tier, "segment_name": tier,
                         "metric": REVENUE_PER_CUSTOMER.format(h=h), "realised": f["revenue_per_customer"],
                         "bar": value_bar, "verdict": "held" if held else "failed",
                         "detail": f"{told} ({f['customers']:,}) spent {_money(f['revenue_per_customer'])} each in the "
                                   f"{h} days after {backtest_date}; an account team needs the top third of segments' "
                                   f"({_money(value_bar)})."})
            continue
        share = f["revenue_share"]
        if not np.isfinite(share):
            rows.append({**f, "claim_kind": "action", "claim": tier, "segment_name": tier,
                         "metric": REVENUE_SHARE.format(h=h), "verdict": "not checked",
                         "detail": f"Nobody bought anything in the {h} days after {backtest_date}: no revenue to share."})
            continue
        held = share <= DEPRIORITISE_MAX_REVENUE_SHARE
        rows.append({**f, "claim_kind": "action", "claim": tier, "segment_name": tier if len(tiers) == 1 else None,
                     "metric": REVENUE_SHARE.format(h=h), "realised": share, "bar": DEPRIORITISE_MAX_REVENUE_SHARE,
                     "verdict": "held" if held else "failed",
                     "detail": f"{told} on {backtest_date} ({f['customers']:,}, {f['customer_share']:.0%} of customers) "
                               f"brought {share:.1%} of the revenue of the next {h} days "
                               f"({f['came_back_share']:.0%} of them ordered again); at most "
                               f"{DEPRIORITISE_MAX_REVENUE_SHARE:.0%} is allowed."})
    for kind, claims in CLAIMS.items():
        for c in claims:
            if c not in made:
                rows.append({"claim_kind": kind, "claim": c, "verdict": "not checked",
                             "detail": f"Nothing was called or told '{c}' on {backtest_date}."})
    return _finish(pd.DataFrame(rows), as_of_date, backtest_date, h)


def _lifecycle_verdict(claim: str, f: dict, frame: pd.DataFrame, state: pd.Series, name: str, h: int,
                       backtest_date: dt.date) -> dict:
    metric = CAME_BACK.format(h=h)
    came = f["came_back_share"]
    who = name if name.startswith("customers") else f"Customers of '{name}'"
    if claim == "lapsed":
        held = came <= LAPSED_MAX_RECENT_SHARE
        return {"metric": metric, "realised": came, "bar": LAPSED_MAX_RECENT_SHARE, "verdict": "held" if held else "failed",
                "detail": f"{who} ({f['customers']:,}), called lapsed on {backtest_date}: {came:.0%} ordered in the next "
                          f"{h} days, bringing {f['revenue_share']:.1%} of its revenue; lapsed allows at most "
                          f"{LAPSED_MAX_RECENT_SHARE:.0%}."}
    other = "active" if claim == "lapsing" else "lapsed"
    base = frame.loc[(state == other).to_numpy(), "came"]
    if not len(base):
        return {"metric": metric, "realised": came, "verdict": "not checked",
                "detail": f"{who}: no customer was {other} on {backtest_date} to compare with."}
    bar = float(base.mean())
    held = came < bar if claim == "lapsing" else came > bar
    relation = "fewer" if claim == "lapsing" else "more"
    return {"metric": metric, "realised": came, "bar": bar, "verdict": "held" if held else "failed",
            "detail": f"{who} ({f['customers']:,}), called {claim} on {backtest_date}: {came:.0%} ordered in the next "
                      f"{h} days against {bar:.0%} of the customers who were {other}; '{claim}' needs {relation}."}
