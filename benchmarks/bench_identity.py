"""Benchmark identity resolution: Splink training, prediction and clustering at scale.

    .venv/bin/python benchmarks/bench_identity.py --persons 480000
    .venv/bin/python benchmarks/bench_identity.py --persons 48000
    .venv/bin/python benchmarks/bench_identity.py --persons 5400 --identity-profile person_only
    .venv/bin/python benchmarks/bench_identity.py --persons 5400 --identity-profile person_only --drop-ids

Generates the demo generator's identity records (web, app and call-centre
accounts with typos, missing fields, households, moves and number changes) in
a separate process, then times, in a fresh process so the peak memory is the
stage's own: normalisation, unsupervised training (λ, u by sampling, m by EM),
prediction, clustering, stable keys and golden records, plus the exact
baseline on the strong identifiers present; both are scored (pairwise F1,
precision, recall) against the generator's truth, which is never used for
training. ``--identity-profile`` picks the generator's identity profile
(rich, person_only, contact_only); ``--drop-ids`` removes the ``id_*``
columns (person_only without the national id). ``--misses`` adds, for the
Splink clusters, the agreement patterns (``=`` equal, ``x`` different, ``-``
missing on a side; no values) of the missed and the falsely joined true pairs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def generate(persons: int, seed: int, out: Path, profile: str = "rich", drop_ids: bool = False) -> None:
    from include.demo.generate import DemoGenerator

    gen = DemoGenerator(persons, seed=seed, identity_profile=profile)
    records = gen.profile_records(gen.identity_records(gen.persons()))
    records["created_at"] = pd.to_datetime(records["created_at"])
    if drop_ids:
        records = records.drop(columns=[c for c in records.columns if c.startswith("id_")])
    records.drop(columns=["_created", "loaded_at"]).to_parquet(out)


def _pair_patterns(linkage: pd.DataFrame, columns: tuple[str, ...], cluster: pd.Series, truth: pd.Series,
                   missed: bool, top: int = 12) -> dict[str, int]:
    """Agreement patterns of record pairs one person split over clusters (``missed``) or two persons joined.

    Scoring only: the truth is read here after clustering and nothing flows back.
    """
    import numpy as np

    frame = linkage[["unique_id", *columns]].assign(person=truth.to_numpy(), cluster=cluster.to_numpy())
    key = "person" if missed else "cluster"
    sizes = frame.groupby(key)[key].transform("size")
    multi = frame[sizes > 1]
    pairs = multi.merge(multi, on=key, suffixes=("_l", "_r"))
    pairs = pairs[pairs["unique_id_l"] < pairs["unique_id_r"]]
    other = "cluster" if missed else "person"
    pairs = pairs[pairs[f"{other}_l"] != pairs[f"{other}_r"]]

    def agree(col: str) -> np.ndarray:
        left, right = pairs[f"{col}_l"].astype(object), pairs[f"{col}_r"].astype(object)
        equal = (left.fillna("\0") == right.fillna("\1")).to_numpy()
        return np.where((left.isna() | right.isna()).to_numpy(), "-", np.where(equal, "=", "x"))

    if pairs.empty:
        return {}
    pattern = pd.Series(["".join(p) for p in zip(*(agree(c) for c in columns), strict=True)])
    return {" ".join(k): int(v) for k, v in pattern.value_counts().head(top).items()}


def run_stage(path: Path, u_max_pairs: float, threshold: float, misses: bool = False) -> dict:
    from include.identity import linkage as identity_splink
    from include.identity.resolve import (
        assign_stable_keys,
        evaluate_clusters,
        exact_clusters,
        golden_records,
        strong_identifier_keys,
    )

    records = pd.read_parquet(path)
    truth = records.pop("person_id")
    for col in ("email", "phone", "postcode", "region"):
        if col not in records.columns:
            records[col] = pd.Series(pd.NA, index=records.index, dtype="string")
    timings = {}
    t0 = t = time.perf_counter()
    linkage = identity_splink.linkage_input(records)
    columns = identity_splink.present_columns(linkage)
    timings["normalise_s"] = time.perf_counter() - t
    t = time.perf_counter()
    model = identity_splink.train_model(linkage, columns=columns, seed=42, u_max_pairs=u_max_pairs)
    timings["train_s"] = time.perf_counter() - t
    t = time.perf_counter()
    linked = identity_splink.predict_clusters(linkage, model, threshold)
    timings["predict_cluster_s"] = time.perf_counter() - t
    t = time.perf_counter()
    members = linkage["unique_id"]
    cluster = members.map(linked.clusters.set_index("unique_id")["cluster_id"])
    keyed = assign_stable_keys(pd.DataFrame({"member": members, "cluster": cluster}), dt.date(2026, 11, 14))
    rec = records.copy()
    rec["email_norm"], rec["phone_norm"], rec["customer_key"] = linkage["email"], linkage["phone"], keyed["customer_key"]
    customers = golden_records(rec, dt.date(2026, 11, 14))
    timings["keys_golden_s"] = time.perf_counter() - t
    timings["stage_total_s"] = time.perf_counter() - t0
    t = time.perf_counter()
    baseline = exact_clusters(strong_identifier_keys(linkage))
    timings["exact_baseline_s"] = time.perf_counter() - t
    result = {
        "records": len(records), "persons": int(truth.nunique()), "customers": len(customers),
        "columns": list(columns),
        "pairs_scored": linked.pairs_scored,
        "untrained_levels": identity_splink.untrained_levels(model),
        **{k: round(v, 1) for k, v in timings.items()},
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        # CPU seconds of the stage process: comparable when other jobs share the cores.
        "cpu_s": round(resource.getrusage(resource.RUSAGE_SELF).ru_utime
                       + resource.getrusage(resource.RUSAGE_SELF).ru_stime, 1),
        "splink": {k: round(v, 4) for k, v in evaluate_clusters(pd.Series(keyed["customer_key"]), truth).items()},
        "exact_baseline": {k: round(v, 4) for k, v in evaluate_clusters(baseline, truth).items()},
    }
    if misses:
        # After the figures above, so the analysis does not count in the stage's peak memory.
        result["pattern_columns"] = " ".join(columns)
        for name, missed in (("missed_pairs", True), ("false_pairs", False)):
            result[name] = _pair_patterns(linkage, columns, keyed["customer_key"], truth, missed)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--persons", type=int, default=480_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--u-max-pairs", type=float, default=2e7)
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--identity-profile", choices=("rich", "person_only", "contact_only"), default="rich")
    parser.add_argument("--drop-ids", action="store_true", help="remove the id_* columns (e.g. the national id)")
    parser.add_argument("--misses", action="store_true", help="agreement patterns of missed and false pairs")
    parser.add_argument("--stage", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.u_max_pairs, args.threshold, args.misses)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records.parquet"
        t = time.perf_counter()
        generate(args.persons, args.seed, path, args.identity_profile, args.drop_ids)
        print(f"generated {args.persons:,} persons in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--stage", str(path), "--u-max-pairs", str(args.u_max_pairs),
                              "--threshold", str(args.threshold), *(["--misses"] if args.misses else [])],
                             capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = round(wall, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
