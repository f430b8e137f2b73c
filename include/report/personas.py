"""The report's "Legacy labels vs segments" section: old groups beside the new, for finance and marketing.

Reads the aggregates ``compare_schemes`` wrote (``scheme_variance``,
``legacy_crosstab``, ``legacy_label_summary``) and renders, inline and without
scripts: a one-sentence verdict, bars of the share of profit and CLV variance
each scheme explains (omega squared, with eta squared marked), the coverage and
conflicts of each legacy scheme, and one heatmap per legacy scheme (legacy
label × published segment, share of the label's customers). Labels and
segment names only: no customer keys or personal data.
"""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

import pandas as pd

from include.comparison.schemes import BASES, MEASURE_WORDS, MEASURES, verdict
from include.runtime.warehouse import Warehouse, named_sql

TITLE = "Legacy labels vs segments"
_KIND_COLOUR = {"behavioural": "#1b6ca8", "rfm": "#5f6b6d", "legacy": "#e07b39"}
_KIND_ORDER = {"behavioural": 0, "rfm": 1, "legacy": 2}


def load_personas_data(wh: Warehouse, as_of_date: dt.date) -> dict[str, pd.DataFrame]:
    """The comparison tables of ``as_of_date`` (empty frames where the stage has not run)."""
    sql = named_sql("comparison.sql")
    d = {"as_of_date": as_of_date}
    data = {}
    for key, table, name in (("variance", "scheme_variance", "report_variance"),
                             ("crosstab", "legacy_crosstab", "report_crosstab"),
                             ("summary", "legacy_label_summary", "report_summary")):
        data[key] = wh.query_df(sql[name], d) if wh.has_table(table) else pd.DataFrame()
    return data


def personas_sections(data: dict[str, pd.DataFrame] | None) -> list[tuple[str, str]]:
    """``[(title, html)]`` for the report; empty when ``data`` is ``None`` (not loaded)."""
    if data is None:
        return []
    e = html.escape
    variance = data.get("variance", pd.DataFrame())
    if variance.empty:
        return [(TITLE, "<p class='na'><b>Not available</b>: the scheme comparison has not run for this date.</p>")]
    crosstab, summary = data.get("crosstab", pd.DataFrame()), data.get("summary", pd.DataFrame())
    parts = [f"<p><b>Verdict:</b> {e(verdict(variance))}</p>"]
    if summary.empty:
        parts.append("<p class='na'>No legacy labels (no <code>raw_legacy_labels</code> staged for this date): "
                     "the behavioural segments are compared with the classic RFM map only.</p>")
    parts.append("<p>Share of the customers' variance between each scheme's groups. Bars: omega squared, "
                 "which subtracts what that many groups would explain by chance, so schemes with more groups "
                 "are not favoured; the tick marks eta squared (SS<sub>between</sub> / SS<sub>total</sub>). "
                 "<i>Amounts</i>: the money, whose variance the largest customers dominate; <i>ranked</i>: "
                 "the customers' order by the measure (how well the groups sort customers by value). "
                 "Every scheme is scored on the same customers; customers a legacy scheme leaves unlabelled "
                 "are its group “(no label)”.</p>")
    parts.append(_variance_bars(variance))
    if not summary.empty:
        rows = [[e(str(r.scheme)), f"{int(r.labels):,}", f"{int(r.customers_labelled):,}",
                 f"{100 * r.coverage:.1f}%", f"{int(r.conflicts):,}", f"{int(r.records_staged):,}"]
                for r in summary.itertuples()]
        parts.append(_table(["legacy scheme", "labels", "customers labelled", "coverage",
                             "customers with conflicting records", "label rows staged"], rows))
        parts.append("<p class='note'>A customer whose records carry different labels gets the most recent "
                     "one (valid_from), then the one most of their records carry, then the first "
                     "alphabetically.</p>")
    for scheme, cells in crosstab.groupby("scheme", sort=True) if len(crosstab) else []:
        parts.append(f"<h3>“{e(str(scheme))}” by segment</h3>" + _heatmap(cells))
    parts.append("<p class='note'>Rows: the legacy label; cells: share of its customers in each published "
                 "segment (customers in brackets).</p>" if len(crosstab) else "")
    return [(TITLE, "".join(parts))]


def _scheme_label(scheme: str, kind: str) -> str:
    if kind == "legacy":
        return f"legacy: {scheme}"
    return "behavioural segments" if kind == "behavioural" else "RFM map"


def _variance_bars(variance: pd.DataFrame) -> str:
    """Inline SVG: per measure, one bar per scheme (omega squared), eta squared as a tick."""
    label_w, bar_w, row_h, head_h = 230, 380, 22, 24
    rows = []
    y = 0
    if "basis" not in variance:
        variance = variance.assign(basis="amount")
    for measure, basis in ((m, b) for m in MEASURES for b in BASES):
        block = variance[(variance["measure"] == measure) & (variance["basis"] == basis)]
        if block.empty:
            continue
        block = block.assign(_order=block["scheme_kind"].map(_KIND_ORDER)).sort_values(["_order", "scheme"])
        title = MEASURE_WORDS[measure] + (" (amounts)" if basis == "amount" else ": customers ranked by it")
        rows.append(f'<text x="0" y="{y + 16}" font-weight="600">{html.escape(title)}</text>')
        y += head_h
        for r in block.itertuples():
            omega = 0.0 if pd.isna(r.omega_squared) else max(float(r.omega_squared), 0.0)
            eta = 0.0 if pd.isna(r.eta_squared) else float(r.eta_squared)
            name = html.escape(_scheme_label(str(r.scheme), str(r.scheme_kind)))
            value = "—" if pd.isna(r.omega_squared) else f"{100 * omega:.1f}% (eta² {100 * eta:.1f}%)"
            rows.append(
                f'<text x="{label_w - 8}" y="{y + 14}" text-anchor="end">{name} ({int(r.groups)})</text>'
                f'<rect x="{label_w}" y="{y + 3}" width="{bar_w}" height="14" fill="#f0f2f5"/>'
                f'<rect x="{label_w}" y="{y + 3}" width="{bar_w * min(omega, 1.0):.1f}" height="14" '
                f'fill="{_KIND_COLOUR.get(str(r.scheme_kind), "#888")}"><title>{name}: {value}</title></rect>'
                f'<line x1="{label_w + bar_w * min(eta, 1.0):.1f}" x2="{label_w + bar_w * min(eta, 1.0):.1f}" '
                f'y1="{y + 1}" y2="{y + 19}" stroke="#222" stroke-width="2"/>'
                f'<text x="{label_w + bar_w + 8}" y="{y + 14}">{value}</text>')
            y += row_h
        y += 8
    width = label_w + bar_w + 170
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" viewBox="0 0 {width} {y}" '
            f'font-family="system-ui, sans-serif" font-size="12" role="img" '
            f'aria-label="variance explained per scheme">{"".join(rows)}</svg>')


def _heatmap(cells: pd.DataFrame) -> str:
    e = html.escape
    segments = cells.drop_duplicates("segment_id").sort_values("segment_id")
    head = "".join(f"<th>{e(str(n))}</th>" for n in segments["segment_name"])
    body = []
    for label, row in cells.groupby("legacy_label", sort=True):
        by_segment = row.set_index("segment_id")
        tds = []
        for seg in segments["segment_id"]:
            if seg in by_segment.index:
                share, n = float(by_segment.at[seg, "row_share"]), int(by_segment.at[seg, "customers"])
                ink = "#fff" if share > 0.55 else "#222"
                tds.append(f'<td class="num heat" style="background:rgba(27,108,168,{share:.2f});color:{ink}">'
                           f"{100 * share:.0f}% ({n:,})</td>")
            else:
                tds.append('<td class="num">—</td>')
        total = int(row["customers"].sum())
        body.append(f"<tr><td>{e(str(label))} <span class='note'>({total:,})</span></td>{''.join(tds)}</tr>")
    return (f'<div class="scroll"><table><thead><tr><th>legacy label \\ segment</th>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="{"num" if i else ""}">{c}</td>' for i, c in enumerate(r)) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
