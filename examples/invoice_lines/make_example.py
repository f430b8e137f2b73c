"""How the example's invoice-line export was made (re-running it rewrites it identically).

A small web shop's year of invoice lines, the shape of the UCI Online Retail data set
(``include/demo/invoice_lines.py``): cancellations as ``C`` invoices with negative
quantities, customer ids written as floats (``17850.0``), a quarter of the lines from
guests, a few wholesale buyers, and three bad values real exports carry (a quantity of
``n/a``, an invoice dated ``1/1/0001``, a unit price of ``1e308``).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from include.demo.invoice_lines import generate_invoice_lines, plant_bad_values  # noqa: E402


def main(customers: int = 300, seed: int = 8) -> None:
    lines = plant_bad_values(generate_invoice_lines(customers, seed=seed, lines_per_invoice=4.0))
    lines.to_csv(HERE / "invoice_lines.csv", index=False)
    print(f"invoice_lines.csv: {len(lines)} lines")


if __name__ == "__main__":
    main()
