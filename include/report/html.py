"""The segment report: one self-contained HTML file per as-of date.

Everything is inline (CSS and SVG charts drawn by matplotlib), so the file
opens offline and makes no network fetches. It reads only aggregates from the
warehouse (segment profiles, economics, CLV, stability, transitions, the
playbook): no customer keys, names, emails, phones or addresses.

Banners first: the quality gate held this run's labels back (and which
labels are shown instead), the identity stage ran degraded (``identity_runs``).
Sections: headline, segment sizes, how each segment was named (the rule
behind each name), snake plot (standardised feature means per segment, seed
002), relative-importance heatmap (segment mean / population mean - 1), CLV
distribution per segment, economics table, profit concentration curve,
stability of this run's segments (the numbers the gate used), migration
heatmap, CLV cross-check and the playbook. Features without data this run,
and sections whose data does not exist, say "not available" instead of
drawing empty charts.

Size: one renderer for one self-contained page (every section reads the same data dict and
shares the page's helpers); split by section, each part would import the others' helpers.
"""

from __future__ import annotations

import datetime as dt
import html
import io
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from include.report.personas import load_personas_data, personas_sections
from include.runtime.errors import NoRowsError
from include.runtime.warehouse import Warehouse

log = logging.getLogger(__name__)

#: Display labels of the numeric features.
FEATURE_LABELS = {
    "recency_days": "Recency (days)", "frequency": "Orders (12 m)", "monetary": "Revenue (12 m)",
    "avg_order_value": "Order value", "tenure_days": "Tenure (days)", "discount_share": "Discounted orders",
    "return_rate": "Return rate", "support_contacts": "Support contacts", "cost_to_serve": "Support cost",
    "usage_sessions": "Usage (90 d)", "email_open_rate": "Email opens", "email_click_rate": "Email clicks",
}
PALETTE = ("#1b6ca8", "#e07b39", "#3a9d5d", "#c0392b", "#8e6bbf", "#8c6d31", "#d35f9f", "#5f6b6d",
           "#17a2b8", "#b8a31b")


def money(value: float, symbol: str = "£") -> str:
    """``£1,234`` / ``-£56`` (whole units); an em dash for missing values."""
    if value is None or pd.isna(value):
        return "—"
    sign = "-" if value < 0 else ""
    return f"{sign}{symbol}{abs(value):,.0f}"


def _cost(value: float, row: Any, symbol: str) -> str:
    """A cost or profit figure, or *unknown* where the business has no cost data (never an invented 0)."""
    if value is None or pd.isna(value):
        known = getattr(row, "cost_known", None)
        return "<i>unknown</i>" if known is not None and not pd.isna(known) and not bool(known) else "—"
    return money(value, symbol)


def pct(value: float, digits: int = 1) -> str:
    """``12.3%``; an em dash for missing values."""
    if value is None or pd.isna(value):
        return "—"
    return f"{100 * value:.{digits}f}%"


def _svg(fig) -> str:
    buf = io.StringIO()
    # No metadata block: it carries the render time (the report must be reproducible).
    fig.savefig(buf, format="svg", bbox_inches="tight",
                metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE: inline SVG in HTML5


def _figure(width: float = 8, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "path", "font.size": 9, "axes.spines.top": False,
                         "axes.spines.right": False, "svg.hashsalt": "segment-report"})
    return plt.subplots(figsize=(width, height))


def _colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def load_report_data(wh: Warehouse, as_of_date: dt.date) -> dict[str, Any]:
    """Every aggregate the report shows, read from the warehouse."""
    from include.economics.build import profit_concentration
    from include.features.build import NUMERIC_FEATURES
    from include.segmentation.model import available_features, numeric_matrix

    d = {"d": as_of_date}
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
    data["naming"] = wh.query_df(
        "SELECT segment_id, segment_name, name_rule FROM segment_profiles WHERE model_run_id = :m "
        "ORDER BY segment_id", {"m": model_run})
    # Stability and the gate from one source: this date's segmentation (what the gate judged).
    data["stability"] = wh.query_df(
        "SELECT segment_id, segment_name, customers, jaccard, as_of_date FROM segment_profiles "
        "WHERE as_of_date = :d ORDER BY segment_id", d)
    data["run"] = wh.query_df("SELECT * FROM segmentation_runs WHERE as_of_date = :d", d)
    data["identity"] = (wh.query_df("SELECT * FROM identity_runs WHERE as_of_date = :d", d)
                        if wh.has_table("identity_runs") else pd.DataFrame())
    data["transitions"] = (wh.query_df(
        "SELECT from_segment, to_segment, customers, rate, from_date FROM segment_transitions "
        "WHERE to_date = :d", d) if wh.has_table("segment_transitions") else pd.DataFrame())
    data["clv_check"] = (wh.query_df("SELECT * FROM segment_clv_check WHERE as_of_date = :d ORDER BY value_rank", d)
                         if wh.has_table("segment_clv_check") else pd.DataFrame())
    data["priority"] = wh.query_df(
        "SELECT segment_name, value_tier, action, priority, COUNT(*) AS customers FROM customer_priority "
        "WHERE as_of_date = :d GROUP BY segment_name, value_tier, action, priority", d)
    data["personas"] = load_personas_data(wh, as_of_date)  # legacy labels vs segments (include/report/personas.py)
    from include.report.lift import load_lift_data  # experiment sections (include/report/lift.py)
    data["lift"] = load_lift_data(wh, as_of_date)
    return data


def _not_available(what: str, why: str) -> str:
    return f'<p class="na"><b>Not available:</b> {html.escape(what)} — {html.escape(why)}.</p>'


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
    if len(ident):
        i = ident.iloc[-1]
        if bool(i.get("degraded", False)):
            out.append(f"<b>Identity resolution ran degraded</b> (method {e(str(i.get('method')))}): "
                       f"{e(str(i.get('reason') or 'no reason recorded'))}. Customer counts and segments may "
                       "merge or split people differently from a normal run.")
    return out


def _sizes_chart(econ: pd.DataFrame) -> str:
    fig, ax = _figure(8, 0.45 * len(econ) + 0.8)
    econ = econ.sort_values("customers")
    ax.barh(econ["segment_name"], econ["customer_share"] * 100, color=[_colour(int(i)) for i in econ["segment_id"]])
    for y, (share, n) in enumerate(zip(econ["customer_share"], econ["customers"], strict=True)):
        ax.text(share * 100, y, f"  {n:,} ({share:.1%})", va="center")
    ax.set_xlabel("share of customers (%)")
    return _svg(fig)


def _snake_chart(z: pd.DataFrame, names: pd.Series) -> str:
    fig, ax = _figure(9, 3.8)
    x = np.arange(z.shape[1])
    for seg, row in z.iterrows():
        ax.plot(x, row.to_numpy(), marker="o", lw=1.8, color=_colour(int(seg)), label=names.get(seg, seg))
    ax.axhline(0, color="#999", lw=0.8)
    ax.set_xticks(x, [FEATURE_LABELS.get(c, c) for c in z.columns], rotation=30, ha="right")
    ax.set_ylabel("standardised mean (z)")
    ax.legend(frameon=False, fontsize=8, ncol=2)
    return _svg(fig)


def _clv_chart(clv: pd.DataFrame, names: pd.Series, currency: str = "£") -> str:
    segs = [s for s in names.index if s in set(clv["segment_id"])]
    fig, ax = _figure(8, 0.5 * max(len(segs), 1) + 0.8)
    values = [clv.loc[clv["segment_id"] == s, "clv_365d"].to_numpy() for s in segs]
    if segs:
        box = ax.boxplot(values, vert=False, showfliers=False, patch_artist=True, widths=0.6)
        for patch, s in zip(box["boxes"], segs, strict=True):
            patch.set_facecolor(_colour(int(s)))
            patch.set_alpha(0.6)
        ax.set_yticks(range(1, len(segs) + 1), [names[s] for s in segs])
    ax.set_xlabel(f"CLV, next 365 days ({currency}; boxes: quartiles, whiskers: 1.5 IQR)")
    return _svg(fig)


def _curve_chart(curve: pd.DataFrame, payers: float | None) -> str:
    fig, ax = _figure(6, 3.6)
    ax.plot(curve["customer_share"] * 100, curve["profit_share"] * 100, color=PALETTE[0], lw=2)
    ax.axhline(100, color="#999", lw=0.8, ls="--")
    ax.plot([0, 100], [0, 100], color="#bbb", lw=0.8, ls=":")
    if payers is not None and not pd.isna(payers):
        ax.axvline(payers * 100, color=PALETTE[3], lw=1)
        ax.text(payers * 100, 5, f" {payers:.1%} of customers\n produce 100% of profit", color=PALETTE[3])
    ax.set_xlabel("customers, most profitable first (%)")
    ax.set_ylabel("cumulative share of profit (%)")
    return _svg(fig)


def _heat_cell(value: float, scale: float) -> str:
    if pd.isna(value):
        return '<td class="num">—</td>'
    v = max(-1.0, min(1.0, value / scale))
    colour = f"rgba(27,108,168,{abs(v):.2f})" if v > 0 else f"rgba(192,57,43,{abs(v):.2f})"
    return f'<td class="num heat" style="background:{colour}">{value:+.0%}</td>'


def _table(headers: list[str], rows: list[list[str]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"num" if i >= numeric_from else ""}">{c}</td>' for i, c in enumerate(r)) + "</tr>"
        for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


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
    sections = []
    total_profit = econ["profit"].sum()
    top = econ.iloc[0] if len(econ) else None
    losers = econ[econ["profit"] < 0]
    cost_known = bool(len(econ)) and bool(econ["profit"].notna().all())
    profit_text = (f"profit over the last 12 months <b>{money(total_profit, currency)}</b>" if cost_known else
                   "profit <b>unknown</b> (no cost data: no support contacts and no servicing cost configured)")
    headline = [
        f"<b>{int(econ['customers'].sum()):,}</b> customers in <b>{len(econ)}</b> segments; "
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
    banners = _banners(data)
    if banners:
        headline.insert(0, "<b>Read with care:</b> " + " ".join(re.sub(r"</?b>", "", b) for b in banners))
    sections.append(("Headline", "<ul>" + "".join(f"<li>{h}</li>" for h in headline) + "</ul>"))
    sections.append(("Segment sizes", _sizes_chart(econ) if len(econ) else
                     _not_available("segment sizes", "no segment economics for this date")))
    naming = data.get("naming", pd.DataFrame())
    if len(naming):
        rows = [[e(str(r.segment_name)), e(str(r.name_rule))] for r in naming.itertuples()]
        sections.append(("How segments were named", "<p>Each name comes from the segment's standing against the "
                         "others this run (value by revenue and CLV, recency, buying pattern, order value, "
                         "behaviour); a value claim needs CLV to agree.</p>"
                         + _table(["segment", "rule"], rows, numeric_from=2)))
    unavailable = data.get("features_unavailable") or {}
    missing = ("<p class='na'><b>Not available this run</b> (no data; left out of clustering, plots and tables): "
               + e(", ".join(f"{FEATURE_LABELS.get(f, f)} ({why})" for f, why in unavailable.items()))
               + ".</p>") if unavailable else ""
    sections.append(("Snake plot", "<p>Mean of each standardised (log) feature per segment: 0 is the "
                     "population average, ±1 one standard deviation.</p>" + missing
                     + _snake_chart(data["snake"], names)))
    imp = data["importance"]
    rows = [[e(str(names.get(s, s)))] + [_heat_cell(v, 1.0) for v in imp.loc[s]] for s in imp.index]
    head = "".join(f"<th>{e(FEATURE_LABELS.get(c, c))}</th>" for c in imp.columns)
    body = "".join("<tr><td>" + r[0] + "</td>" + "".join(r[1:]) + "</tr>" for r in rows)
    sections.append(("Relative importance", "<p>Segment mean / population mean − 1 (blue: above average, "
                     "red: below).</p>" + missing + f'<div class="scroll"><table><thead><tr><th>segment</th>{head}</tr>'
                     f"</thead><tbody>{body}</tbody></table></div>"))
    sections.append(("CLV distribution", _clv_chart(data["clv"], names, currency) if len(data["clv"]) else
                     _not_available("CLV distribution", "no customer of the published segments has a CLV score "
                                    "for this date")))
    # Discount spend is left out when no order carried a discount this run (a column of zeros says nothing).
    discounts = "discount_share" not in unavailable
    econ_rows = [[e(str(r.segment_name)), f"{r.customers:,}", pct(r.customer_share), money(r.revenue, currency),
                  money(r.gross_margin, currency)] + ([money(r.discount_spend, currency)] if discounts else [])
                 + [_cost(r.cost_to_serve, r, currency), _cost(r.profit, r, currency),
                    _cost(r.profit_per_customer, r, currency), pct(r.profit_share), money(r.mean_clv_365d, currency),
                    money(r.total_clv_365d, currency), pct(getattr(r, "repeat_retention", None)),
                    pct(getattr(r, "alive_share", None)), pct(r.label_stability)]
                 for r in econ.itertuples()]
    headers = ["segment", "customers", "share of customers", "revenue", "gross margin"] + (
        ["discount spend"] if discounts else []) + ["cost to serve", "profit", "profit / customer", "share of profit",
                                                    "mean CLV 365 d", "total CLV 365 d", "repeat retention",
                                                    "alive (P ≥ 0.5)", "label stability"]
    sections.append(("Economics", _table(headers, econ_rows) + "<p class='note'>Last 12 months. Cost to serve = "
                     "support contacts × cost per contact by channel + servicing costs; <i>unknown</i> where the "
                     "business has no support data and no servicing cost is configured. Repeat retention: of the "
                     "segment's customers who bought in the window before the last one, the share who bought again "
                     "in the last window. Alive: share with P(alive) ≥ 0.5 by the CLV model. Label stability: share "
                     "of last run's members still labelled with this segment (hysteresis keeps it high; it is not "
                     "retention)."
                     + ("" if discounts else " Discount spend: not available (no order carried a discount).")
                     + "</p>"))
    curve = data["curve"]
    sections.append(("Profit concentration", _curve_chart(curve, payers_share) if len(curve) else
                     _not_available("profit concentration", "no per-customer profit for this date")))
    stab = data["stability"]
    run = data["run"]
    gate = ""
    if len(run):
        r = run.iloc[0]
        shown = data.get("labels_from")
        gate = (f"<p>Quality gate this run: <b>{'passed' if r['gate_passed'] else 'failed'}</b>"
                f"{'' if r['gate_passed'] else ' — ' + e(str(r['gate_reason']))}."
                f" Bootstrap mean ARI {r['bootstrap_ari']:.2f}. The table shows this run's segments, the numbers "
                "the gate judged"
                + ("" if r["gate_passed"] else f"; the labels shown elsewhere in this report are those published "
                   f"on {shown}") + ".</p>")
    stab_rows = [[e(str(r.segment_name)), f"{r.customers:,}", "—" if pd.isna(r.jaccard) else f"{r.jaccard:.2f}",
                  "—" if pd.isna(r.jaccard) else ("highly stable" if r.jaccard >= 0.85 else "stable"
                                                   if r.jaccard >= 0.75 else "doubtful" if r.jaccard >= 0.5
                                                   else "dissolved")] for r in stab.itertuples()]
    sections.append(("Stability", gate + (_table(["segment", "customers", "bootstrap Jaccard", "reading"], stab_rows)
                                          if stab_rows else _not_available("stability", "no segmentation ran for "
                                                                           "this date"))
                     + "<p class='note'>Hennig's clusterboot: ≥ 0.75 stable, ≥ 0.85 highly stable, "
                     "< 0.5 dissolved.</p>"))
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
        sections.append(("Migration since last run", _not_available("migration", "no earlier published run to "
                                                                   "compare with")))
    chk = data["clv_check"]
    if len(chk):
        rows = [[e(str(r.segment_name)), str(r.value_rank), str(r.clv_rank), money(r.mean_clv_365d, currency),
                 pct(r.mean_p_alive), "⚠ " + e(str(r.reason)) if r.flag else "consistent"] for r in chk.itertuples()]
        sections.append(("CLV cross-check", _table(["segment", "value rank", "CLV rank", "mean CLV 365 d",
                                                    "mean P(alive)", "check"], rows)))
    else:
        sections.append(("CLV cross-check", _not_available("CLV cross-check", "the cross-check has not run for "
                                                           "this date")))
    pr = data["priority"]
    if len(pr):
        wide = pr.pivot_table(index=["segment_name", "value_tier", "action"], columns="priority",
                              values="customers", aggfunc="sum").fillna(0).reset_index()
        order = [p for p in ("critical", "high", "medium", "low") if p in wide.columns]
        rows = [[e(str(r["segment_name"])), e(str(r["value_tier"])), e(str(r["action"]))]
                + [f"{int(r[p]):,}" for p in order] for _, r in wide.iterrows()]
        sections.append(("Playbook", _table(["segment", "value tier", "recommended action", *order], rows,
                                            numeric_from=3)
                         + "<p class='note'>Priority layers churn risk (1 − P(alive)) on the segment's value tier: "
                         "high value + high risk = critical; dormant + high risk = low.</p>"))
    sections += personas_sections(data.get("personas"))
    if "lift" in data:
        from include.report.lift import lift_sections

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
<code>segment_economics</code>, <code>segment_profiles</code>, <code>customer_clv</code>, <code>segment_transitions</code></div>
</header><nav>{nav}</nav><main>{banner_html}{body}</main></body></html>
"""


def write_report(wh: Warehouse, as_of_date: dt.date, folder: Path, payers_share: float | None = None,
                 currency: str = "£", currency_code: str | None = None) -> Path:
    """Render the report of ``as_of_date`` into ``folder`` with money in ``currency``; return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = report_path(folder, as_of_date)
    page = render_report(load_report_data(wh, as_of_date), payers_share=payers_share, currency=currency,
                         currency_code=currency_code)
    path.write_text(page, encoding="utf-8")
    return path


def report_path(folder: Path, as_of_date: dt.date) -> Path:
    """Where the report of ``as_of_date`` is written."""
    return folder / f"segment_report_{as_of_date.isoformat()}.html"
