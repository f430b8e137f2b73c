"""A warehouse of either dialect for tests: a DuckDB file, or Snowflake's dialect through fakesnow."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from include.runtime.warehouse import Warehouse


@contextlib.contextmanager
def warehouse(kind: str, tmp_path) -> Iterator[Warehouse]:
    """``kind`` is ``duckdb`` (a fresh file under ``tmp_path``) or ``snowflake`` (fakesnow, in memory)."""
    if kind == "duckdb":
        with Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}") as wh:
            yield wh
    else:
        import fakesnow

        with fakesnow.patch(), Warehouse("snowflake://user:pw@account/analytics/public") as wh:
            yield wh
