"""The segment report: one self-contained HTML file per as-of date.

Everything is inline (CSS and SVG charts drawn by matplotlib), so the file
opens offline and makes no network fetches. It reads only aggregates from the
warehouse (segment profiles, economics, CLV, stability, transitions, the
playbook, the backtests): no customer keys, names, emails, phones or addresses.

Banners first: the quality gate held this run's labels back (and which
labels are shown instead), the identity stage ran degraded (only when
``identity_runs.degraded`` is true). Sections: headline, segment sizes (the
published labels), how this run's model fit named its segments, snake plot
(standardised feature means per segment, seed 002), relative-importance
heatmap (segment mean / population mean - 1), the CLV model (which one, its
holdout error and check, or why there is none), CLV distribution per segment,
economics table, profit concentration curve, stability of this run's model
fit (the numbers the gate used), migration heatmap, CLV cross-check, the
playbook, what the run said on an earlier date and what those customers did
next (``claims_backtest``, ``clv_backtest``), identity resolution, then the
legacy-label and experiment sections. Features without data this run, and
sections whose data does not exist, say "not available" instead of drawing
empty charts; an assumption (the default gross margin) is stated where a
figure uses it, and an unknown figure is never shown as 0.

The page's shared helpers (tables, charts, "not available") are in
``include/report/render.py``, which every section module imports; this module
assembles the page and imports the section modules, none of which imports it.
"""

from __future__ import annotations

import datetime as dt
import html
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from include.report.lift import lift_sections, load_lift_data
from include.report.personas import load_personas_data, personas_sections
from include.report.render import (
    NO_COST,
    PALETTE,
    colour,
    cost,
    figure,
    heat_cell,
    is_true,
    money,
    not_available,
    pct,
    svg,
    table,
)
from include.runtime.errors import NoRowsError
from include.runtime.warehouse import Warehouse, named_sql

log = logging.getLogger(__name__)

#: Display labels of the numeric features.
FEATURE_LABELS = {
    "recency_days": "Recency (days)", "frequency": "Orders (12 m)", "monetary": "Revenue (12 m)",
    "avg_order_value": "Order value", "tenure_days": "Tenure (days)", "discount_share": "Discounted orders",
    "return_rate": "Return rate", "support_contacts": "Support contacts", "cost_to_serve": "Support cost",
    "usage_sessions": "Usage (90 d)", "email_open_rate": "Email opens", "email_click_rate": "Email clicks",
}
SQL = named_sql("report.sql")
#: How the section of the backtest is titled when no earlier date can be named.
BACKTEST_TITLE = "What we said before, and what those customers did next"


def load_report_data(wh: Warehouse, as_of_date: dt.date) -> dict[str, Any]:
    """Every aggregate the report shows, read from the warehouse."""
    from include.economics.build import profit_concentration
    from include.features.build import NUMERIC_FEATURES
    from include.segmentation.model import available_features, numeric_matrix

    d = {"d": as_of_date}
    q = {"as_of_date": as_of_date}  # the named reads in report.sql
    data: dict[str, Any] = {"as_of_date": as_of_date}
    features = wh.query_df(
        "SELECT f.*, s.segment_id, s.segment_name FROM customer_features f JOIN customer_segments s "
        "ON s.customer_key = f.customer_key AND s.as_of_date = f.as_of_date WHERE f.as_of_date = :d "
        "ORDER BY f.customer_key", d)
    if features.empty:
        raise NoRowsError(f"no published segments with features for as_of_date={as_of_date}")
    labels = features["segment_id"].to_numpy()
    columns, unavailable = available_features(features, NUMERIC_FEATURES)
    data["features_unavailable"] = unavailable
    z = pd.DataFrame(numeric_matrix(features, columns), columns=list(columns)).groupby(labels).mean()
    means = features[list(columns)].groupby(labels).mean()
    population = features[list(columns)].mean()
    data["names"] = features.groupby("segment_id")["segment_name"].first()
    data["published_customers"] = features.groupby("segment_id").size()
    data["snake"] = z
    data["importance"] = means / population.replace(0, np.nan) - 1
    data["economics"] = wh.query_df("SELECT * FROM segment_economics WHERE as_of_date = :d ORDER BY profit DESC", d)
    data["clv"] = wh.query_df("SELECT segment_id, clv_365d FROM customer_economics WHERE as_of_date = :d "
                              "AND clv_365d IS NOT NULL", d)
    data["curve"] = wh.query_df("SELECT customer_share, profit_share FROM profit_concentration "
                                "WHERE as_of_date = :d ORDER BY customer_share", d)
    # The exact "share of customers producing all the profit", from per-customer profit
    # (the stored curve has only 100 points).
    profit = wh.query_df("SELECT profit FROM customer_economics WHERE as_of_date = :d", d)["profit"]
    data["payers_share"] = profit_concentration(profit)[1] if len(profit) else float("nan")
    model = wh.query_df("SELECT model_run_id FROM customer_segments WHERE as_of_date = :d LIMIT 1", d)
    model_run = model["model_run_id"][0] if len(model) else None
    # Which run's labels are shown: this date's, or an earlier one's carried forward past a failed gate.
    shown = wh.query_df("SELECT as_of_date FROM segmentation_runs WHERE model_run_id = :m "
                        "ORDER BY as_of_date DESC LIMIT 1", {"m": model_run})
    data["labels_from"] = pd.Timestamp(shown["as_of_date"].iloc[0]).date() if len(shown) else None
    # Names and rules are the labeller's (segment_labels); warehouses labelled before it existed keep them in
    # segment_profiles.
    labelled = wh.has_table("segment_labels")
    data["naming"] = wh.query_df(
        "SELECT DISTINCT segment_id, segment_name, name_rule FROM segment_labels WHERE model_run_id = :m "
        "ORDER BY segment_id", {"m": model_run}) if labelled else pd.DataFrame()
    if data["naming"].empty:
        data["naming"] = wh.query_df(
            "SELECT segment_id, segment_name, name_rule, customers FROM segment_profiles WHERE model_run_id = :m "
            "ORDER BY segment_id", {"m": model_run})
    # Stability and the gate from one source: this date's segmentation (what the gate judged), fit segments
    # under their labels' ids and names.
    data["stability"] = wh.query_df(
        "SELECT COALESCE(l.segment_id, p.segment_id) AS segment_id, COALESCE(l.segment_name, p.segment_name) "
        "AS segment_name, p.customers, p.jaccard, p.as_of_date FROM segment_profiles p "
        "LEFT JOIN segment_labels l ON l.as_of_date = p.as_of_date AND l.fit_segment = p.fit_segment "
        "WHERE p.as_of_date = :d ORDER BY 1", d) if labelled else wh.query_df(
        "SELECT segment_id, segment_name, customers, jaccard, as_of_date FROM segment_profiles "
        "WHERE as_of_date = :d ORDER BY segment_id", d)
    data["run"] = wh.query_df("SELECT * FROM segmentation_runs WHERE as_of_date = :d", d)
    gate = (wh.query_df("SELECT gate_passed, gate_reason FROM label_runs WHERE as_of_date = :d", d)
            if wh.has_table("label_runs") else pd.DataFrame())
    if len(gate) and len(data["run"]):  # the labeller's gate: stability and validity
        data["run"]["gate_passed"] = bool(gate["gate_passed"].iloc[0])
        data["run"]["gate_reason"] = gate["gate_reason"].iloc[0]
    data["identity"] = wh.query_df(SQL["identity_run"], q) if wh.has_table("identity_runs") else pd.DataFrame()
    data["transitions"] = (wh.query_df(
        "SELECT from_segment, to_segment, customers, rate, from_date FROM segment_transitions "
        "WHERE to_date = :d", d) if wh.has_table("segment_transitions") else pd.DataFrame())
    data["clv_check"] = (wh.query_df("SELECT * FROM segment_clv_check WHERE as_of_date = :d ORDER BY value_rank", d)
                         if wh.has_table("segment_clv_check") else pd.DataFrame())
    data["clv_run"] = wh.query_df(SQL["clv_run"], q) if wh.has_table("clv_runs") else pd.DataFrame()
    data["clv_backtest"] = wh.query_df(SQL["clv_backtest"], q) if wh.has_table("clv_backtest") else pd.DataFrame()
    # None: the table does not exist (the claims backtest never ran here); empty: no rows for this date.
    data["claims_backtest"] = wh.query_df(SQL["claims_backtest"], q) if wh.has_table("claims_backtest") else None
    data["priority"] = wh.query_df(
        "SELECT segment_name, value_tier, action, priority, COUNT(*) AS customers FROM customer_priority "
        "WHERE as_of_date = :d GROUP BY segment_name, value_tier, action, priority", d)
    data["personas"] = load_personas_data(wh, as_of_date)  # legacy labels vs segments (include/report/personas.py)
    data["lift"] = load_lift_data(wh, as_of_date)  # experiment sections (include/report/lift.py)
    return data


def clv_state(data: dict[str, Any]) -> dict[str, Any]:
    """What the report may say about CLV this date, from ``clv_runs``.

    ``kind``: ``"unavailable"`` (no model fits: say "CLV not available: <reason>"),
    ``"failed"`` (figures exist but failed their check: not presented as true),
    ``"passed"``, or ``"unrecorded"`` (no ``clv_runs`` row: an older run; the
    figures are shown as they are). Also ``reason``, ``model``, the holdout
    error, Gini and the margin assumption where recorded.
    """
    run = data.get("clv_run")
    if run is None or not len(run):
        return {"kind": "unrecorded", "reason": None}
    r = run.iloc[0]
    get = r.get
    status = get("status")
    kind = "unavailable" if status == "unavailable" else "passed" if is_true(get("check_passed")) else "failed"
    return {"kind": kind, "status": status, "reason": get("reason") if pd.notna(get("reason")) else None,
            "model": get("clv_model"), "holdout_error_pct": get("holdout_error_pct"),
            "holdout_mae": get("holdout_mae"), "gini": get("normalised_gini"),
            "candidates": get("candidates"), "gross_margin": get("gross_margin"),
            "gross_margin_assumed": is_true(get("gross_margin_assumed")), "fitted_as_of": get("fitted_as_of")}


def margin_note(rate: float | None, assumed: bool) -> str:
    """"assumed 35% gross margin: set gross_margin" where the margin is the default; "" otherwise."""
    if not assumed or rate is None or pd.isna(rate):
        return ""
    return f"assumed {100 * rate:.0f}% gross margin: set gross_margin"


def _economics_margin(econ: pd.DataFrame) -> tuple[float | None, bool]:
    """The margin rate economics used and whether it was assumed (older rows: unknown, not claimed as assumed)."""
    if not len(econ) or "gross_margin_rate" not in econ or econ["gross_margin_rate"].isna().all():
        return None, False
    return float(econ["gross_margin_rate"].dropna().iloc[0]), is_true(econ["gross_margin_assumed"].iloc[0])


def _banners(data: dict[str, Any]) -> list[str]:
    """Warnings that change how the whole report is read: a held-back run, a degraded identity stage."""
    e = html.escape
    out = []
    run = data.get("run", pd.DataFrame())
    if len(run):
        r = run.iloc[0]
        gate = r.get("gate_passed")
        if gate is not None and not pd.isna(gate) and not bool(gate):
            shown = data.get("labels_from")
            which = (f"the labels published on {shown}" if shown and shown != data["as_of_date"]
                     else "no labels from this run" if shown is None else "this run's labels")
            out.append(f"<b>Quality gate failed: this run's segment labels were not published.</b> "
                       f"{e(str(r.get('gate_reason') or 'no reason recorded'))}. Shown instead: {which}.")
    ident = data.get("identity", pd.DataFrame())
    # Only a recorded true flag: a missing or NULL flag is no evidence of a degraded run.
    if len(ident) and is_true(ident.iloc[-1].get("degraded")):
        i = ident.iloc[-1]
        out.append(f"<b>Identity resolution ran degraded</b> (method {e(str(i.get('method')))}): "
                   f"{e(str(i.get('reason') or 'no reason recorded'))}. Customer counts and segments may "
                   "merge or split people differently from a normal run.")
    return out


def _sizes_chart(econ: pd.DataFrame) -> str:
    fig, ax = figure(8, 0.45 * len(econ) + 0.8)
    econ = econ.sort_values("customers")
    ax.barh(econ["segment_name"], econ["customer_share"] * 100, color=[colour(int(i)) for i in econ["segment_id"]])
    for y, (share, n) in enumerate(zip(econ["customer_share"], econ["customers"], strict=True)):
        ax.text(share * 100, y, f"  {n:,} ({share:.1%})", va="center")
    ax.set_xlabel("share of customers (%)")
    return svg(fig)


def _snake_chart(z: pd.DataFrame, names: pd.Series) -> str:
    fig, ax = figure(9, 3.8)
    x = np.arange(z.shape[1])
    for seg, row in z.iterrows():
        ax.plot(x, row.to_numpy(), marker="o", lw=1.8, color=colour(int(seg)), label=names.get(seg, seg))
    ax.axhline(0, color="#999", lw=0.8)
    ax.set_xticks(x, [FEATURE_LABELS.get(c, c) for c in z.columns], rotation=30, ha="right")
    ax.set_ylabel("standardised mean (z)")
    ax.legend(frameon=False, fontsize=8, ncol=2)
    return svg(fig)


def _clv_chart(clv: pd.DataFrame, names: pd.Series, currency: str = "£") -> str:
    segs = [s for s in names.index if s in set(clv["segment_id"])]
    fig, ax = figure(8, 0.5 * max(len(segs), 1) + 0.8)
    values = [clv.loc[clv["segment_id"] == s, "clv_365d"].to_numpy() for s in segs]
    if segs:
        box = ax.boxplot(values, vert=False, showfliers=False, patch_artist=True, widths=0.6)
        for patch, s in zip(box["boxes"], segs, strict=True):
            patch.set_facecolor(colour(int(s)))
            patch.set_alpha(0.6)
        ax.set_yticks(range(1, len(segs) + 1), [names[s] for s in segs])
    ax.set_xlabel(f"CLV, next 365 days ({currency}; boxes: quartiles, whiskers: 1.5 IQR)")
    return svg(fig)


def _curve_chart(curve: pd.DataFrame, payers: float | None) -> str:
    fig, ax = figure(6, 3.6)
    ax.plot(curve["customer_share"] * 100, curve["profit_share"] * 100, color=PALETTE[0], lw=2)
    ax.axhline(100, color="#999", lw=0.8, ls="--")
    ax.plot([0, 100], [0, 100], color="#bbb", lw=0.8, ls=":")
    if payers is not None and not pd.isna(payers):
        ax.axvline(payers * 100, color=PALETTE[3], lw=1)
        ax.text(payers * 100, 5, f" {payers:.1%} of customers\n produce 100% of profit", color=PALETTE[3])
    ax.set_xlabel("customers, most profitable first (%)")
    ax.set_ylabel("cumulative share of profit (%)")
    return svg(fig)


def _decile_chart(deciles: pd.DataFrame, currency: str) -> str:
    """Predicted against realised holdout revenue per decile of predicted value."""
    fig, ax = figure(7, 2.8)
    x = deciles["decile"].astype(int).to_numpy()
    ax.bar(x - 0.2, deciles["predicted_revenue"], width=0.4, color=PALETTE[0], label="the model expected")
    ax.bar(x + 0.2, deciles["realised_revenue"], width=0.4, color=PALETTE[1], label="customers spent")
    ax.set_xticks(x, [f"{i}" for i in x])
    ax.set_xlabel("tenth of customers by the value the model expected (1 = highest)")
    ax.set_ylabel(f"revenue in the holdout ({currency})")
    ax.legend(frameon=False)
    return svg(fig)


def _headline(data: dict[str, Any], econ: pd.DataFrame, currency: str, payers_share: float | None,
              clv: dict[str, Any]) -> list[str]:
    e = html.escape
    total_profit = econ["profit"].sum()
    top = econ.iloc[0] if len(econ) else None
    losers = econ[econ["profit"] < 0]
    cost_known = bool(len(econ)) and bool(econ["profit"].notna().all())
    rate, assumed = _economics_margin(econ)
    margin = margin_note(rate, assumed)
    profit_text = (f"profit over the last 12 months <b>{money(total_profit, currency)}</b>"
                   + (f" ({e(margin)})" if margin else "") if cost_known else f"profit <b>{e(NO_COST)}</b>")
    headline = [
        f"<b>{int(econ['customers'].sum()):,}</b> customers in <b>{len(econ)}</b> segments (published labels); "
        f"{profit_text} on revenue <b>{money(econ['revenue'].sum(), currency)}</b>.",
    ]
    if payers_share is not None and not pd.isna(payers_share):
        headline.append(f"The most profitable <b>{pct(payers_share)}</b> of customers produce 100% of the profit; "
                        "the rest, together, do not add to it.")
    if top is not None and cost_known:
        headline.append(f"<b>{e(str(top['segment_name']))}</b>: {pct(top['customer_share'])} of customers, "
                        f"{pct(top['profit_share'])} of profit.")
    if len(losers):
        # Names hold commas ("Lapsed repeat buyers, high returns"): quote each one.
        headline.append(f"{len(losers)} segment(s) lose money "
                        f"({e('; '.join(chr(8220) + str(n) + chr(8221) for n in losers['segment_name']))}): "
                        f"{money(losers['cost_to_serve'].sum(), currency)} spent serving them, "
                        f"{money(losers['profit'].sum(), currency)} profit.")
    headline.append(_clv_sentence(clv))
    return headline


def _clv_sentence(clv: dict[str, Any]) -> str:
    """One headline sentence on CLV: the model and its check, or why there is none."""
    e = html.escape
    if clv["kind"] == "unavailable":
        return f"<b>CLV not available: {e(str(clv['reason']))}.</b> No CLV, P(alive) or churn risk this run."
    if clv["kind"] == "unrecorded":
        return "CLV: no record of the CLV run for this date (clv_runs); figures shown as stored."
    error = clv["holdout_error_pct"]
    model = (f"CLV by <b>{e(str(clv['model']))}</b> + Gamma-Gamma, holdout error "
             f"<b>{error:+.1f}%</b>" if pd.notna(error) else f"CLV by <b>{e(str(clv['model']))}</b>")
    margin = margin_note(clv["gross_margin"], clv["gross_margin_assumed"])
    if clv["kind"] == "failed":
        return (f"{model}: <b>these CLV figures failed their check and are not presented as true</b> "
                f"({e(str(clv['reason']))}).")
    return f"{model}; it passed its check on the holdout" + (f" ({e(margin)})." if margin else ".")


def _clv_model_section(clv: dict[str, Any]) -> str:
    """Which purchase model the run chose and how it did on the holdout, or why there is no CLV."""
    e = html.escape
    if clv["kind"] == "unavailable":
        return (not_available("CLV", f"CLV not available: {clv['reason']}")
                + f"<p class='note'>Candidates tried: {e(str(clv['candidates'] or '—'))}. A model whose "
                "likelihood has no interior maximum (a parameter running to 0 or infinity, e.g. no customer "
                "seen to stop buying) or that gives nearly everyone P(alive) = 1 is a failed fit: it would "
                "call every silent customer active. Segments, economics, report and CRM pushes go on "
                "without CLV.</p>")
    if clv["kind"] == "unrecorded":
        return not_available("CLV model", "no clv_runs record for this date (run fit_clv to record it)")
    rows = [["purchase model", e(str(clv["model"])) + " (with Gamma-Gamma for spend)"],
            ["holdout error (purchases)", "—" if pd.isna(clv["holdout_error_pct"])
             else f"{clv['holdout_error_pct']:+.1f}%"],
            ["holdout MAE per customer", "—" if pd.isna(clv["holdout_mae"]) else f"{clv['holdout_mae']:.3f}"],
            ["ranking on the holdout (normalised Gini)", "—" if pd.isna(clv["gini"]) else f"{clv['gini']:.2f}"],
            ["gross margin in CLV", "—" if pd.isna(clv["gross_margin"]) else
             (e(margin_note(clv["gross_margin"], True)) if clv["gross_margin_assumed"]
              else f"{100 * clv['gross_margin']:.0f}% (set for this run)")],
            ["check", "<b>passed</b>" if clv["kind"] == "passed" else f"<b>failed</b>: {e(str(clv['reason']))}"],
            ["candidates", e(str(clv["candidates"] or "—"))]]
    if pd.notna(clv.get("fitted_as_of")):
        rows.insert(1, ["scored with", f"the registered champion fitted on data to {str(clv['fitted_as_of'])[:10]}"])
    text = ("<p>The purchase model is chosen each run among the BG/NBD family by its error on the last "
            "holdout days, which it did not see; a model without an interior maximum of its likelihood is not "
            "a candidate.</p>")
    if clv["kind"] == "failed":
        text = ("<p class='na'><b>These CLV figures failed their check and are not presented as true.</b> "
                f"{e(str(clv['reason']))}. Read CLV, P(alive) and churn risk below as unverified.</p>" + text)
    return text + table(["", ""], rows, numeric_from=2)


def _economics_section(econ: pd.DataFrame, unavailable: dict, clv: dict[str, Any], currency: str) -> str:
    e = html.escape
    rate, assumed = _economics_margin(econ)
    margin = margin_note(rate, assumed)
    discounts = "discount_share" not in unavailable  # no discount data: a column of zeros says nothing
    with_clv = clv["kind"] != "unavailable"
    cost_known = bool(len(econ)) and bool(econ["profit"].notna().all())
    rows = []
    for r in econ.itertuples():
        row = [e(str(r.segment_name)), f"{r.customers:,}", pct(r.customer_share), money(r.revenue, currency),
               money(r.gross_margin, currency)] + ([money(r.discount_spend, currency)] if discounts else [])
        row += [cost(r.cost_to_serve, r, currency), cost(r.profit, r, currency),
                cost(r.profit_per_customer, r, currency), pct(r.profit_share) if cost_known else "<i>unknown</i>"]
        if with_clv:
            row += [money(r.mean_clv_365d, currency), money(r.total_clv_365d, currency)]
        row += [pct(getattr(r, "repeat_retention", None))]
        if with_clv:
            row += [pct(getattr(r, "alive_share", None))]
        row += [pct(r.label_stability)]
        rows.append(row)
    headers = (["segment", "customers", "share of customers", "revenue",
                f"gross margin ({margin})" if margin else "gross margin"]
               + (["discount spend"] if discounts else [])
               + ["cost to serve", "profit", "profit / customer", "share of profit"]
               + (["mean CLV 365 d", "total CLV 365 d"] if with_clv else []) + ["repeat retention"]
               + (["alive (P ≥ 0.5)"] if with_clv else []) + ["label stability"])
    notes = ["Last 12 months, by the published labels (customer_segments)."]
    if margin:
        notes.append(f"Gross margin and profit use an {e(margin)} (the default, not the business's figure).")
    notes.append("Cost to serve = support contacts × cost per contact by channel + servicing costs"
                 + ("." if cost_known else f"; cost to serve and profit <i>unknown</i>: they {e(NO_COST)}."))
    notes.append("Repeat retention: of the segment's customers who bought in the window before the last one, the "
                 "share who bought again in the last window.")
    if with_clv:
        notes.append("Alive: share with P(alive) ≥ 0.5 by the CLV model."
                     + (" <b>The CLV figures failed their check</b> (see CLV model): not presented as true."
                        if clv["kind"] == "failed" else ""))
    else:
        notes.append(f"<b>CLV not available: {e(str(clv['reason']))}</b>: no CLV or alive-share columns.")
    notes.append("Label stability: share of last run's members still labelled with this segment (hysteresis "
                 "keeps it high; it is not retention).")
    if not discounts:
        notes.append("Discount spend: not available (no order carried a discount).")
    return table(headers, rows) + "<p class='note'>" + " ".join(notes) + "</p>"


def _fit_note(data: dict[str, Any], what: str) -> str:
    """Says that a section shows the model fit's figures, and how they relate to the published labels."""
    shown = data.get("labels_from")
    which = (f"the model fit of {shown}, whose labels are published" if shown == data["as_of_date"]
             else f"the model fit of {shown}, whose labels are the ones published (this run's were held back)"
             if shown else "a model fit")
    return (f"<p class='note'>{what} of {which}. Segment sizes, economics and the playbook count the "
            "<b>published labels</b>: a customer's published label moves only after hysteresis_runs runs in a "
            "new segment, so the fit's counts and the published counts differ by the moves still pending.</p>")


def _backtest_title(claims: pd.DataFrame | None, clv_bt: pd.DataFrame) -> str:
    dates = []
    if claims is not None and len(claims):
        dates.append(str(claims["backtest_date"].min())[:10])
    if len(clv_bt):
        dates.append(str(clv_bt["calibration_end"].min())[:10])
    return f"What we said on {min(dates)}, and what those customers did next" if dates else BACKTEST_TITLE


def _claim_value(metric: str, value: float, currency: str, unit: Any = None) -> str:
    """A claim's realised figure or bar: by its ``unit`` where the table has one, else by the metric's words."""
    if value is None or pd.isna(value):
        return "—"
    words = str(unit if isinstance(unit, str) else metric).lower()
    if "rank" in words or "count" in words or "customers" in words:
        return f"{value:,.0f}"
    if any(w in words for w in ("share", "rate", "%", "percent", "proportion")):
        return pct(value)
    if any(w in words for w in ("revenue", "spend", "value", "profit", "money")):
        return money(value, currency) if abs(value) >= 10 else f"{currency}{value:,.2f}"
    return f"{value:,.2f}"


_VERDICT = {"held": "✓ held", "failed": "✗ failed", "not checked": "– not checked"}


def _backtest_section(data: dict[str, Any], clv: dict[str, Any], currency: str) -> str:
    """The run's claims of an earlier date against what those customers did next (for a marketing reader)."""
    e = html.escape
    claims, clv_bt = data.get("claims_backtest"), data.get("clv_backtest", pd.DataFrame())
    parts = ["<p>Every run goes back to an earlier date in the shop's own data, repeats what the pipeline said "
             "then, and looks at what those same customers did in the days after. Nothing here is a forecast: it "
             "is the record of how our past statements turned out. A statement that failed is not published as "
             "true this run.</p>", "<h3>Segment names and actions</h3>"]
    if claims is None:
        parts.append(not_available("segment claims", "the claims backtest has not run here (no claims_backtest "
                                   "table)"))
    elif claims.empty:
        parts.append(not_available("segment claims", f"no claims_backtest rows for {data['as_of_date']}"))
    else:
        counts = claims["verdict"].value_counts()
        first = claims.iloc[0]
        parts.append(f"<p>On <b>{str(first['backtest_date'])[:10]}</b> we made {len(claims)} statements about "
                     f"segments and actions. In the {int(first['horizon_days'])} days that followed: "
                     f"<b>{int(counts.get('held', 0))} held</b>, <b>{int(counts.get('failed', 0))} failed</b>, "
                     f"{int(counts.get('not checked', 0))} could not be checked.</p>")
        rows = []
        for r in claims.itertuples():
            verdict = str(r.verdict)
            mark = _VERDICT.get(verdict, e(verdict))
            unit = getattr(r, "unit", None)
            rows.append([e(f"“{r.claim}”"), e(str(r.segment_name)) if pd.notna(r.segment_name) else "all customers",
                         "—" if pd.isna(r.customers) else f"{int(r.customers):,}", e(str(r.metric)),
                         _claim_value(r.metric, r.realised, currency, unit),
                         _claim_value(r.metric, r.bar, currency, unit),
                         f"<b>{mark}</b>" if verdict == "failed" else mark,
                         e(str(r.detail)) if pd.notna(r.detail) else ""])
        parts.append('<div class="scroll">' + table(
            ["what we said", "about", "customers", "what we measured next", "what happened", "needed", "verdict",
             "in plain words"], rows, numeric={2, 4, 5}) + "</div>")
    parts.append("<h3>Customer lifetime value</h3>")
    deciles = clv_bt[clv_bt["row_kind"] == "decile"] if len(clv_bt) else clv_bt
    if clv["kind"] == "unavailable":
        parts.append(not_available("CLV backtest", f"CLV not available: {clv['reason']}; no CLV statement to check"))
    elif deciles is None or not len(deciles):
        parts.append(not_available("CLV backtest", f"no clv_backtest rows for {data['as_of_date']}"))
    else:
        summary = clv_bt[clv_bt["row_kind"] == "summary"].set_index("metric")
        value = summary["value"].to_dict()
        first = deciles.iloc[0]
        gini = value.get("normalised_gini_revenue")
        gini_metric = "normalised_gini_revenue"
        if gini is None or pd.isna(gini):
            gini, gini_metric = value.get("normalised_gini_purchases"), "normalised_gini_purchases"
        bar = summary["bar"].get(gini_metric)
        verdict = summary["verdict"].get(gini_metric)
        top_real, top_pred = value.get("top_decile_realised_revenue_share"), value.get(
            "top_decile_predicted_revenue_share")
        error = value.get("purchase_error_pct")
        expected, made = deciles["predicted_purchases"].sum(), deciles["realised_purchases"].sum()
        estimate = ("" if error is None or pd.isna(error) else
                    f" ({error:+.0f}%: {'more' if error > 0 else 'fewer'} than they made)")
        parts.append(
            f"<p>On <b>{str(first['calibration_end'])[:10]}</b> the CLV model ({e(str(first['clv_model']))}) "
            f"ranked every customer by the value it expected over the next {int(first['horizon_days'])} days. "
            f"What they then spent: the tenth it ranked highest brought <b>{pct(top_real)}</b> of the revenue "
            f"(it expected {pct(top_pred)}). It expected <b>{expected:,.0f}</b> purchases from them all; they "
            f"made <b>{made:,.0f}</b>{estimate}. Ranking quality (normalised Gini: 1 = customers ranked "
            "exactly by what they went on to spend, 0 = no better than chance): <b>"
            f"{'—' if gini is None or pd.isna(gini) else f'{gini:.2f}'}</b>"
            + (f", needed {bar:.2f}: <b>{_VERDICT.get(str(verdict), e(str(verdict)))}</b>" if pd.notna(bar) else "")
            + ".</p>")
        if clv["kind"] == "failed":
            parts.append(f"<p class='na'><b>The CLV figures failed their check</b>: {e(str(clv['reason']))}. "
                         "They are not presented as true.</p>")
        if deciles["predicted_revenue"].notna().any():
            parts.append(_decile_chart(deciles, currency))
        rows = [[f"{int(r.decile)}", f"{int(r.customers):,}", f"{r.predicted_purchases:,.1f}",
                 f"{r.realised_purchases:,.0f}", money(r.predicted_revenue, currency),
                 money(r.realised_revenue, currency)] for r in deciles.itertuples()]
        parts.append(table(["tenth (1 = highest expected value)", "customers", "purchases expected",
                            "purchases made", "revenue expected", "revenue spent"], rows, numeric_from=1))
        detail = first.get("detail")
        if detail is not None and pd.notna(detail):
            parts.append(f"<p class='note'>{e(str(detail))}.</p>")
    return "".join(parts)


def _identity_section(data: dict[str, Any]) -> str:
    """How records became customers this run; the estimated precision and recall where identity recorded them."""
    e = html.escape
    ident = data.get("identity", pd.DataFrame())
    if ident is None or not len(ident):
        return not_available("identity resolution", "no identity_runs record for this date")
    i = ident.iloc[-1]
    rows = [["method", e(str(i.get("method")))]]
    if pd.notna(i.get("records")) and pd.notna(i.get("customers")):
        rows.append(["records → customers", f"{int(i['records']):,} → {int(i['customers']):,}"])
    rows.append(["ran degraded", f"<b>yes</b>: {e(str(i.get('reason') or 'no reason recorded'))}"
                 if is_true(i.get("degraded")) else "no"])
    for column, label in (("estimated_precision", "estimated precision (merged records that are one person)"),
                          ("estimated_recall", "estimated recall (one person's records that were merged)")):
        if column in ident.columns:
            rows.append([label, pct(i.get(column))
                         if pd.notna(i.get(column)) else "not estimated this run"])
    return table(["", ""], rows, numeric_from=2)


def render_report(data: dict[str, Any], *, title: str = "Customer segments", currency: str = "£",
                  payers_share: float | None = None, currency_code: str | None = None) -> str:
    """The report as one HTML document (no external resources).

    ``currency`` is the symbol money is shown with, ``currency_code`` (e.g.
    ``USD``) is named in the header.

    ``payers_share`` overrides the share of customers producing 100% of profit
    that :func:`load_report_data` computed.
    """
    e = html.escape
    if payers_share is None:
        payers_share = data.get("payers_share")
    econ, names = data["economics"], data["names"]
    clv = clv_state(data)
    sections = []
    headline = _headline(data, econ, currency, payers_share, clv)
    banners = _banners(data)
    if banners:
        headline.insert(0, "<b>Read with care:</b> " + " ".join(re.sub(r"</?b>", "", b) for b in banners))
    sections.append(("Headline", "<ul>" + "".join(f"<li>{h}</li>" for h in headline) + "</ul>"))
    sections.append(("Segment sizes", ("<p class='note'>Published labels (customer_segments) as of "
                                       f"{data['as_of_date']}: what the CRM receives.</p>" + _sizes_chart(econ))
                     if len(econ) else not_available("segment sizes", "no segment economics for this date")))
    naming = data.get("naming", pd.DataFrame())
    if len(naming):
        published = data.get("published_customers", pd.Series(dtype=int))
        has_counts = "customers" in naming.columns
        rows = [[e(str(r.segment_name)), e(str(r.name_rule))]
                + ([f"{int(r.customers):,}" if pd.notna(r.customers) else "—",
                    f"{int(published.get(r.segment_id, 0)):,}"] if has_counts else []) for r in naming.itertuples()]
        sections.append(("How segments were named (model fit)",
                         "<p>Each name comes from the segment's standing against the others in the model fit "
                         "(value by revenue and CLV, recency, buying pattern, order value, behaviour); a value "
                         "claim needs CLV to agree.</p>"
                         + table(["segment", "rule"] + (["customers in the fit", "customers published"]
                                                        if has_counts else []), rows, numeric_from=2)
                         + _fit_note(data, "Names, rules and the fit's counts are those")))
    unavailable = data.get("features_unavailable") or {}
    missing = ("<p class='na'><b>Not available this run</b> (no data; left out of clustering, plots and tables): "
               + e(", ".join(f"{FEATURE_LABELS.get(f, f)} ({why})" for f, why in unavailable.items()))
               + ".</p>") if unavailable else ""
    sections.append(("Snake plot", "<p>Mean of each standardised (log) feature per segment (published labels): 0 "
                     "is the population average, ±1 one standard deviation.</p>" + missing
                     + _snake_chart(data["snake"], names)))
    imp = data["importance"]
    rows = [[e(str(names.get(s, s)))] + [heat_cell(v, 1.0) for v in imp.loc[s]] for s in imp.index]
    head = "".join(f"<th>{e(FEATURE_LABELS.get(c, c))}</th>" for c in imp.columns)
    body = "".join("<tr><td>" + r[0] + "</td>" + "".join(r[1:]) + "</tr>" for r in rows)
    sections.append(("Relative importance", "<p>Segment mean / population mean − 1 (blue: above average, "
                     "red: below).</p>" + missing + f'<div class="scroll"><table><thead><tr><th>segment</th>{head}</tr>'
                     f"</thead><tbody>{body}</tbody></table></div>"))
    sections.append(("CLV model", _clv_model_section(clv)))
    if clv["kind"] == "unavailable":
        distribution = not_available("CLV distribution", f"CLV not available: {clv['reason']}")
    elif len(data["clv"]):
        distribution = ((f"<p class='na'><b>Not presented as true:</b> {e(str(clv['reason']))}.</p>"
                         if clv["kind"] == "failed" else "")
                        + _clv_chart(data["clv"], names, currency)
                        + (f"<p class='note'>CLV is margin: {e(margin_note(clv['gross_margin'], True))}.</p>"
                           if clv.get("gross_margin_assumed") else ""))
    else:
        distribution = not_available("CLV distribution", "no customer of the published segments has a CLV score "
                                      "for this date")
    sections.append(("CLV distribution", distribution))
    sections.append(("Economics", _economics_section(econ, unavailable, clv, currency)))
    curve = data["curve"]
    cost_known = bool(len(econ)) and bool(econ["profit"].notna().all())
    sections.append(("Profit concentration", _curve_chart(curve, payers_share) if len(curve) else
                     not_available("profit concentration", f"profit {NO_COST}" if not cost_known else
                                   "no per-customer profit for this date")))
    stab = data["stability"]
    run = data["run"]
    gate = ""
    if len(run):
        r = run.iloc[0]
        shown = data.get("labels_from")
        gate = (f"<p>Quality gate this run: <b>{'passed' if r['gate_passed'] else 'failed'}</b>"
                f"{'' if r['gate_passed'] else ' — ' + e(str(r['gate_reason']))}."
                f" Bootstrap mean ARI {r['bootstrap_ari']:.2f}. The table shows this run's model fit, the numbers "
                "the gate judged"
                + ("" if r["gate_passed"] else f"; the labels shown elsewhere in this report are those published "
                   f"on {shown}") + ".</p>")
    stab_rows = [[e(str(r.segment_name)), f"{r.customers:,}", "—" if pd.isna(r.jaccard) else f"{r.jaccard:.2f}",
                  "—" if pd.isna(r.jaccard) else ("highly stable" if r.jaccard >= 0.85 else "stable"
                                                   if r.jaccard >= 0.75 else "doubtful" if r.jaccard >= 0.5
                                                   else "dissolved")] for r in stab.itertuples()]
    sections.append(("Stability (model fit)",
                     gate + (table(["segment", "customers in the fit", "bootstrap Jaccard", "reading"], stab_rows)
                             if stab_rows else not_available("stability", "no segmentation ran for this date"))
                     + "<p class='note'>Hennig's clusterboot: ≥ 0.75 stable, ≥ 0.85 highly stable, "
                     "< 0.5 dissolved. These are the model fit's segments and counts, not the published "
                     "labels'.</p>"))
    tr = data["transitions"]
    if len(tr):
        mat = tr.pivot_table(index="from_segment", columns="to_segment", values="rate", aggfunc="sum").fillna(0)
        head = "".join(f"<th>{e(str(c))}</th>" for c in mat.columns)
        body = "".join(
            f"<tr><td>{e(str(i))}</td>" + "".join(
                f'<td class="num heat" style="background:rgba(27,108,168,{v:.2f})">{v:.0%}</td>' for v in row)
            + "</tr>" for i, row in zip(mat.index, mat.to_numpy(), strict=True))
        sections.append(("Migration since last run", f"<p>From {str(tr['from_date'].iloc[0])[:10]}: share of "
                         "each segment (rows) found in each segment now (columns).</p>"
                         f'<div class="scroll"><table><thead><tr><th>from \\ to</th>{head}</tr></thead>'
                         f"<tbody>{body}</tbody></table></div>"))
    else:
        sections.append(("Migration since last run", not_available("migration", "no earlier published run to "
                                                                  "compare with")))
    chk = data["clv_check"]
    if clv["kind"] == "unavailable":
        sections.append(("CLV cross-check", not_available("CLV cross-check", "could not check: CLV not "
                                                          f"available: {clv['reason']}")))
    elif len(chk):
        rows = [[e(str(r.segment_name)), str(r.value_rank), str(r.clv_rank), money(r.mean_clv_365d, currency),
                 pct(r.mean_p_alive), "⚠ " + e(str(r.reason)) if r.flag else "consistent"] for r in chk.itertuples()]
        sections.append(("CLV cross-check", ("<p class='na'>The CLV figures failed their check: the cross-check "
                                             "leans on unverified CLV.</p>" if clv["kind"] == "failed" else "")
                         + table(["segment", "value rank", "CLV rank", "mean CLV 365 d", "mean P(alive)", "check"],
                                 rows)))
    else:
        sections.append(("CLV cross-check", not_available("CLV cross-check", "the cross-check has not run for "
                                                          "this date")))
    pr = data["priority"]
    if len(pr):
        wide = pr.pivot_table(index=["segment_name", "value_tier", "action"], columns="priority",
                              values="customers", aggfunc="sum").fillna(0).reset_index()
        order = [p for p in ("critical", "high", "medium", "low") if p in wide.columns]
        rows = [[e(str(r["segment_name"])), e(str(r["value_tier"])), e(str(r["action"]))]
                + [f"{int(r[p]):,}" for p in order] for _, r in wide.iterrows()]
        sections.append(("Playbook", table(["segment", "value tier", "recommended action", *order], rows,
                                           numeric_from=3)
                         + "<p class='note'>Priority layers churn risk (1 − P(alive)) on the segment's value tier: "
                         "high value + high risk = critical; dormant + high risk = low."
                         + (f" <b>CLV not available: {e(str(clv['reason']))}</b>: churn risk (1 − P(alive)) is "
                            "unknown this run."
                            if clv["kind"] == "unavailable" else "") + "</p>"))
    sections.append((_backtest_title(data.get("claims_backtest"), data.get("clv_backtest", pd.DataFrame())),
                     _backtest_section(data, clv, currency)))
    sections.append(("Identity resolution", _identity_section(data)))
    sections += personas_sections(data.get("personas"))
    if "lift" in data:
        sections.extend(lift_sections(data["lift"], currency))
    nav = "".join(f'<a href="#s{i}">{e(t)}</a>' for i, (t, _) in enumerate(sections))
    banner_html = "".join(f'<div class="banner" role="alert">{b}</div>' for b in banners)
    body = "".join(f'<section id="s{i}"><h2>{e(t)}</h2>{c}</section>' for i, (t, c) in enumerate(sections))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} — {data['as_of_date']}</title>
<style>
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222; margin: 0; background: #f6f7f9; }}
header {{ background: #1b3a57; color: #fff; padding: 18px 28px; }}
header h1 {{ margin: 0; font-size: 22px; }}
nav {{ padding: 8px 28px; background: #fff; border-bottom: 1px solid #ddd; position: sticky; top: 0; }}
nav a {{ margin-right: 14px; color: #1b6ca8; text-decoration: none; font-size: 13px; }}
main {{ max-width: 1150px; margin: 0 auto; padding: 10px 28px 40px; }}
section {{ background: #fff; border: 1px solid #e2e4e8; border-radius: 8px; padding: 6px 20px 16px; margin: 16px 0; }}
h2 {{ font-size: 17px; color: #1b3a57; }}
h3 {{ font-size: 14px; color: #1b3a57; }}
table {{ border-collapse: collapse; font-size: 13px; }}
th, td {{ padding: 5px 9px; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }}
th {{ background: #f0f2f5; font-weight: 600; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}
.scroll {{ overflow-x: auto; }}
.note {{ color: #666; font-size: 12px; }}
.na {{ color: #6b4e00; background: #fff8e1; border-left: 4px solid #e0a800; padding: 6px 10px; }}
.banner {{ background: #fdecea; border: 1px solid #c0392b; border-left: 6px solid #c0392b; color: #611a15;
  border-radius: 6px; padding: 10px 16px; margin: 16px 0 0; }}
svg {{ max-width: 100%; height: auto; }}
</style></head>
<body><header><h1>{e(title)}</h1><div>As of {data['as_of_date']} · money in {e(currency_code or currency)} · generated from the warehouse tables
<code>segment_economics</code>, <code>segment_profiles</code>, <code>customer_clv</code>, <code>clv_runs</code>, <code>segment_transitions</code></div>
</header><nav>{nav}</nav><main>{banner_html}{body}</main></body></html>
"""


def write_report(wh: Warehouse, as_of_date: dt.date, folder: Path, payers_share: float | None = None,
                 currency: str = "£", currency_code: str | None = None) -> Path:
    """Render the report of ``as_of_date`` into ``folder`` with money in ``currency``; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = report_path(folder, as_of_date)
    # Every read in one transaction: one snapshot of the date's tables, and one open of the warehouse file
    # instead of one per read (about 40; 25 CPU-ms each on the 480k warehouse).
    with wh.transaction() as tx:
        data = load_report_data(tx, as_of_date)
    page = render_report(data, payers_share=payers_share, currency=currency, currency_code=currency_code)
    path.write_text(page, encoding="utf-8")
    return path


def report_path(folder: Path, as_of_date: dt.date) -> Path:
    """Where the report of ``as_of_date`` is written."""
    return folder / f"segment_report_{as_of_date.isoformat()}.html"
