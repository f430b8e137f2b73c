"""CLV of every customer from a fitted model, scored in fixed-size chunks read from the warehouse.

At 50 million customers the purchase and spend models are fitted on a sample
(their parameters are population-level: 4 for BG/NBD or MBG/NBD, 3 for
Gamma-Gamma) and every customer is then scored from the point estimates
(docs/scaling.md). Scoring a customer needs only that customer's
``frequency, recency, t, monetary_value``, so the date's ``clv_summary`` is
streamed in fixed-size chunks (``clv_summary_rows`` in
``include/sql/segment_assign.sql``, read by
:func:`include.segmentation.scoring.read_in_chunks`) and each chunk goes through
:func:`include.clv.models.score_customers`, the closed forms the CLV stage
writes ``customer_clv`` with (checked against pymc-marketing and lifetimes in
``tests/clv``): memory holds one chunk whatever the number of customers, and a
chunked score equals a one-shot score row for row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pandas as pd

from include.clv.errors import ClvInputError
from include.clv.models import ClvSettings, GammaGammaSpend, PurchaseModel, _check_columns, score_customers
from include.runtime.warehouse import Warehouse
from include.segmentation.scoring import DEFAULT_CHUNK_ROWS, read_in_chunks

#: Columns of ``clv_summary`` a score reads.
SUMMARY_COLUMNS = ("frequency", "recency", "t", "monetary_value")


def score_chunk(bg: PurchaseModel, gg: GammaGammaSpend, summary: pd.DataFrame, settings: ClvSettings,
                source: str = "clv_summary") -> pd.DataFrame:
    """``customer_clv`` rows of one chunk; bad input is named (table, column, a customer_key)."""
    _check_columns(summary, list(SUMMARY_COLUMNS), source)
    late = summary["recency"] > summary["t"] + 1e-9
    if late.any():
        raise ClvInputError(f"{source}: recency greater than t in {int(late.sum())} row(s), "
                         f"e.g. customer_key={summary.loc[late, 'customer_key'].iloc[0]!r}")
    return score_customers(bg, gg, summary, settings)


def score_clv_in_chunks(wh: Warehouse, bg: PurchaseModel, gg: GammaGammaSpend, settings: ClvSettings,
                        as_of_date: dt.date, sink: Callable[[pd.DataFrame], None], *,
                        source: str = "clv_summary", chunk_rows: int = DEFAULT_CHUNK_ROWS) -> int:
    """Score the date's full-period summary chunk by chunk; hand each scored frame to ``sink``.

    ``sink`` writes or collects the chunk (e.g. ``Warehouse.insert_df`` into
    ``customer_clv`` after adding ``as_of_date`` and ``model_run_id``); returns the
    number of customers scored.
    """
    total = 0
    for chunk in read_in_chunks(wh, "clv_summary_rows", "", as_of_date, source, chunk_rows):
        sink(score_chunk(bg, gg, chunk, settings, source))
        total += len(chunk)
    return total
