"""Command line: ``python -m include.erasure --source-id SYSTEM:ID [...] [--ids-file FILE] [--warehouse-url URL]``.

Erases the person holding any of the given source ids (see
:mod:`include.erasure.erase`) and prints what was done, in counts. The ids can
come from a file (one ``system:id`` per line) so they stay out of the shell's
history and the process list. The clears reach each CRM target at its next
push (``push_<target>`` of the next DAG run, or the operator run by hand).
``--log`` prints the audit table ``erasure_log``. ``--compact`` (with or without
ids) rewrites an embedded DuckDB file so the deleted rows' bytes are gone too: run
it once the CRM clears went out (``erasure_log.crm_records_cleared`` equals
``crm_records_to_clear``; acknowledging a clear deletes the last state row) and
when no task is using the warehouse (it needs the file to itself).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from include.erasure.erase import ErasureRequestError, compact_duckdb, erase
    from include.runtime.paths import default_warehouse_url
    from include.runtime.warehouse import Warehouse

    parser = argparse.ArgumentParser(prog="python -m include.erasure", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source-id", action="append", default=[], metavar="SYSTEM:ID",
                        help="a source id of the person (repeatable), e.g. web:W10001")
    parser.add_argument("--ids-file", type=Path, help="a file with one SYSTEM:ID per line")
    parser.add_argument("--requested-by", default="command", help="who asked (recorded in erasure_log)")
    parser.add_argument("--warehouse-url", default=None,
                        help="SQLAlchemy URL (default: $WAREHOUSE_URL or the embedded DuckDB file)")
    parser.add_argument("--log", action="store_true", help="print erasure_log and exit")
    parser.add_argument("--compact", action="store_true",
                        help="then rewrite the embedded DuckDB file without the freed blocks that still hold "
                             "deleted values (needs the file to itself)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    url = args.warehouse_url or default_warehouse_url()
    with Warehouse(url) as wh:
        if args.log:
            wh.ensure_schema()
            print(wh.query_df("SELECT * FROM erasure_log ORDER BY requested_at").to_string(index=False))
            return 0
        ids = list(args.source_id)
        if args.ids_file:
            ids += [line.strip() for line in args.ids_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        summary: dict = {}
        if ids or not args.compact:
            try:
                summary = erase(wh, ids, requested_by=args.requested_by).summary()
            except ErasureRequestError as exc:
                print(f"erasure error: {exc}", file=sys.stderr)
                return 2
    if args.compact:
        try:
            summary["file_bytes_before"], summary["file_bytes_after"] = compact_duckdb(url)
        except ErasureRequestError as exc:
            print(f"erasure done, compaction refused: {exc}", file=sys.stderr)
            print(json.dumps(summary, indent=1))
            return 2
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
