"""Command line: ``python -m include.load --mapping mapping.toml [--warehouse-url URL]``."""

from __future__ import annotations

import argparse
import logging
import sys

from include.load.loader import load_mapping
from include.load.mapping import MappingError, read_mapping


def main(argv: list[str] | None = None) -> int:
    from include.runtime.paths import default_warehouse_url

    parser = argparse.ArgumentParser(
        prog="python -m include.load",
        description="Load CSV, Parquet, whitespace or fixed-width files, or warehouse queries, into the raw_* "
                    "tables through a mapping file (examples/*/mapping.toml).",
    )
    parser.add_argument("--mapping", required=True, help="mapping TOML (see examples/shop/mapping.toml)")
    parser.add_argument("--warehouse-url", default=None,
                        help="SQLAlchemy URL (default: $WAREHOUSE_URL or the embedded DuckDB file)")
    parser.add_argument("--table", action="append", dest="tables", default=None,
                        help="load only this raw_* table (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    url = args.warehouse_url or default_warehouse_url()
    try:
        results = load_mapping(read_mapping(args.mapping), url, progress=not args.quiet, tables=args.tables)
    except MappingError as exc:
        print(f"mapping error: {exc}", file=sys.stderr)
        return 2
    for result in results:
        print(f"{result.table:24s} {result.rows:>12,d} rows  <- {result.source}")
        # Every input row accounted for: loaded + as returns + aggregated + quarantined + guests = in.
        print(f"{'':24s} {result.summary()}")
    print(f"warehouse: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
