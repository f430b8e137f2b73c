"""The report's shared rendering helpers: money and shares as text, tables, charts as inline SVG, "not available".

Every section module (``html.py``, ``lift.py``, ``personas.py``) imports from
here and from nowhere else in the package for rendering, so no section module
imports another's (no import circle: ``html.py`` assembles the page from the
sections). Only aggregates reach these helpers; they add no data of their own.
"""

from __future__ import annotations

import html
import io
from typing import Any

import pandas as pd

#: What is said where profit or cost to serve is unknown: that it cannot be measured, and what would measure it.
NO_COST = ("cannot be measured: no cost data (no support contacts loaded and no servicing cost configured; "
           "set servicing_cost_per_customer or servicing_cost_per_order, or load support contacts)")

PALETTE = ("#1b6ca8", "#e07b39", "#3a9d5d", "#c0392b", "#8e6bbf", "#8c6d31", "#d35f9f", "#5f6b6d",
           "#17a2b8", "#b8a31b")


def money(value: float, symbol: str = "£") -> str:
    """``£1,234`` / ``-£56`` (whole units); an em dash for missing values."""
    if value is None or pd.isna(value):
        return "—"
    sign = "-" if value < 0 else ""
    return f"{sign}{symbol}{abs(value):,.0f}"


def pct(value: float, digits: int = 1) -> str:
    """``12.3%``; an em dash for missing values."""
    if value is None or pd.isna(value):
        return "—"
    return f"{100 * value:.{digits}f}%"


def cost(value: float, row: Any, symbol: str) -> str:
    """A cost or profit figure, or *unknown* where the business has no cost data (never an invented 0)."""
    if value is None or pd.isna(value):
        known = getattr(row, "cost_known", None)
        return "<i>unknown</i>" if known is not None and not pd.isna(known) and not bool(known) else "—"
    return money(value, symbol)


def is_true(value: Any) -> bool:
    """``True`` only for a recorded true flag: ``None``, NaN and ``pd.NA`` (not recorded) are not true."""
    if value is None:
        return False
    try:
        if pd.isna(value):
            return False
    except (TypeError, ValueError):
        pass
    return bool(value)


def svg(fig) -> str:
    """A matplotlib figure as inline SVG (no XML prolog, no render-time metadata); closes the figure."""
    buf = io.StringIO()
    # No metadata block: it carries the render time (the report must be reproducible).
    fig.savefig(buf, format="svg", bbox_inches="tight",
                metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and DOCTYPE: inline SVG in HTML5


def figure(width: float = 8, height: float = 3.6):
    """``(fig, ax)`` in the report's style (Agg backend, paths for text, a fixed hash salt)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "path", "font.size": 9, "axes.spines.top": False,
                         "axes.spines.right": False, "svg.hashsalt": "segment-report"})
    return plt.subplots(figsize=(width, height))


def colour(i: int) -> str:
    """The palette colour of segment (or series) ``i``."""
    return PALETTE[i % len(PALETTE)]


def table(headers: list[str], rows: list[list[str]], numeric_from: int = 1,
          numeric: set[int] | None = None) -> str:
    """An HTML table; cells are HTML already (escape text before).

    Columns from ``numeric_from`` on are right-aligned figures (or exactly the
    columns in ``numeric``, when given); all-empty ``headers`` give a table
    without a header row (a list of labelled values).
    """
    numeric = set(numeric) if numeric is not None else None

    def cls(i: int) -> str:
        return "num" if (i in numeric if numeric is not None else i >= numeric_from) else ""

    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="{cls(i)}">{c}</td>' for i, c in enumerate(r)) + "</tr>"
                   for r in rows)
    thead = f"<thead><tr>{head}</tr></thead>" if any(headers) else ""
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def not_available(what: str, why: str) -> str:
    """The report's "Not available: <what> — <why>." note."""
    return f'<p class="na"><b>Not available:</b> {html.escape(what)} — {html.escape(why)}.</p>'


def heat_cell(value: float, scale: float) -> str:
    """A table cell shaded blue (above 0) or red (below), ``value`` shown as a signed percentage."""
    if pd.isna(value):
        return '<td class="num">—</td>'
    v = max(-1.0, min(1.0, value / scale))
    shade = f"rgba(27,108,168,{abs(v):.2f})" if v > 0 else f"rgba(192,57,43,{abs(v):.2f})"
    return f'<td class="num heat" style="background:{shade}">{value:+.0%}</td>'
