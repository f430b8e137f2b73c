"""Right to erasure: remove a person from the warehouse and the CRMs, and keep them out of later loads.

``python -m include.erasure --source-id web:W10001`` or the DAG param
``erase_source_ids`` (see :mod:`include.erasure.erase`).
"""

from include.erasure.erase import (
    ErasureRequestError,
    ErasureResult,
    compact_duckdb,
    erase,
    erase_requested,
    id_hash,
    parse_source_ids,
    remove_erased_rows,
)

__all__ = ["ErasureRequestError", "ErasureResult", "compact_duckdb", "erase", "erase_requested", "id_hash",
           "parse_source_ids", "remove_erased_rows"]
