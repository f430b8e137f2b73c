"""The currency a run's amounts are in: the run's settings, else what the loaded data declares.

``python -m include.load`` records each loaded table's currency (the mapping's
``currency``) in ``load_manifest``. A run that does not set ``currency_code``
uses that currency; a run that sets one must agree with it, because the
amounts are whatever the files held and a label cannot convert them. Data
that declares no currency (tables written by other means, the demo generator)
gets :data:`FALLBACK_CURRENCY`, with a warning in the task's log.
"""

from __future__ import annotations

import logging
from typing import Any

from include.runtime.errors import BadDataError

log = logging.getLogger(__name__)

#: Currency of runs whose settings and data name none (the project's historical default).
FALLBACK_CURRENCY = "GBP"


class CurrencyConflictError(BadDataError):
    """The loaded tables declare more than one currency, or another one than the run's settings."""


def currency_symbol(code: str) -> str:
    """The symbol money in ``code`` is shown with in English (``EUR`` -> ``€``, ``USD`` -> ``$``).

    From Babel's CLDR data (a dependency already installed with Airflow) rather than a
    hand-kept table; a code CLDR does not know is shown as the code itself.
    """
    from babel.numbers import get_currency_symbol

    return get_currency_symbol(code, locale="en")


def declared_currencies(wh: Any) -> dict[str, list[str]]:
    """``{currency: [tables]}`` from ``load_manifest`` (empty when nothing declared one).

    ``wh`` is a :class:`~include.runtime.warehouse.Warehouse`; a warehouse without a
    ``load_manifest`` table (never loaded through ``include.load``) declares nothing.
    """
    if "load_manifest" not in wh.schema_columns():
        return {}
    frame = wh.query_df("SELECT table_name, UPPER(TRIM(currency)) AS currency FROM load_manifest "
                        "WHERE currency IS NOT NULL AND TRIM(currency) <> '' ORDER BY table_name")
    return {code: sorted(group["table_name"]) for code, group in frame.groupby("currency")}


def run_currency(wh: Any, code: str | None = None, symbol: str | None = None) -> tuple[str, str]:
    """The run's ``(currency_code, currency_symbol)``.

    Parameters
    ----------
    wh
        The warehouse, whose ``load_manifest`` says what currency the loaded tables are in.
    code, symbol
        The run's ``currency_code`` / ``currency_symbol`` settings; ``None`` = not set.

    Raises
    ------
    CurrencyConflictError
        The loaded tables declare two or more currencies (amounts in different currencies
        cannot be summed), or ``code`` differs from the one they declare.
    """
    declared = declared_currencies(wh)
    listing = "; ".join(f"{c} ({', '.join(tables)})" for c, tables in declared.items())
    if len(declared) > 1:
        raise CurrencyConflictError(
            f"load_manifest.currency: the loaded tables declare more than one currency: {listing}. Amounts "
            "in different currencies cannot be added up; load them converted to one currency (the mapping's "
            "currency, per table or in [defaults])")
    if code is None:
        if declared:
            code = next(iter(declared))
            log.info("currency %s, as load_manifest declares for %s", code, listing)
        else:
            code = FALLBACK_CURRENCY
            log.warning("no currency set (currency_code) and none declared in load_manifest; amounts are "
                        "shown as %s", code)
    elif declared and code not in declared:
        raise CurrencyConflictError(
            f"setting currency_code={code!r}, but load_manifest.currency declares {listing}: the amounts are "
            f"in {next(iter(declared))}; leave currency_code empty or set it to that")
    return code, symbol or currency_symbol(code)
