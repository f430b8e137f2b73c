"""Benchmark the segmentation stage and the k-prototypes engine against kmodes.

    .venv/bin/python benchmarks/bench_segmentation.py --rows 480000 --compare 20000 50000
    .venv/bin/python benchmarks/bench_segmentation.py --rows 480000 --boot 20 --compare   # the stage only

Reports wall time and peak memory (max RSS) of the whole stage at ``--rows``
(k selection over k=2..10, final fit, ``--boot`` bootstrap refits; ``--algorithm``, default spectral), and, for
each ``--compare`` size, one fit of our engine and of kmodes' KPrototypes from
the same settings (Cao init, one init, same gamma) with their final costs.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from include.features.build import ACTIVE_FEATURES, CATEGORICAL_FEATURES, NUMERIC_FEATURES  # noqa: E402


def synthetic_features(n: int, seed: int = 0) -> pd.DataFrame:
    """Customer features from a 6-archetype mixture, shaped like ``customer_features``."""
    rng = np.random.default_rng(seed)
    k = 6
    arche = rng.choice(k, n, p=[0.08, 0.2, 0.08, 0.14, 0.15, 0.35])
    # The rates while active too, so the stage fits its default feature set (12 columns).
    columns = (*NUMERIC_FEATURES, *ACTIVE_FEATURES)
    means = rng.lognormal(1.0, 1.0, (k, len(columns)))
    data = {f: means[arche, j] * rng.lognormal(0, 0.5, n) for j, f in enumerate(columns)}
    frame = pd.DataFrame(data)
    # Lifetime orders (for the derived order_rate): at least the last year's, plus earlier ones.
    frame["orders_lifetime"] = np.ceil(frame["frequency"] * rng.uniform(1.0, 3.0, n))
    levels = {"preferred_channel": ["web", "app", "store"], "plan_tier": ["basic", "standard", "premium"],
              "region": ["north", "south", "east", "west", "central"]}
    for col in CATEGORICAL_FEATURES:
        prefer = rng.integers(0, len(levels[col]), k)
        pick = np.where(rng.random(n) < 0.6, prefer[arche], rng.integers(0, len(levels[col]), n))
        frame[col] = np.array(levels[col])[pick]
    frame.insert(0, "customer_key", [f"K{i:07d}" for i in range(n)])
    return frame


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bench_stage(rows: int, boot: int, algorithm: str) -> None:
    from include.segmentation.model import bootstrap_stability, fit_segments

    features = synthetic_features(rows)
    t0, c0 = time.perf_counter(), cpu_seconds()
    result = fit_segments(features, k_min=2, k_max=10, seed=42, silhouette_sample=5000, n_init=4,
                          algorithm=algorithm)
    t1, c1 = time.perf_counter(), cpu_seconds()
    jaccard, ari = bootstrap_stability(features, result.labels, result.k, algorithm=result.algorithm, n_boot=boot,
                                       seed=42, numeric_columns=result.numeric_columns,
                                       categorical_columns=result.categorical_columns)
    t2, c2 = time.perf_counter(), cpu_seconds()
    print(f"stage @ {rows:,} rows, {result.algorithm}: k selection 2..10 (screened by bootstrap) + final fit "
          f"{t1 - t0:.1f} s wall / {c1 - c0:.1f} s CPU, {boot} bootstrap refits {t2 - t1:.1f} s / {c2 - c1:.1f} s CPU, "
          f"total {t2 - t0:.1f} s wall / {c2 - c0:.1f} s CPU; chosen k={result.k}; "
          f"{len(result.numeric_columns)} features; min Jaccard {jaccard.min():.2f}, bootstrap ARI {ari:.3f}; peak RSS {peak_rss_gb():.2f} GB")


def bench_vs_kmodes(rows: int) -> None:
    from kmodes.kprototypes import KPrototypes as Reference

    from include.segmentation.kprototypes import KPrototypes
    from include.segmentation.model import categorical_matrix, design_matrix

    features = synthetic_features(rows, seed=1)
    x_num, x_cat = design_matrix(features), categorical_matrix(features)
    t0 = time.perf_counter()
    ours = KPrototypes(6, init="Cao", n_init=1, max_iter=100, random_state=3).fit(x_num, x_cat)
    t1 = time.perf_counter()
    x = np.concatenate([x_num, x_cat], axis=1).astype(object)
    ref = Reference(6, init="Cao", n_init=1, max_iter=100, random_state=3).fit(
        x, categorical=list(range(x_num.shape[1], x.shape[1])))
    t2 = time.perf_counter()
    best = min(KPrototypes(6, init="Cao", n_init=1, random_state=s).fit(x_num, x_cat).cost_ for s in range(3, 11))
    print(f"one fit @ {rows:,} rows (k=6, Cao, 1 init): ours {t1 - t0:.2f} s ({ours.n_iter_} iter, cost {ours.cost_:,.1f}); "
          f"kmodes {t2 - t1:.1f} s ({ref.n_iter_} iter, cost {ref.cost_:,.1f}); "
          f"speed-up {(t2 - t1) / (t1 - t0):.0f}x; cost ratio {ours.cost_ / ref.cost_:.4f}; "
          f"ours best of 8 seeds / kmodes {best / ref.cost_:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=480_000)
    parser.add_argument("--boot", type=int, default=30)
    parser.add_argument("--compare", type=int, nargs="*", default=[20_000, 50_000])
    parser.add_argument("--algorithm", default="spectral", choices=("spectral", "kprototypes", "kmeans"))
    args = parser.parse_args()
    for n in args.compare:
        bench_vs_kmodes(n)
    if args.rows:
        bench_stage(args.rows, args.boot, args.algorithm)


if __name__ == "__main__":
    main()
