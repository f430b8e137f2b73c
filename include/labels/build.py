"""Labels of one date: names with their rules, merged look-alikes, withheld claims, stable ids and the gate.

:func:`name_fit` is pure (a fit's customers in, label groups and names out) and is what the
backtest runs on an earlier date too, so the claims it checks are made by the same code.
:func:`label_date` reads a date's fit, CLV witness and backtest verdicts from the warehouse and
writes ``segment_labels`` and ``label_runs`` (SQL: ``include/sql/labels.sql``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from include.runtime.warehouse import Warehouse, named_sql
from include.segmentation.naming import LIFECYCLE_CLAIMS, VALUE_CLAIMS, name_segments, segment_stats

log = logging.getLogger(__name__)

SQL = named_sql("labels.sql")

#: P(alive) from which the CLV model counts a customer as still buying (the report's "alive" share uses it too).
ALIVE_P = 0.5
#: Columns of ``segment_labels``, in table order.
LABEL_COLUMNS = ("as_of_date", "fit_segment", "label_group", "segment_id", "segment_name", "name_rule",
                 "value_standing", "standing", "backtest_verdict", "customers", "customer_share",
                 "revenue_per_customer", "match_distance", "model_run_id")
#: Backtest claims about actions (``claims_backtest.claim``): a failed one is withheld from the playbook.
ACTION_CLAIM_ROWS = {"account team": ("account team",), "deprioritise": ("deprioritise",),
                     "exclude": ("exclude",), "deprioritise or exclude": ("deprioritise", "exclude")}


@dataclass
class LabelSet:
    """A fit's labels: each customer's label group and each group's name, rule and standing.

    ``groups`` are numbered 1.. by revenue per customer (1 = highest); ``group_of`` maps each
    fit segment to its group (several fit segments share a group when nothing named told them
    apart: ``merged`` says which).
    """

    labels: np.ndarray
    group_of: dict[int, int]
    names: pd.DataFrame  # by group: segment_name, name_rule, value_standing, standing, customers, revenue_per_customer
    merged: list[str] = field(default_factory=list)

    def standings(self) -> dict[int, dict]:
        return {int(g): json.loads(s) for g, s in self.names["standing"].items()}


def _witness(values: np.ndarray | None, groups: np.ndarray, fn) -> pd.Series | None:
    if values is None:
        return None
    frame = pd.DataFrame({"g": groups, "v": np.asarray(values, dtype=float)}).dropna()
    if frame.empty:
        return None
    return frame.groupby("g")["v"].agg(fn)


def name_fit(features: pd.DataFrame, fit_labels: np.ndarray, columns: tuple[str, ...], *,
             clv: np.ndarray | None = None, p_alive: np.ndarray | None = None,
             withheld: dict[str, str] | None = None, clv_note: str | None = None) -> LabelSet:
    """Name a fit's segments; publish segments that nothing named tells apart as one label.

    Parameters
    ----------
    features
        The fit's ``customer_features`` rows.
    fit_labels
        Fit-local segment of each row.
    columns
        Numeric features available this run (behaviour traits are read only from these).
    clv, p_alive
        Each customer's 365-day CLV and P(alive) (NaN where not scored), when the date has CLV:
        witnesses against value and lapsed claims (:func:`include.segmentation.naming.standings`).
    withheld
        ``{claim: reason}``: claims the backtest found false, not made.
    clv_note
        Why CLV is not available, said in the rules.

    Why merge rather than number: two segments whose names differ only by their sizes say nothing
    true about how they differ (a cohort shop's two halves split by first-purchase month once got
    "more orders" and "fewer orders", both false). Their union is what the names can describe, so
    it is published as one label and the merge is recorded (``merged``); the gate says so too.
    """
    fit_labels = np.asarray(fit_labels).astype(np.int64)
    group = fit_labels.copy()
    alive = None
    if p_alive is not None:  # 1 where the model counts the customer alive, 0 where not, NaN where unscored
        scores = np.asarray(p_alive, dtype=float)
        alive = np.where(np.isnan(scores), np.nan, (scores >= ALIVE_P).astype(float))
    merged: list[str] = []
    while True:
        stats = segment_stats(features, group, columns)
        clv_by = _witness(clv, group, "mean")
        alive_by = _witness(alive, group, "mean")
        named = name_segments(stats, clv_by, alive=alive_by, withheld=withheld, clv_note=clv_note)
        clashes = named.attrs["indistinguishable"]
        if not clashes:
            break
        for members in clashes:
            keep = min(members)
            fits = sorted(int(f) for f in np.unique(fit_labels[np.isin(group, members)]))
            group[np.isin(group, members)] = keep
            merged.append(f"fit segments {', '.join(map(str, fits))} differ on nothing their names say: one label")
    # Groups numbered by revenue per customer, 1 = highest (ties: the lower fit segment first).
    order = (stats.assign(first=[int(fit_labels[group == g].min()) for g in stats.index])
             .sort_values(["revenue", "first"], ascending=[False, True]).index)
    renumber = {int(g): i for i, g in enumerate(order, start=1)}
    labels = np.array([renumber[int(g)] for g in group])
    group_of = {int(f): renumber[int(g)] for f, g in zip(fit_labels, group, strict=True)}
    names = named.rename(index=renumber).sort_index()
    names["customers"] = stats["customers"].rename(index=renumber).astype("int64")
    names["revenue_per_customer"] = stats["revenue"].rename(index=renumber).astype(float)
    names.index.name = "label_group"
    return LabelSet(labels, dict(sorted(group_of.items())), names, merged)


def withheld_claims(backtest: pd.DataFrame) -> dict[str, str]:
    """``{claim: reason}`` of every claim a backtest found false, for the naming and the playbook.

    ``backtest`` holds the date's ``claims_backtest`` rows. When the combined action row
    ("deprioritise or exclude") failed, the tiers that failed alone are withheld, and the others
    too unless, without them, their own revenue shares pass the bar.
    """
    out: dict[str, str] = {}
    if not len(backtest):
        return out
    failed = backtest[backtest["verdict"] == "failed"]

    def reason(r) -> str:
        return f"withheld: backtest on {str(r.backtest_date)[:10]} showed {_lower_first(str(r.detail))}"

    for r in failed[failed["claim"] != "deprioritise or exclude"].itertuples():
        out.setdefault(r.claim, reason(r))
    for r in failed[failed["claim"] == "deprioritise or exclude"].itertuples():
        # Together the two tiers held too much revenue. A tier that failed alone is withheld already; the
        # others are withheld too only if what they hold without it still passes the bar.
        rest = [t for t in ACTION_CLAIM_ROWS[r.claim] if t not in out]
        alone = backtest[backtest["claim"].isin(rest) & backtest["segment_name"].isin(rest)]
        if rest and (len(alone) < len(rest) or alone["realised"].sum() > r.bar):
            for claim in rest:
                out[claim] = reason(r)
    return out


def _lower_first(text: str) -> str:
    text = text.rstrip(".")
    return text[:1].lower() + text[1:] if text[:2] != text[:2].upper() else text


def backtest_verdict(standing: dict, backtest: pd.DataFrame) -> str:
    """What the backtest said about the claims a label makes (or would have made), in one line."""
    if backtest is None or not len(backtest):
        return "not checked: no backtest for this date"
    made = []
    value = {"top": "top value", "high": "high value"}.get(standing.get("value"))
    if value:
        made.append(value)
    lifecycle = {"lapsed": "lapsed", "lapsing": "lapsing"}.get(standing.get("recency"))
    if lifecycle:
        made.append(lifecycle)
    if standing.get("tenure") == "new":
        made.append("new")
    parts = [f"{claim}: withheld ({why})" for claim, why in (standing.get("withheld") or {}).items()
             if claim in VALUE_CLAIMS + LIFECYCLE_CLAIMS]
    for claim in made:
        rows = backtest[backtest["claim"] == claim]
        if not len(rows):
            parts.append(f"{claim}: not checked")
            continue
        verdicts = set(rows["verdict"])
        verdict = "failed" if "failed" in verdicts else "held" if "held" in verdicts else "not checked"
        parts.append(f"{claim}: {verdict} on {str(rows['backtest_date'].iloc[0])[:10]}")
    return "; ".join(parts) if parts else "no claim to check (no value or lifecycle word)"


@dataclass
class LabelledDate:
    """What labelling one date wrote."""

    as_of_date: dt.date
    labels: pd.DataFrame  # the date's segment_labels rows
    run: dict  # the date's label_runs row
    relabelled: list[dt.date]  # later dates whose stable ids the fold changed


def clv_witness(wh: Warehouse, as_of_date: dt.date) -> tuple[pd.DataFrame | None, str | None]:
    """The date's CLV scores (``customer_key``, ``clv_365d``, ``p_alive``), or ``None`` and why not.

    Scores whose fit failed its own holdout check (``clv_runs.status = 'fitted'``) are no witness: a CLV
    figure that fails its check is not taken as true, so it neither withholds nor supports a claim.
    """
    d = {"as_of_date": as_of_date}
    run = wh.query_df(SQL["clv_run"], d) if wh.has_table("clv_runs") else pd.DataFrame()
    status = str(run["status"].iloc[0]) if len(run) else None
    reason = str(run["reason"].iloc[0]) if len(run) and pd.notna(run["reason"].iloc[0]) else None
    if status == "fitted":
        return None, f"CLV failed its holdout check: {reason or 'see clv_runs'}"
    scores = wh.query_df(SQL["clv_scores"], d) if wh.has_table("customer_clv") else pd.DataFrame()
    if len(scores):
        return scores, None
    return None, f"CLV not available: {reason or 'no CLV scores for ' + as_of_date.isoformat()}"


def label_date(wh: Warehouse, as_of_date: dt.date, max_distance: float) -> LabelledDate:
    """Label ``as_of_date``'s fit and re-fold the stable ids of every labelled date; write it all at once.

    Reads the fit (``segment_assignments``, ``segment_profiles``, ``segment_centroids``,
    ``segmentation_runs``), ``customer_features``, the CLV witness (``customer_clv``, else the
    reason of ``clv_runs``) and this date's ``claims_backtest``; writes the date's
    ``segment_labels`` and ``label_runs`` rows and the new stable ids of later dates, in one
    transaction.

    Raises
    ------
    QualityGateError
        Never: a failed gate is recorded in ``label_runs`` for ``publish_segments`` to act on.
    WarehouseError
        The date has no fit, or its fit and features do not match.
    """
    from include.features.build import load_features
    from include.labels.ids import fold_labels
    from include.runtime.errors import WarehouseError
    from include.segmentation.model import available_features

    d = {"as_of_date": as_of_date}
    run = wh.query_df(SQL["fit_run"], d)
    if run.empty:
        raise WarehouseError(f"segmentation_runs has no row for as_of_date={as_of_date}; run segment_customers first")
    run = run.iloc[0]
    assigned = wh.query_df(SQL["fit_assignments"], d)
    features = load_features(wh, as_of_date).merge(assigned, on="customer_key")
    if features.empty or len(features) != len(assigned):
        raise WarehouseError(f"segment_assignments ({len(assigned)} rows) and customer_features do not match for "
                             f"as_of_date={as_of_date} ({len(features)} customers in both); re-run segment_customers")
    columns, _ = available_features(features)
    scores, clv_note = clv_witness(wh, as_of_date)
    clv = p_alive = None
    if scores is not None:
        scored = features[["customer_key", "repeat_buyer"]].merge(scores, on="customer_key", how="left")
        clv, p_alive = scored["clv_365d"].to_numpy(float), scored["p_alive"].to_numpy(float)
        # BG/NBD gives every customer without a repeat purchase P(alive) = 1 by construction (Fader, Hardie &
        # Lee 2005): for them the model says nothing about whether they still buy, so it is no witness.
        by_construction = (scored["clv_model"] == "BG/NBD").to_numpy() & (scored["repeat_buyer"] == 0).to_numpy()
        p_alive = np.where(by_construction, np.nan, p_alive)
    backtest = wh.query_df(SQL["backtest"], d) if wh.has_table("claims_backtest") else pd.DataFrame()
    withheld = withheld_claims(backtest)
    labelset = name_fit(features, features["fit_segment"].to_numpy(), columns, clv=clv, p_alive=p_alive,
                        withheld={k: v for k, v in withheld.items() if k in VALUE_CLAIMS + LIFECYCLE_CLAIMS},
                        clv_note=clv_note)
    stability_passed = bool(run["gate_passed"])
    problems = []
    if len(labelset.names) < 2:
        problems.append("the fit's segments differ on nothing their names say: a single label tells no "
                        "customers apart")
    validity_passed = not problems
    gate_reason = "; ".join([*([f"stability: {run['gate_reason']}"] if not stability_passed else []),
                             *(f"validity: {p}" for p in problems)]) or None
    names = labelset.names
    total = int(names["customers"].sum())
    rows = []
    for fit_segment, g in labelset.group_of.items():
        r = names.loc[g]
        standing = json.loads(r["standing"])
        rows.append({"as_of_date": as_of_date, "fit_segment": fit_segment, "label_group": g,
                     "segment_name": r["segment_name"], "name_rule": r["name_rule"],
                     "value_standing": r["value_standing"], "standing": r["standing"],
                     "backtest_verdict": backtest_verdict(standing, backtest),
                     "customers": int(r["customers"]), "customer_share": int(r["customers"]) / total,
                     "revenue_per_customer": float(r["revenue_per_customer"]), "model_run_id": run["model_run_id"]})
    labels = pd.DataFrame(rows)
    label_run = {"as_of_date": as_of_date, "model_run_id": run["model_run_id"], "labels": len(names),
                 "stability_passed": stability_passed, "validity_passed": validity_passed,
                 "gate_passed": stability_passed and validity_passed, "gate_reason": gate_reason,
                 "merged": "; ".join(labelset.merged) or None,
                 "claims_withheld": json.dumps(withheld, sort_keys=True),
                 "clv_check": "could not check: " + clv_note if clv_note else "checked",
                 "backtest_date": (pd.Timestamp(backtest["backtest_date"].iloc[0]).date() if len(backtest) else None)}
    with wh.transaction() as tx:
        folded = fold_labels(tx, as_of_date, labels, label_run["gate_passed"], max_distance)
        labels = folded[as_of_date].labels
        relabelled = sorted(date for date, f in folded.items() if date != as_of_date and f.changed)
        tx.replace_partition("segment_labels", labels[list(LABEL_COLUMNS)], d)
        tx.replace_partition("label_runs", pd.DataFrame([label_run]), d)
        for date in relabelled:
            tx.replace_partition("segment_labels", folded[date].labels[list(LABEL_COLUMNS)], {"as_of_date": date})
    for r in names.itertuples():
        log.info("label %d %-45s %7d customers  rule: %s", r.Index, r.segment_name, r.customers, r.name_rule)
    for note in labelset.merged:
        log.warning("labels %s: %s", as_of_date, note)
    for claim, why in withheld.items():
        log.warning("claim '%s' %s", claim, why)
    if gate_reason:
        log.warning("quality gate failed for %s: %s", as_of_date, gate_reason)
    return LabelledDate(as_of_date, labels, label_run, relabelled)
