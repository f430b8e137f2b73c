"""Does the measured lift recover the planted effects? Full-size weekly runs with a 10% holdout.

    .venv/bin/python benchmarks/bench_lift.py --customers 10000 --weeks 10

Generates ``--customers`` persons whose data end ``--weeks`` after the first
run, with the playbook's effects planted from the day after it (retention
+``--retention-effect`` for treated high-value-core persons, support cost
-``--cost-effect`` for treated costly-tail persons; holdouts get none), then
runs the experiment stage for every weekly date with only the stages lift
needs (``tests/experiment/harness.py``: extract-like staging, identity from
the generator's truth with the pipeline's key rule, the planted archetype as
the segment). Prints, for the last date, planted vs measured lift with its 95%
interval per segment and outcome, and over all weeks how often the interval
covered the planted value and how often a segment without an effect had an
interval excluding 0.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402

from include.experiment.build import ExperimentSettings  # noqa: E402
from tests.experiment import harness  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--weeks", type=int, default=10, help="weekly runs after the policy's first run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--holdout-share", type=float, default=0.10)
    parser.add_argument("--retention-window-days", type=int, default=90)
    parser.add_argument("--retention-effect", type=float, default=0.06)
    parser.add_argument("--cost-effect", type=float, default=0.18)
    parser.add_argument("--first-run", type=dt.date.fromisoformat, default=dt.date(2026, 9, 5))
    args = parser.parse_args(argv)
    settings = ExperimentSettings(holdout_share=args.holdout_share, retention_window_days=args.retention_window_days)
    started, cpu0 = time.perf_counter(), time.process_time()
    tables = harness.generate(args.customers, args.seed, args.first_run, args.weeks,
                              retention_effect=args.retention_effect, cost_effect=args.cost_effect,
                              holdout_share=args.holdout_share, retention_window_days=args.retention_window_days)
    generated = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        url = f"duckdb:///{Path(tmp) / 'lift.duckdb'}"
        harness.load(url, tables)
        weekly = []
        for day in harness.weekly_dates(args.first_run, args.weeks):
            t0 = time.perf_counter()
            lift = harness.run_week(url, day, settings)
            weekly.append((day, time.perf_counter() - t0,
                           harness.recovery(lift, harness.planted_truth(url, day, args.first_run, settings))))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    truth = tables["truth_policy"].iloc[0]
    print(f"{args.customers:,} persons, seed {args.seed}, holdout {args.holdout_share:.0%}, retention window "
          f"{args.retention_window_days} d, policy from {args.first_run + dt.timedelta(days=1)}, "
          f"{args.weeks} weekly runs after it")
    print(f"retention effect asked {args.retention_effect:.3f}, baseline retention of the archetype "
          f"{truth['retention_baseline']:.3f}, planted {truth['retention_effect_planted']:.3f} "
          f"(share kept {truth['keep_share']:.2f}); cost effect {args.cost_effect:.0%}")
    day, _, last = weekly[-1]
    pd.set_option("display.width", 200)
    show = last[["segment_name", "metric", "n_treated", "n_holdout", "planted", "lift", "ci_low", "ci_high",
                 "relative_lift", "relative_ci_low", "relative_ci_high", "covered"]]
    print(f"\nlast run ({day}): planted vs measured (money per customer over the last "
          f"{min(args.retention_window_days, args.weeks * 7)} days)")
    print(show.round(4).to_string(index=False))
    every = pd.concat([r.assign(as_of_date=d) for d, _, r in weekly[1:]], ignore_index=True)
    effect = every[every["planted"].abs() > 1e-9]
    null = every[(every["planted"].abs() <= 1e-9) & every["ci_low"].notna()]
    print(f"\nover the {args.weeks} runs after the policy date: planted effects covered in "
          f"{effect['covered'].mean():.0%} of {len(effect)} intervals; segments without an effect: "
          f"{null['excludes_zero'].mean():.1%} of {len(null)} intervals exclude 0 (5% expected by chance)")
    for (name, metric), g in effect.groupby(["segment_name", "metric"]):
        print(f"  {name:16s} {metric:14s} covered {g['covered'].mean():.0%}, "
              f"excludes 0 in {g['excludes_zero'].mean():.0%} of runs")
    print(f"\ngenerate {generated:.1f} s; weekly runs {sum(w for _, w, _ in weekly):.1f} s "
          f"({len(weekly)} runs); total {wall:.1f} s wall, {cpu:.1f} s CPU; peak RSS {peak:,.0f} MB")


if __name__ == "__main__":
    main()
