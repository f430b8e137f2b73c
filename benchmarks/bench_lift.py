"""Does the measured lift recover the planted effects on the pipeline's own segments?

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_lift.py --customers 10000 --weeks 8 --data-dir /tmp/lift-bench

1. **Pipeline** (skipped when ``--data-dir`` already holds every date):
   generates ``--customers`` persons with the playbook's effects planted from
   the day after the first run (treated high-value-core persons kept buying,
   treated costly-tail persons lose 18% of their support contacts; holdouts
   get none), then runs the real stages for the first run and ``--weeks``
   weekly dates after it, in process, exactly the functions the DAG calls
   (``include.stages.stage``: extract, identity, features, segmentation,
   CLV, cross-check, publish, migration, economics, experiment).
   Each date's labels count as delivered (the DAG pushes after the experiment;
   the benchmark records the audit row that push leaves, ``crm_push_log``).
2. **Recovery**: the experiment stage is re-run for the first date (cheap; it
   is the code under test, and it recomputes every later date, as after a
   backfill) and each pipeline segment's measured lift is set
   beside its *expected* effect, computed on the benchmark side only from the
   generator's truth tables: per customer the outcome with and without the
   planted changes (``truth_policy_changes``), averaged over the segment's
   treated arm minus its holdout arm. A pipeline segment is a mix of
   archetypes, so this is the archetypes' shares times their planted effects;
   the mix is printed. Nothing here depends on particular segment ids or names.
3. **Calibration** (no effect by construction): the holdout flags of the
   measured customers are redrawn ``--redraws`` times (a new random 10%, the
   outcomes kept), the estimator is run on every redraw, and the share of 95%
   intervals that exclude 0 is counted per outcome: it must be about 5% for
   the per-segment interval. The family-wise error, the share of redraws in
   which ANY segment's interval of an outcome excludes 0, must be about 5% or
   less for the simultaneous interval (the per-segment one reaches 20-30% with
   six segments); over all outcomes at once it is printed too (not controlled:
   the family is one outcome, see ``include/experiment/lift.py``).

Both interval kinds are shown everywhere: "all-at-once" (simultaneous, what
the report decides "changed" by) and "alone" (per segment).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tests.experiment.harness import (  # noqa: E402,I001
    archetype_mix,
    calibration,
    expected_lift,
    familywise_error,
    planted_per_customer,
    record_delivery,
    recovery_table,
)


def lift_lines(table: pd.DataFrame) -> str:
    """The recovery table of one run as fixed-width text, values as shown in the report (points, money)."""

    def v(metric: str, x: float) -> str:
        if x != x:
            return "-"
        return f"{100 * x:+.1f}pt" if metric == "retention" else f"{x:+.2f}"

    def iv(metric: str, lo: float, hi: float) -> str:
        return f"[{v(metric, lo)}, {v(metric, hi)}]" if lo == lo else "-"

    lines = [f"  {'segment':34s} {'outcome':13s} {'expected':>9} {'lift':>9} {'all-at-once (m)':>24} "
             f"{'alone':>20} {'MDE':>8} {'cov':>5} {'n treated/holdout':>17}"]
    for r in table.itertuples(index=False):
        mde = f"{100 * r.mde:.1f}pt" if r.metric == "retention" and r.mde == r.mde else (
            f"{r.mde:.2f}" if r.mde == r.mde else "-")
        cov = ("y" if r.covered_sim else "n") + "/" + ("y" if r.covered else "n") if r.ci_low == r.ci_low else "-"
        lines.append(f"  {r.segment_name[:34]:34s} {r.metric:13s} {v(r.metric, r.expected):>9} {v(r.metric, r.lift):>9} "
                     f"{iv(r.metric, r.simultaneous_low, r.simultaneous_high) + f' ({int(r.family_size)})':>24} "
                     f"{iv(r.metric, r.ci_low, r.ci_high):>20} {mde:>8} {cov:>5} "
                     f"{int(r.n_treated):>8,d}/{int(r.n_holdout):<8,d}")
    return "\n".join(lines)

PIPELINE = ("extract_validate", "resolve_identity", "build_features", "segment_customers", "fit_clv",
            "backtest_claims", "label_segments", "crosscheck_clv", "publish_segments", "track_migration",
            "build_economics", "run_experiment")


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def run_pipeline(args, url: str, dates: list[dt.date]) -> None:
    """Generate the data and run every stage for every date (the DAG's functions, in process)."""
    from include.demo.generate import DemoGenerator, PolicyEffects
    from include.runtime.run import RunInfo
    from include.runtime.settings import PipelineSettings
    from include.runtime.warehouse import Warehouse
    from include.stages import stage

    t0, c0 = time.perf_counter(), cpu_seconds()
    policy = PolicyEffects(dates[0] + dt.timedelta(days=1), retention_effect=args.retention_effect,
                           cost_effect=args.cost_effect, holdout_share=args.holdout_share,
                           retention_window_days=args.retention_window_days)
    tables = DemoGenerator(args.customers, seed=args.seed, end_date=dates[-1], policy=policy).generate(False)
    with Warehouse(url) as wh:
        for name, frame in tables.items():
            wh.replace_table(name, frame)
    print(f"generated {args.customers:,} persons in {time.perf_counter() - t0:.0f} s wall, "
          f"{cpu_seconds() - c0:.0f} CPU-s", flush=True)
    # Staged rows of every date are kept so that the experiment stage can be re-run for each of them.
    settings = PipelineSettings(seed=args.seed, holdout_share=args.holdout_share, n_bootstrap=args.n_bootstrap,
                                retention_window_days=args.retention_window_days,
                                staging_retention_runs=len(dates) + 1)
    for day in dates:
        run = RunInfo("bench_lift", f"bench-lift-{day}", day, settings, url)
        times = []
        for name in PIPELINE:
            w, c = time.perf_counter(), cpu_seconds()
            stage(name)(run)
            times.append(f"{name} {time.perf_counter() - w:.0f}s/{cpu_seconds() - c:.0f}cpu")
        with Warehouse(url) as wh:
            record_delivery(wh, day)  # the DAG's push after the run
        print(f"{day}: " + ", ".join(times), flush=True)


def dates_done(url: str, dates: list[dt.date]) -> bool:
    from include.runtime.warehouse import Warehouse

    with Warehouse(url) as wh:
        if not wh.has_table("policy_runs"):
            return False
        done = {pd.Timestamp(d).date() for d in wh.query_df("SELECT as_of_date FROM policy_runs")["as_of_date"]}
    return set(dates) <= done


def report(args, url: str, dates: list[dt.date]) -> None:
    """Re-run the experiment stage (from the first date: it recomputes every later one); set the lift beside
    the planted truth."""
    from include.experiment.build import SQL, ExperimentSettings, run_experiment
    from include.runtime.warehouse import Warehouse

    settings = ExperimentSettings(holdout_share=args.holdout_share, retention_window_days=args.retention_window_days)
    t0, c0 = time.perf_counter(), cpu_seconds()
    weekly = []
    with Warehouse(url) as wh:
        wh.ensure_schema()  # a data dir from an earlier version gains the columns added since
        for day in dates:  # a data dir from an earlier version has no push audit rows
            record_delivery(wh, day)
        run_experiment(wh, dates[0], settings)
        for day in dates:
            lift = wh.query_df(SQL["lift_of_date"], {"as_of_date": day})
            if not len(lift):
                print(f"{day}: the policy's first run, no lift (nothing treated yet)")
                continue
            frame = planted_per_customer(wh, day, settings)
            weekly.append((day, frame, recovery_table(lift, expected_lift(frame))))
    stage_s, stage_cpu = time.perf_counter() - t0, cpu_seconds() - c0
    pd.set_option("display.width", 220)
    pd.set_option("display.max_columns", 30)
    day, frame, last = weekly[-1]
    print(f"\n{args.customers:,} persons, seed {args.seed}, {args.holdout_share:.0%} holdout, policy from "
          f"{dates[0] + dt.timedelta(days=1)}, {len(weekly)} weekly runs after it; last run {day} "
          f"({(day - dates[0]).days} days under the policy)")
    print("\narchetype mix of the pipeline's segments (customers of the comparison):")
    names = last.drop_duplicates("segment_id").set_index("segment_id")["segment_name"]
    mix = archetype_mix(frame)
    print(mix.set_axis([names.get(i, f"segment {i}") for i in mix.index]).round(2).to_string())
    print("\nlast run: expected (from the truth) vs measured lift; 'all-at-once' = simultaneous 95% interval "
          "(Bonferroni over the run's segments of the outcome, m = family), 'alone' = per-segment 95% interval; "
          "MDE at 80% power (per-segment); cov = expected inside (sim/alone)")
    print(lift_lines(last))
    every = pd.concat([r.assign(as_of_date=d) for d, _, r in weekly], ignore_index=True)
    every = every[every["ci_low"].notna()]
    null = every[every["no_effect"]]
    planted = every[~every["no_effect"]]
    print(f"\nover the {len(weekly)} runs after the policy date ({len(every)} intervals of each kind; "
          f"{len(planted)} of cells with a planted effect, {len(null)} of cells whose expected effect is 0):")
    print(f"  {'':34s} {'all-at-once':>12} {'alone':>8}")
    for label, part, col_sim, col in (
            ("expected effect inside, all cells", every, "covered_sim", "covered"),
            ("expected effect inside, planted", planted, "covered_sim", "covered"),
            ("planted cells detected (excl. 0)", planted, "excludes_zero_sim", "excludes_zero"),
            ("no-effect cells that include 0", null, "excludes_zero_sim", "excludes_zero")):
        sim, alone = part[col_sim].mean(), part[col].mean()
        if label.startswith("no-effect"):
            sim, alone = 1 - sim, 1 - alone
        print(f"  {label:34s} {sim:>12.1%} {alone:>8.1%}")
    runs_any = null.groupby("as_of_date")[["excludes_zero_sim", "excludes_zero"]].any()
    print(f"  {'runs with any no-effect cell excl. 0':34s} {int(runs_any['excludes_zero_sim'].sum()):>9} / "
          f"{len(runs_any)} {int(runs_any['excludes_zero'].sum()):>5} / {len(runs_any)}")
    print("  per outcome, expected effect inside (all-at-once / alone):")
    for metric, g in every.groupby("metric"):
        print(f"    {metric:14s} {g['covered_sim'].mean():>5.0%} / {g['covered'].mean():>4.0%} of {len(g)}")
    print("  per run: intervals covering (all-at-once / alone), no-effect cells including 0 (all-at-once / alone):")
    for d, g in every.groupby("as_of_date"):
        n = g[g["no_effect"]]
        print(f"    {str(d)[:10]}  covered {int(g['covered_sim'].sum()):>2}/{int(g['covered'].sum()):>2} of {len(g)}"
              f"   no-effect include 0 {int((~n['excludes_zero_sim']).sum()):>2}/{int((~n['excludes_zero']).sum()):>2} "
              f"of {len(n)}")
    print("  cells missed in some run (runs covered all-at-once / alone, of runs with an interval):")
    for (name, metric), g in every.groupby(["segment_name", "metric"]):
        if not g["covered"].all() or not g["covered_sim"].all():
            kind = "no effect" if g["no_effect"].all() else f"expected now {g['expected'].iloc[-1]:+.3f}"
            print(f"    {name[:34]:34s} {metric:14s} {kind:>20}: covered {int(g['covered_sim'].sum())} / "
                  f"{int(g['covered'].sum())} of {len(g)}")
    powered = last[last["expected"].abs() >= last["mde"]]
    print(f"last run: {len(powered)} of {len(last)} cells have an expected effect at least their MDE")
    # The MDE shrinks with the square root of the arms' sizes (se ~ sqrt(1/n_t + 1/n_h)): how large a
    # segment (same holdout share) the larger effects would need to be detected with 80% power.
    # The all-at-once decision needs more: its MDE is (q_sim + z_0.8) se against (q + z_0.8) se, q_sim / q
    # being the width ratio of the two intervals (q taken as the normal 1.96: many degrees of freedom).
    z, q = 0.8416, 1.96
    for r in last[last["expected"].abs() > 0.25 * last["mde"]].itertuples():
        factor = (r.mde / abs(r.expected)) ** 2
        ratio = (r.simultaneous_high - r.simultaneous_low) / (r.ci_high - r.ci_low)
        factor_sim = factor * ((ratio * q + z) / (q + z)) ** 2
        print(f"  {r.segment_name[:40]:40s} {r.metric:14s} expected {r.expected:+.3f}, MDE {r.mde:.3f}: "
              f"needs about {factor:.1f}x the customers ({factor * (r.n_treated + r.n_holdout):,.0f}) alone, "
              f"{factor_sim:.1f}x all at once")
    t1, c1 = time.perf_counter(), cpu_seconds()
    for label, (d, f, _) in (("first post-policy run", weekly[0]), ("last run", weekly[-1])):
        cal = calibration(f, args.holdout_share, args.redraws, args.seed)
        by = cal.groupby("metric")[["excludes_zero", "excludes_zero_sim"]].mean()
        fwer = familywise_error(cal)
        print(f"\ncalibration, {label} ({d}), {args.redraws} holdout redraws (no effect by construction), "
              f"{len(cal):,} intervals of each kind:")
        print(f"  {'':16s} {'intervals excluding 0':>24} {'redraws with ANY cell excluding 0':>36}")
        print(f"  {'':16s} {'all-at-once':>12} {'alone':>11} {'all-at-once':>18} {'alone':>17}")
        for metric in [*by.index, "(any outcome)"]:
            single = (f"{by.loc[metric, 'excludes_zero_sim']:>12.2%} {by.loc[metric, 'excludes_zero']:>11.2%}"
                      if metric in by.index else f"{cal['excludes_zero_sim'].mean():>12.2%} "
                      f"{cal['excludes_zero'].mean():>11.2%}")
            print(f"  {metric:16s} {single} {fwer.loc[metric, 'simultaneous']:>18.1%} "
                  f"{fwer.loc[metric, 'per_segment']:>17.1%}")
    print(f"\nexperiment stage re-run for {len(dates)} dates + truth: {stage_s:.0f} s wall, {stage_cpu:.0f} CPU-s; "
          f"calibration {time.perf_counter() - t1:.0f} s wall, {cpu_seconds() - c1:.0f} CPU-s")


def holdout_table_reads(customers: int, weeks: int, folder: Path) -> None:
    """Time the reads of ``customer_holdout`` when it holds ``customers`` x ``weeks`` rows (one per customer and run).

    Rows are written a date at a time through the stage's own ``replace_partition`` (as the DAG does),
    the last date twice (a re-run), then: the point read of one date (what a push checks), the
    experiment's assignment read over every date (``arms`` of ``customer_outcomes``), and the write.
    """
    from include.experiment.build import SQL
    from include.runtime.warehouse import Warehouse

    url = f"duckdb:///{folder / 'holdout-scale.duckdb'}"
    keys = np.array([f"C{i:015x}" for i in range(customers)], dtype=object)
    rng = np.random.default_rng(0)
    first = dt.date(2025, 11, 1)
    arms_sql = SQL["customer_outcomes"].split("), arms AS (")[0].split("), assigned AS (")[1]
    with Warehouse(url) as wh:
        wh.ensure_schema()
        write_s = []
        for w in range(weeks + 1):
            day = first + dt.timedelta(weeks=min(w, weeks - 1))
            frame = pd.DataFrame({"as_of_date": day, "experiment_name": "segment-playbook", "customer_key": keys,
                                  "segment_id": rng.integers(1, 8, customers), "segment_name": "segment",
                                  "holdout": rng.random(customers) < 0.1, "holdout_draw": rng.random(customers),
                                  "action": "act", "policy_hash": "h"})
            t = time.perf_counter()
            wh.replace_partition("customer_holdout", frame, {"as_of_date": day})
            write_s.append(time.perf_counter() - t)
        last = first + dt.timedelta(weeks=weeks - 1)
        rows = wh.scalar("SELECT COUNT(*) FROM customer_holdout")
        timings = {}
        for name, sql, params in (
                ("point read of one date", "SELECT COUNT(*), SUM(CAST(holdout AS INT)) FROM customer_holdout "
                 "WHERE as_of_date = :d AND experiment_name = 'segment-playbook'", {"d": last}),
                ("assignment read over every date", f"SELECT COUNT(*) FROM ({arms_sql.strip()})",
                 {"experiment_name": "segment-playbook", "policy_start": first, "as_of_date": last})):
            best = []
            for _ in range(3):
                t, c = time.perf_counter(), cpu_seconds()
                wh.scalar(sql, params)
                best.append((time.perf_counter() - t, cpu_seconds() - c))
            timings[name] = min(best)
    size = (folder / "holdout-scale.duckdb").stat().st_size / 2**20
    print(f"customer_holdout with {rows:,} rows ({customers:,} customers x {weeks} runs, file {size:,.0f} MB): "
          f"write of one date {np.median(write_s):.2f} s (median), re-run of the last {write_s[-1]:.2f} s; "
          + "; ".join(f"{k} {w:.3f} s wall / {c:.2f} CPU-s" for k, (w, c) in timings.items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--weeks", type=int, default=8, help="weekly runs after the policy's first run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--holdout-share", type=float, default=0.10)
    parser.add_argument("--retention-window-days", type=int, default=90)
    parser.add_argument("--retention-effect", type=float, default=0.06)
    parser.add_argument("--cost-effect", type=float, default=0.18)
    parser.add_argument("--first-run", type=dt.date.fromisoformat, default=dt.date(2026, 9, 19),
                        help="as-of date of the policy's first run (effects from the day after)")
    parser.add_argument("--data-dir", type=Path, required=True, help="warehouse and MLflow store (kept)")
    parser.add_argument("--redraws", type=int, default=400, help="holdout redraws of the calibration check")
    parser.add_argument("--n-bootstrap", type=int, default=8, help="segmentation bootstrap refits per run")
    parser.add_argument("--pipeline-only", action="store_true")
    parser.add_argument("--holdout-table", type=int, nargs=2, metavar=("CUSTOMERS", "WEEKS"),
                        help="only time customer_holdout reads at this size (one row per customer and run)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SEGMENTATION_DATA_DIR", str(args.data_dir / "data"))
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{args.data_dir / 'mlflow.db'}")
    if args.holdout_table:
        holdout_table_reads(*args.holdout_table, args.data_dir)
        return
    url = f"duckdb:///{args.data_dir / 'lift.duckdb'}"
    dates = [args.first_run + dt.timedelta(weeks=w) for w in range(args.weeks + 1)]
    started, cpu0 = time.perf_counter(), cpu_seconds()
    if not dates_done(url, dates):
        run_pipeline(args, url, dates)
    print(f"pipeline: {time.perf_counter() - started:.0f} s wall, {cpu_seconds() - cpu0:.0f} CPU-s", flush=True)
    if args.pipeline_only:
        return
    report(args, url, dates)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\ntotal {time.perf_counter() - started:.0f} s wall, {cpu_seconds() - cpu0:.0f} CPU-s; "
          f"peak RSS {peak:,.0f} MB; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
