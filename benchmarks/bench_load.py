"""Time loading a UCI-size invoice-line export (and extracting it) through the example mapping.

    .venv/bin/python benchmarks/bench_load.py                 # 541,909 lines, 4,372 customers
    .venv/bin/python benchmarks/bench_load.py --lines 100000  # smaller

Writes the export with ``include/demo/invoice_lines.py`` (not timed; cut to exactly ``--lines``
lines), loads it with ``examples/invoice_lines/mapping.toml`` (one order per invoice, cancellations
to ``raw_returns``, customers derived from the orders, guests counted) into a fresh DuckDB file, then
runs extract. Prints wall and CPU seconds of each step (CPU counts DuckDB's threads; the steadier figure
on a shared machine), peak memory and the load average at the start and the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from include.demo.invoice_lines import generate_invoice_lines  # noqa: E402
from include.extract.validate import extract_and_validate  # noqa: E402
from include.load import load_mapping, read_mapping  # noqa: E402
from include.runtime.warehouse import Warehouse  # noqa: E402


def timed(label: str, fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{label:10s} {wall:7.1f} s wall {cpu:7.1f} s CPU")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=541_909)
    parser.add_argument("--customers", type=int, default=4372)
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-load-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        lines = generate_invoice_lines(args.customers)
        if len(lines) < args.lines:
            raise SystemExit(f"the generator made {len(lines):,} lines, fewer than --lines {args.lines:,}")
        lines.head(args.lines).to_csv(work / "invoice_lines.csv", index=False)
        shutil.copy(ROOT / "examples" / "invoice_lines" / "mapping.toml", work / "mapping.toml")
        url = f"duckdb:///{work / 'warehouse.duckdb'}"
        print(f"{args.lines:,} invoice lines, {(work / 'invoice_lines.csv').stat().st_size / 1e6:.1f} MB; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        results = timed("load", lambda: load_mapping(read_mapping(work / "mapping.toml"), url, progress=False))
        for r in results:
            print(f"  {r.table:22s} {r.summary()}")
        with Warehouse(url) as wh:
            reports = timed("extract", lambda: extract_and_validate(wh, dt.date(2011, 12, 9)))
        staged = {r.table: r.rows_staged for r in reports if r.present}
        print(f"  staged: {staged}")
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
        print(f"peak RSS {peak:.2f} GB; load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
