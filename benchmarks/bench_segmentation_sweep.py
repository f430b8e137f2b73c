"""Sweep the segmentation over demo-generator variants; score it against the planted archetypes.

    .venv/bin/python benchmarks/bench_segmentation_sweep.py                # demo + every variant
    .venv/bin/python benchmarks/bench_segmentation_sweep.py --only demo --identity splink  # the demo weeks

On a shared machine set ``OMP_NUM_THREADS=1``: scikit-learn's OpenMP threads
oversubscribe the cores and ran about 10x slower here.

Each variant's data go through the real pipeline functions on a DuckDB file:
:class:`~include.demo.generate.DemoGenerator` (5,000 persons by default),
``extract_and_validate``, ``resolve_identities`` (``--identity``; ``exact`` by
default for speed, the demo's own runs use Splink) and ``build_customer_features``.
Feature frames (with each customer's planted archetype) are cached under
``--cache`` (default ``/tmp/seg-bench-active``; frames built before the rates while active
were added to ``features.sql`` lack those columns), so a second run only re-segments.

For every frame it reports, beside each other:

- the unsupervised segmentation (:func:`include.segmentation.model.fit_segments`,
  the stage's defaults, per design in :data:`DESIGNS`) scored by ARI against the planted archetypes;
- the planted high-value core: the segment holding most of it, its precision
  (core share of that segment) and recall (share of the core in it);
- the bootstrap Jaccard of every segment (Hennig's clusterboot, as the stage's gate);
- the supervised bound: scikit-learn ``HistGradientBoostingClassifier``, 5-fold
  cross-validated on the same transformed features (accuracy and ARI), so the gap
  between what the features hold and what the segmentation finds stays visible;
- the same on RFM features only (a transactions-only shop).

Variants: the demo (seed 7, four weekly dates), seeds 11 and 23, a core of 3% and of
15% of persons (the other archetypes rescaled), and the demo without one archetype.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEMO_DATES = (dt.date(2026, 10, 24), dt.date(2026, 10, 31), dt.date(2026, 11, 7), dt.date(2026, 11, 14))
END_DATE = dt.date(2026, 11, 14)
CORE = "high_value_core"
#: Features of a transactions-only shop (orders, no support, usage, email or plan data).
RFM_FEATURES = ("recency_days", "frequency", "monetary", "avg_order_value", "tenure_days")


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    seed: int
    core_share: float | None = None  # None: the generator's own shares
    drop: str | None = None  # archetype left out
    dates: tuple[dt.date, ...] = (END_DATE,)


VARIANTS: tuple[Variant, ...] = (
    Variant("demo", 7, dates=DEMO_DATES),
    Variant("seed11", 11),
    Variant("seed23", 23),
    Variant("core3", 11, core_share=0.03),
    Variant("core15", 23, core_share=0.15),
    Variant("no_discount", 7, drop="discount_driven"),
)


def variant_archetypes(variant: Variant):
    """The generator's archetypes with the core's share changed or one archetype removed."""
    from include.demo.generate import ARCHETYPES

    arche = [a for a in ARCHETYPES if a.name != variant.drop]
    if variant.core_share is not None:
        others = sum(a.share for a in arche if a.name != CORE)
        arche = [dataclasses.replace(a, share=variant.core_share) if a.name == CORE
                 else dataclasses.replace(a, share=a.share * (1 - variant.core_share) / others) for a in arche]
    return tuple(arche)


def build_frames(variant: Variant, persons: int, identity: str, cache: Path) -> dict[dt.date, pd.DataFrame]:
    """Feature frames (plus ``archetype``) per date, from the cache or through the pipeline."""
    from include.demo.generate import DemoGenerator
    from include.extract.validate import extract_and_validate
    from include.features.build import build_customer_features, load_features
    from include.identity.resolve import resolve_identities
    from include.runtime.settings import DEFAULT_SUPPORT_COST_BY_CHANNEL
    from include.runtime.warehouse import Warehouse

    stem = f"{variant.name}-{persons}-{identity}"
    paths = {d: cache / f"{stem}-{d.isoformat()}.parquet" for d in variant.dates}
    if all(p.exists() for p in paths.values()):
        return {d: pd.read_parquet(p) for d, p in paths.items()}
    cache.mkdir(parents=True, exist_ok=True)
    db = cache / f"{stem}.duckdb"
    db.unlink(missing_ok=True)
    t0 = time.perf_counter()
    tables = DemoGenerator(persons, seed=variant.seed, end_date=END_DATE,
                           archetypes=variant_archetypes(variant)).generate(show_progress=False)
    frames = {}
    model = None
    with Warehouse(f"duckdb:///{db}") as wh:
        for name, frame in tables.items():
            wh.replace_table(name, frame)
        for d in variant.dates:
            extract_and_validate(wh, d)
            out = resolve_identities(wh, d, method=identity, model=model)
            model = out.model if identity == "splink" else None
            build_customer_features(wh, d, dict(DEFAULT_SUPPORT_COST_BY_CHANNEL))
            features = load_features(wh, d)
            truth = wh.query_df(
                "SELECT m.customer_key, MIN(p.archetype) AS archetype FROM identity_map m "
                "JOIN truth_identity t ON t.source_system = m.source_system AND t.source_id = m.source_id "
                "JOIN truth_persons p ON p.person_id = t.person_id WHERE m.as_of_date = :d GROUP BY m.customer_key",
                {"d": d})
            frame = features.merge(truth, on="customer_key", how="left")
            frame.to_parquet(paths[d])
            frames[d] = frame
    db.unlink(missing_ok=True)
    print(f"  built {stem}: {len(variant.dates)} date(s) in {time.perf_counter() - t0:.0f} s", flush=True)
    return frames


def core_precision_recall(archetype: pd.Series, labels: np.ndarray) -> tuple[float, float]:
    """The segment holding most of the planted core: core share of it (precision), its share of the core (recall)."""
    is_core = (archetype == CORE).to_numpy()
    if not is_core.any():
        return float("nan"), float("nan")
    segment = pd.Series(labels[is_core]).value_counts().idxmax()
    in_segment = labels == segment
    hit = float((is_core & in_segment).sum())
    return hit / in_segment.sum(), hit / is_core.sum()


def supervised_bound(features: pd.DataFrame, truth: pd.Series, numeric_columns, categorical_columns,
                     seed: int = 42) -> tuple[float, float]:
    """Accuracy and ARI of a gradient-boosting classifier, 5-fold cross-validated on the same features."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import adjusted_rand_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from include.segmentation.model import segmentation_matrices

    x_num, x_cat, _, _ = segmentation_matrices(features, numeric_columns, categorical_columns)
    x = np.hstack([x_num, x_cat.astype(float)])
    mask = np.r_[np.zeros(x_num.shape[1], bool), np.ones(x_cat.shape[1], bool)]
    clf = HistGradientBoostingClassifier(categorical_features=mask if mask.any() else None, random_state=seed)
    pred = cross_val_predict(clf, x, truth, cv=StratifiedKFold(5, shuffle=True, random_state=seed))
    return float((pred == truth.to_numpy()).mean()), float(adjusted_rand_score(truth, pred))


#: Designs compared: spectral segments (the default), the same on last session's features (365-day
#: and 90-day activity instead of the rates while active), k-prototypes on the default features,
#: the design of two sessions ago (equal weights, silhouette-only k), and both on RFM features only.
DESIGNS: dict[str, dict] = {
    "spectral": {"algorithm": "spectral"},
    "spectral-365d": {"algorithm": "spectral", "legacy_features": True},
    "kprototypes": {"algorithm": "kprototypes"},
    "previous": {"algorithm": "kprototypes", "numeric_columns": None, "feature_groups": None, "min_jaccard": None,
                 "previous_design": True},
    "rfm-only": {"algorithm": "spectral", "numeric_columns": (*RFM_FEATURES, "order_rate"),
                 "categorical_columns": ()},
    "rfm-only-kmeans": {"algorithm": "kmeans", "numeric_columns": (*RFM_FEATURES, "order_rate"),
                        "categorical_columns": ()},
}


def score(frame: pd.DataFrame, design: str, n_boot: int, seed: int = 42) -> dict[str, float]:
    """Fit one design as the stage does (k 3..8, k-prototypes) and score it against the planted archetypes."""
    from sklearn.metrics import adjusted_rand_score

    from include.features.build import CATEGORICAL_FEATURES, NUMERIC_FEATURES
    from include.segmentation.model import bootstrap_stability, fit_segments

    options = dict(DESIGNS[design])
    if options.pop("previous_design", False):
        options["numeric_columns"] = NUMERIC_FEATURES
    if options.pop("legacy_features", False):
        from include.segmentation.model import LEGACY_SEGMENTATION_FEATURES, available_features

        options["numeric_columns"] = available_features(frame, NUMERIC_FEATURES)[0] + LEGACY_SEGMENTATION_FEATURES[-1:]
    known = frame[frame["archetype"].notna()]
    truth = known["archetype"]
    t0 = time.perf_counter()
    result = fit_segments(frame, k_min=3, k_max=8, seed=seed, n_init=4, **options)
    boot_options = {k: v for k, v in options.items() if k in ("numeric_columns", "categorical_columns",
                                                               "feature_groups")}
    boot_options.update(numeric_columns=result.numeric_columns, categorical_columns=result.categorical_columns)
    jaccard, _ = bootstrap_stability(frame, result.labels, result.k, algorithm=result.algorithm, n_boot=n_boot,
                                     seed=seed, **boot_options)
    seconds = time.perf_counter() - t0
    labels = result.labels[frame["archetype"].notna().to_numpy()]
    precision, recall = core_precision_recall(truth.reset_index(drop=True), labels)
    # The bound sees the traits too, whether or not the design uses them (RFM-only: none exist).
    traits = () if design.startswith("rfm-only") else CATEGORICAL_FEATURES
    acc, sup_ari = supervised_bound(known, truth.reset_index(drop=True), result.numeric_columns, traits, seed)
    return {"k": result.k, "algorithm": result.algorithm, "ari": adjusted_rand_score(truth, labels),
            "core_precision": precision, "core_recall": recall, "min_jaccard": float(jaccard.min()),
            "supervised_acc": acc, "supervised_ari": sup_ari, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persons", type=int, default=5000)
    parser.add_argument("--identity", choices=("exact", "splink"), default="exact")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/seg-bench-active"))
    parser.add_argument("--only", nargs="*", default=None, help="variant names (default: all)")
    parser.add_argument("--dates", nargs="*", type=dt.date.fromisoformat, default=None,
                        help="score only these as-of dates (default: every date of the variant)")
    parser.add_argument("--designs", nargs="*", default=list(DESIGNS), choices=list(DESIGNS))
    parser.add_argument("--boot", type=int, default=20, help="bootstrap refits for the gate's Jaccard")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as CSV")
    args = parser.parse_args()
    rows = []
    for variant in VARIANTS:
        if args.only and variant.name not in args.only:
            continue
        for date, frame in build_frames(variant, args.persons, args.identity, args.cache).items():
            if args.dates and date not in args.dates:
                continue
            for design in args.designs:
                row = {"variant": variant.name, "as_of_date": date.isoformat(), "design": design,
                       **score(frame, design, args.boot)}
                rows.append(row)
                print("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                      flush=True)
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(3).to_string(index=False))
    if args.out:
        table.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
