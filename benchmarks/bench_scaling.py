"""Evidence for docs/scaling.md: fit on a sample, score every customer in chunks or in SQL.

    .venv/bin/python benchmarks/bench_scaling.py --base /path/warehouse.duckdb --as-of 2026-11-07 \\
        --work /tmp/bench-scaling --samples 20000 50000 100000 240000 --rows 500000 2000000 5000000

``--base`` is a warehouse the DAG has run on (``customer_features`` and ``clv_summary`` of
``--as-of``; ``benchmarks/bench_dag.py --persons 480000`` leaves one). It is only read.

1. **Fit on a sample vs fit on all** (``quality``): k-prototypes with the stage's settings
   (``--k``, seed 42, 4 inits, the features available that date) fitted on all rows and on
   each ``--samples`` size; each sample fit (its own means, scales, weights, prototypes)
   assigns every customer, compared with the full fit by adjusted Rand index. A second full
   fit with another seed gives the ARI two full fits reach (the ceiling). CLV: the purchase
   model (``--purchase-model``) and Gamma-Gamma fitted on each sample and on all, every
   customer scored by both; relative error of the total and per customer of 365-day CLV and
   expected purchases.
2. **Chunked scoring memory** (``scale``): ``--rows`` customers resampled from the base
   (bootstrap with 5% multiplicative jitter on the features) are written to a DuckDB file;
   for each size one fresh process assigns segments in chunks (``assign_in_chunks``, results
   written back) and one scores CLV in chunks (``score_clv_in_chunks``); each reports its
   peak RSS, CPU seconds and throughput. A third process assigns the same rows in SQL
   (``assign_in_warehouse``) and the SQL result is compared with the in-memory one.
3. ``--big-fit``: on the largest ``--rows`` set, a fit on a 500,000-row sample against a fit
   on all of it (ARI), the target's case (at 480,000 rows a 500k sample is everything).

Writes ``<work>/bench_scaling.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pickle
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from include.runtime.warehouse import Warehouse  # noqa: E402

#: Features bounded by 1 (shares and rates): jitter must not push them past it.
RATES = ("discount_share", "return_rate", "email_open_rate", "email_click_rate")
CHUNK_ROWS = 100_000
SEED = 42


def _rss_mb(field: str = "VmHWM") -> float:
    """Peak (``VmHWM``) or current (``VmRSS``) resident memory of this process image, in MB.

    Not ``getrusage``'s ``ru_maxrss``: Linux carries it across ``exec``, so a child
    would report its parent's peak.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _url(path: Path) -> str:
    return f"duckdb:///{path}"


# -- 1. fit on a sample vs fit on all ------------------------------------------
def segmentation_quality(features: pd.DataFrame, k: int, samples: list[int], n_init: int, work: Path) -> dict:
    from sklearn.metrics import adjusted_rand_score

    from include.segmentation.model import ORDER_RATE, available_features, fit_segments
    from include.segmentation.scoring import SegmentAssigner

    columns = (*available_features(features)[0], ORDER_RATE)
    out = {"rows": len(features), "k": k, "n_init": n_init, "numeric_columns": list(columns), "fits": []}

    def fit(frame: pd.DataFrame, seed: int):
        t0, c0 = time.perf_counter(), _cpu_s()
        result = fit_segments(frame, k=k, seed=seed, n_init=n_init, numeric_columns=columns)
        return result, time.perf_counter() - t0, _cpu_s() - c0

    full, wall, cpu = fit(features, SEED)
    full_assigner = SegmentAssigner.from_fit(features, full)
    with open(work / "segment_assigner.pkl", "wb") as fh:
        pickle.dump(full_assigner, fh)
    out["full_fit"] = {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "cost": float(full.model.cost_)}
    print(f"full fit: {len(features):,} rows, k={k}: {wall:.0f} s wall, {cpu:.0f} s CPU", flush=True)
    again, wall, cpu = fit(features, SEED + 1)
    out["full_vs_full_other_seed_ari"] = float(adjusted_rand_score(full.labels, again.labels))
    print(f"full fit, seed {SEED + 1}: ARI {out['full_vs_full_other_seed_ari']:.3f} vs seed {SEED}", flush=True)
    rng = np.random.default_rng(SEED)
    for size in samples:
        if size >= len(features):
            continue
        idx = np.sort(rng.choice(len(features), size=size, replace=False))
        sample = features.iloc[idx].reset_index(drop=True)
        result, wall, cpu = fit(sample, SEED)
        assigned = SegmentAssigner.from_fit(sample, result).assign(features)
        ari = float(adjusted_rand_score(full.labels, assigned))
        out["fits"].append({"sample": size, "ari_vs_full": ari, "fit_wall_s": round(wall, 1),
                            "fit_cpu_s": round(cpu, 1)})
        print(f"sample {size:>9,}: ARI vs full {ari:.3f} (fit {wall:.0f} s wall, {cpu:.0f} s CPU)", flush=True)
    return out


def clv_quality(summary: pd.DataFrame, purchase_model: str, samples: list[int], work: Path) -> dict:
    from include.clv.mbgnbd import ModifiedBetaGeoNBD
    from include.clv.models import BetaGeoNBD, ClvSettings, GammaGammaSpend, score_customers

    model_cls = {"bgnbd": BetaGeoNBD, "mbgnbd": ModifiedBetaGeoNBD}[purchase_model]
    settings = ClvSettings()

    def fit(frame: pd.DataFrame):
        t0, c0 = time.perf_counter(), _cpu_s()
        bg = model_cls.fit(frame)
        gg, _ = GammaGammaSpend.fit(frame)
        return bg, gg, time.perf_counter() - t0, _cpu_s() - c0

    bg, gg, wall, cpu = fit(summary)
    with open(work / "clv_models.pkl", "wb") as fh:
        pickle.dump((bg, gg), fh)
    full = score_customers(bg, gg, summary, settings)
    out = {"rows": len(summary), "model": model_cls.LABEL, "full_fit": {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                                                                      **bg.params(), **gg.params()}, "fits": []}
    print(f"CLV full fit ({model_cls.LABEL} + Gamma-Gamma): {wall:.0f} s wall, {cpu:.0f} s CPU", flush=True)
    rng = np.random.default_rng(SEED)
    for size in samples:
        if size >= len(summary):
            continue
        idx = np.sort(rng.choice(len(summary), size=size, replace=False))
        sbg, sgg, wall, cpu = fit(summary.iloc[idx].reset_index(drop=True))
        scored = score_customers(sbg, sgg, summary, settings)
        row = {"sample": size, "fit_wall_s": round(wall, 1), "fit_cpu_s": round(cpu, 1)}
        for col in ("clv_365d", "expected_purchases_365d"):
            a, b = full[col].to_numpy(), scored[col].to_numpy()
            valued = a > 0.01 * a.mean()  # relative error of customers worth (nearly) nothing says nothing
            rel = np.abs(b[valued] - a[valued]) / a[valued]
            row[f"{col}_total_rel_error"] = float((b.sum() - a.sum()) / a.sum())
            row[f"{col}_median_rel_error"] = float(np.median(rel))
            row[f"{col}_p90_rel_error"] = float(np.quantile(rel, 0.9))
        out["fits"].append(row)
        print(f"CLV sample {size:>9,}: total CLV error {100 * row['clv_365d_total_rel_error']:+.2f}%, per customer "
              f"median {100 * row['clv_365d_median_rel_error']:.2f}% / p90 {100 * row['clv_365d_p90_rel_error']:.2f}%; "
              f"purchases total {100 * row['expected_purchases_365d_total_rel_error']:+.2f}%", flush=True)
    return out


# -- 2. chunked scoring at growing row counts ----------------------------------
def write_resampled(base_features: pd.DataFrame, base_summary: pd.DataFrame, rows: int, path: Path,
                    as_of: dt.date) -> None:
    """``features_<rows>`` and ``clv_<rows>``: base customers drawn with replacement, features jittered 5%."""
    numeric = [c for c in base_features.columns if base_features[c].dtype.kind == "f"]
    joined = base_features.merge(base_summary[["customer_key", "frequency", "recency", "t", "monetary_value"]]
                                 .rename(columns={"frequency": "clv_frequency"}), on="customer_key")
    step = 500_000
    with Warehouse(_url(path)) as wh:
        for start in range(0, rows, step):
            m = min(step, rows - start)
            rng = np.random.default_rng([SEED, rows, start])
            part = joined.iloc[rng.integers(0, len(joined), m)].reset_index(drop=True)
            keys = [f"S{i:09d}" for i in range(start, start + m)]
            feats = part[base_features.columns].copy()
            feats["customer_key"] = keys
            feats["as_of_date"] = as_of
            feats[numeric] = feats[numeric].to_numpy() * rng.lognormal(0.0, 0.05, (m, len(numeric)))
            for col in RATES:
                if col in feats:
                    feats[col] = feats[col].clip(upper=1.0)
            clv = pd.DataFrame({"as_of_date": as_of, "period": "full", "customer_key": keys,
                                "frequency": part["clv_frequency"].to_numpy(), "recency": part["recency"].to_numpy(),
                                "t": part["t"].to_numpy(), "monetary_value": part["monetary_value"].to_numpy()})
            if start == 0:
                wh.replace_table(f"features_{rows}", feats)
                wh.replace_table(f"clv_{rows}", clv)
            else:
                with wh.begin() as conn:
                    wh.insert_df(f"features_{rows}", feats, conn)
                    wh.insert_df(f"clv_{rows}", clv, conn)


def child(args: argparse.Namespace) -> None:
    """One scoring job in a fresh process: prints its rows, wall, CPU and peak RSS as JSON."""
    from include.clv.models import ClvSettings
    from include.clv.scoring import score_clv_in_chunks
    from include.segmentation.scoring import assign_in_chunks, assign_in_warehouse

    work, rows, as_of = Path(args.work), args.rows, dt.date.fromisoformat(args.as_of)
    with open(work / "segment_assigner.pkl", "rb") as fh:
        assigner = pickle.load(fh)
    with open(work / "clv_models.pkl", "rb") as fh:
        bg, gg = pickle.load(fh)
    rss_ready = _rss_mb("VmRSS")
    t0, c0 = time.perf_counter(), _cpu_s()
    with Warehouse(_url(work / "scale.duckdb")) as wh:
        if args.job == "segments":
            target = f"seg_mem_{rows}"
            wh.run_script(f"CREATE OR REPLACE TABLE {target} (customer_key VARCHAR, segment_id BIGINT)")

            def sink(frame: pd.DataFrame) -> None:
                with wh.begin() as conn:
                    wh.insert_df(target, frame, conn)

            n = assign_in_chunks(wh, assigner, as_of, sink, source=f"features_{rows}", chunk_rows=args.chunk_rows)
        elif args.job == "clv":
            target, first = f"clv_mem_{rows}", [True]

            def sink(frame: pd.DataFrame) -> None:
                if first[0]:
                    wh.replace_table(target, frame.iloc[:0])
                    first[0] = False
                with wh.begin() as conn:
                    wh.insert_df(target, frame, conn)

            n = score_clv_in_chunks(wh, bg, gg, ClvSettings(), as_of, sink, source=f"clv_{rows}",
                                    chunk_rows=args.chunk_rows)
        else:
            n = assign_in_warehouse(wh, assigner, as_of, source=f"features_{rows}", target=f"seg_sql_{rows}")
    print(json.dumps({"job": args.job, "rows": n, "wall_s": time.perf_counter() - t0, "cpu_s": _cpu_s() - c0,
                      "rss_ready_mb": rss_ready, "peak_rss_mb": _rss_mb()}))


def run_child(job: str, rows: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", job, "--rows-child", str(rows), "--work", str(args.work),
           "--as-of", args.as_of.isoformat(), "--chunk-rows", str(args.chunk_rows)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["rows_per_s"] = result["rows"] / result["wall_s"]
    print(f"{job:>8} {rows:>10,} rows: {result['wall_s']:7.1f} s wall, {result['cpu_s']:7.1f} s CPU, "
          f"peak RSS {result['peak_rss_mb']:6.0f} MB (after imports and model {result['rss_ready_mb']:.0f} MB)",
          flush=True)
    return result


def sql_agreement(work: Path, rows: int, as_of: dt.date) -> dict:
    """Rows where the SQL and in-memory assignments differ, with their cost gap in memory."""
    import pickle as pk

    with open(work / "segment_assigner.pkl", "rb") as fh:
        assigner = pk.load(fh)
    with Warehouse(_url(work / "scale.duckdb")) as wh:
        diff = wh.query_df(f"SELECT f.*, m.segment_id AS mem_id, s.segment_id AS sql_id FROM seg_mem_{rows} m "
                           f"JOIN seg_sql_{rows} s USING (customer_key) JOIN features_{rows} f USING (customer_key) "
                           "WHERE m.segment_id <> s.segment_id")
        counts = wh.query_df(f"SELECT (SELECT COUNT(*) FROM seg_mem_{rows}) AS mem_rows, "
                             f"(SELECT COUNT(*) FROM seg_sql_{rows}) AS sql_rows, "
                             f"(SELECT COUNT(*) FROM seg_mem_{rows} m JOIN seg_sql_{rows} s USING (customer_key)) "
                             "AS joined").iloc[0]
    gaps = []
    if len(diff):
        costs = assigner.costs(diff)
        pos = {s: i for i, s in enumerate(assigner.segment_ids)}
        gaps = [abs(costs[r, pos[a]] - costs[r, pos[b]]) for r, (a, b) in enumerate(zip(diff["mem_id"], diff["sql_id"],
                                                                                      strict=True))]
    return {"rows": int(counts["joined"]), "mem_rows": int(counts["mem_rows"]), "sql_rows": int(counts["sql_rows"]),
            "disagreements": len(diff), "max_cost_gap_of_disagreements": float(max(gaps)) if gaps else None}


def big_fit(work: Path, rows: int, k: int, n_init: int, sample: int, as_of: dt.date) -> dict:
    from sklearn.metrics import adjusted_rand_score

    from include.segmentation.model import ORDER_RATE, available_features, fit_segments
    from include.segmentation.scoring import SegmentAssigner

    with Warehouse(_url(work / "scale.duckdb")) as wh:
        features = wh.query_df(f"SELECT * FROM features_{rows} ORDER BY customer_key")
    columns = (*available_features(features)[0], ORDER_RATE)
    t0, c0 = time.perf_counter(), _cpu_s()
    full = fit_segments(features, k=k, seed=SEED, n_init=n_init, numeric_columns=columns)
    wall_full, cpu_full = time.perf_counter() - t0, _cpu_s() - c0
    idx = np.sort(np.random.default_rng(SEED).choice(len(features), size=sample, replace=False))
    part = features.iloc[idx].reset_index(drop=True)
    t0, c0 = time.perf_counter(), _cpu_s()
    fitted = fit_segments(part, k=k, seed=SEED, n_init=n_init, numeric_columns=columns)
    wall_sample, cpu_sample = time.perf_counter() - t0, _cpu_s() - c0
    ari = float(adjusted_rand_score(full.labels, SegmentAssigner.from_fit(part, fitted).assign(features)))
    print(f"{rows:,} rows: {sample:,}-row sample fit vs full fit ARI {ari:.3f} (full fit {wall_full:.0f} s wall, "
          f"{cpu_full:.0f} s CPU; sample fit {wall_sample:.0f} s)", flush=True)
    return {"rows": rows, "sample": sample, "ari_vs_full": ari, "full_fit_wall_s": wall_full, "full_fit_cpu_s": cpu_full,
            "sample_fit_wall_s": wall_sample, "sample_fit_cpu_s": cpu_sample, "peak_rss_mb": _rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, help="warehouse the DAG ran on (only read)")
    parser.add_argument("--as-of", type=dt.date.fromisoformat, default=dt.date(2026, 11, 7))
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-scaling"))
    parser.add_argument("--k", type=int, default=7, help="segments (the stage's choice on the base date)")
    parser.add_argument("--n-init", type=int, default=4)
    parser.add_argument("--purchase-model", choices=("bgnbd", "mbgnbd"), default="mbgnbd")
    parser.add_argument("--samples", type=int, nargs="*", default=[20_000, 50_000, 100_000, 240_000])
    parser.add_argument("--rows", type=int, nargs="*", default=[500_000, 2_000_000, 5_000_000])
    parser.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS)
    parser.add_argument("--big-fit", type=int, default=0, metavar="SAMPLE",
                        help="also fit on a SAMPLE-row sample of the largest --rows set vs all of it")
    parser.add_argument("--big-fit-rows", type=int, default=0,
                        help="the --rows set --big-fit uses (default the largest --rows; an earlier run's table with "
                             "BENCH_SCALING_KEEP=1 and --rows given no values)")
    parser.add_argument("--skip-quality", action="store_true", help="reuse the pickled models of an earlier run")
    parser.add_argument("--child", choices=("segments", "clv", "sql"), help=argparse.SUPPRESS)
    parser.add_argument("--rows-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.job, args.rows = args.child, args.rows_child
        args.as_of = args.as_of.isoformat()
        return child(args)
    args.work.mkdir(parents=True, exist_ok=True)
    out_path = args.work / "bench_scaling.json"
    report = json.loads(out_path.read_text()) if out_path.exists() else {}
    report.update({"machine": {"cpus": os.cpu_count(), "load_before": os.getloadavg()},
                   "as_of_date": args.as_of.isoformat(), "chunk_rows": args.chunk_rows})
    from include.features.build import load_features
    from include.runtime.warehouse import named_sql

    with Warehouse(_url(args.base)) as wh:
        features = load_features(wh, args.as_of)
        summary = wh.query_df(named_sql("clv.sql")["summary_full"], {"as_of_date": args.as_of})
    print(f"base: {len(features):,} customers with features, {len(summary):,} CLV summaries "
          f"(load {os.getloadavg()[0]:.1f})", flush=True)
    if not args.skip_quality:
        report["segmentation_quality"] = segmentation_quality(features, args.k, args.samples, args.n_init, args.work)
        report["clv_quality"] = clv_quality(summary, args.purchase_model, args.samples, args.work)
        out_path.write_text(json.dumps(report, indent=1))
    if args.rows:
        report["scale"] = []
    for rows in args.rows:
        t0 = time.perf_counter()
        write_resampled(features.drop(columns=[c for c in ("order_rate",) if c in features]), summary, rows,
                        args.work / "scale.duckdb", args.as_of)
        print(f"wrote {rows:,} resampled rows in {time.perf_counter() - t0:.0f} s", flush=True)
        entry = {"rows": rows, "load": os.getloadavg()[0]}
        for job in ("segments", "clv", "sql"):
            entry[job] = run_child(job, rows, args)
        entry["sql_vs_memory"] = sql_agreement(args.work, rows, args.as_of)
        print(f"SQL vs in-memory at {rows:,}: {entry['sql_vs_memory']}", flush=True)
        report["scale"].append(entry)
        out_path.write_text(json.dumps(report, indent=1))
    if args.big_fit and (args.rows or args.big_fit_rows):
        del features, summary
        report["big_fit"] = big_fit(args.work, args.big_fit_rows or max(args.rows), args.k, args.n_init, args.big_fit,
                                    args.as_of)
    report["machine"]["load_after"] = os.getloadavg()
    out_path.write_text(json.dumps(report, indent=1))
    print_table(report)
    if os.environ.get("BENCH_SCALING_KEEP") != "1":
        (args.work / "scale.duckdb").unlink(missing_ok=True)


def print_table(report: dict) -> None:
    print("\n| rows | job | wall s | CPU s | rows/s | peak RSS MB |\n|---:|---|---:|---:|---:|---:|")
    for entry in report.get("scale", []):
        for job in ("segments", "clv", "sql"):
            r = entry[job]
            print(f"| {entry['rows']:,} | {job} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['rows_per_s']:,.0f} "
                  f"| {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
