"""Running dates in any order, with re-runs, publishes what running them in order publishes.

The real stage functions (``include/stages/*`` through ``RunInfo``, no
Airflow) on generated data: Splink trained per date, k-prototypes fits with
bootstrap, BG/NBD and Gamma-Gamma fits, the experiment stage, each run
followed by an outbox push and a webhook push to the real reference receiver
(``scripts/webhook_receiver.py``). Each scenario has its own warehouse,
receiver and MLflow store (so each trains its own identity models):

- A runs four weekly dates in order. Its first date is not pushed (the CRM is
  connected from the second week on), so A delivered the same dates as C;
- B runs them shuffled with re-runs (4th, 1st, 3rd, 2nd, re-run 3rd, re-run 4th);
- C is the live case of issue #31: the 2nd to 4th dates in order, then the
  early 1st date backfilled, and the later dates NOT re-run.

Labels, economics, priorities, transitions and the holdout record are the
same in all three. The experiment's policy start is the first date whose
labels reached a CRM target, and a backfilled date's push sends the newest
labels (a CRM never goes back), so C's 10-24 is never delivered: A and C
agree on every experiment table (``policy_runs``, ``segment_lift`` too),
while B delivered only 11-14's labels and starts there.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest

from include.crm.contract import CURRENT_OUTBOX_SQL
from include.runtime.run import RunInfo
from include.runtime.settings import PipelineSettings
from include.runtime.warehouse import Warehouse
from include.stages import stage
from tests.conftest import DATA_END, copy_duckdb
from tests.crm_servers import ReceiverProcess
from tests.plugins.test_crm import operator, set_conn

DATES = [DATA_END - dt.timedelta(days=7 * i) for i in (3, 2, 1, 0)]
IN_ORDER = [0, 1, 2, 3]
SHUFFLED = [3, 0, 2, 1, 2, 3]  # 4th, 1st, 3rd, 2nd, re-run 3rd, re-run 4th
EARLY_BACKFILL = [1, 2, 3, 0]  # issue #31: 10-31, 11-07, 11-14 live, then 10-24 backfilled; no later re-run
STAGES = ["extract_validate", "resolve_identity", "build_features", "segment_customers", "fit_clv",
          "backtest_claims", "label_segments", "crosscheck_clv", "publish_segments", "track_migration",
          "build_economics", "run_experiment"]
# Small but real: every fit runs, with few candidates and bootstrap refits.
SETTINGS = PipelineSettings(k_min=3, k_max=4, n_init=1, n_bootstrap=3, silhouette_sample=400, min_jaccard=0.0,
                            identity_u_max_pairs=2e5, seed=7)

#: Table -> (sort keys, columns left out of the comparison: MLflow run ids differ by construction).
COMPARED = {
    "identity_map": (["as_of_date", "source_system", "source_id"], []),
    "customer_segments": (["as_of_date", "customer_key"], ["model_run_id"]),
    "segment_profiles": (["as_of_date", "fit_segment"], ["model_run_id"]),
    "segment_labels": (["as_of_date", "fit_segment"], ["model_run_id"]),
    "claims_backtest": (["as_of_date", "claim", "segment_name"], []),
    "segment_transitions": (["to_date", "from_segment_id", "to_segment_id"], []),
    "customer_economics": (["as_of_date", "customer_key"], []),
    "segment_economics": (["as_of_date", "segment_id"], []),
    "customer_priority": (["as_of_date", "customer_key"], []),
    "customer_holdout": (["as_of_date", "customer_key"], []),
}
#: The experiment's other tables (policy start and lift follow what was delivered; see the module docstring).
EXPERIMENT = {
    "policy_runs": (["as_of_date"], ["recorded_at", "rewritten_by", "rewrite_detail"]),
    "segment_lift": (["as_of_date", "segment_id", "metric"], []),
}


def _by_date(series: pd.Series) -> dict[str, object]:
    return {str(pd.Timestamp(d).date()): v for d, v in series.items()}


def run_scenario(name: str, order: list[int], tmp_path: Path, demo_warehouse_file: Path,
                 unpushed: frozenset[int] = frozenset(), report: bool = False) -> dict:
    """Run ``order`` (indexes into DATES), each run followed by both pushes; return tables and CRM state.

    ``unpushed``: positions in ``order`` whose runs push nothing. ``report``: render the report after the
    experiment (the DAG's order), into the scenario's own data folder.
    """
    from include.report.html import write_report
    from include.runtime.currency import run_currency

    url = copy_duckdb(demo_warehouse_file, tmp_path / f"{name}.duckdb")
    out = {"runs": []}
    with pytest.MonkeyPatch.context() as mp, ReceiverProcess(tmp_path / f"{name}-receiver.sqlite") as receiver:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / f'{name}-mlflow.db'}")
        mp.setenv("SEGMENTATION_DATA_DIR", str(tmp_path / f"{name}-data"))
        set_conn(mp, "crm_webhook", receiver.url, receiver.secret)
        for i, idx in enumerate(order):
            date = DATES[idx]
            run = RunInfo("test_order_independence", f"{name}-{i}-{date}", date, SETTINGS, url)
            results = {task: stage(task)(run) for task in STAGES + (["render_report"] if report else [])}
            pushes = {} if i in unpushed else {
                t: operator(t, url, date=date, batch_size=500).execute({"run_id": f"{name}-{i}-{t}"})
                for t in ("outbox", "webhook")}
            out["runs"].append({"date": date.isoformat(), "k": results["segment_customers"]["k"],
                                "republished": results["publish_segments"]["republished"],
                                "later_dates_changed": results["run_experiment"]["later_dates_changed"],
                                "policy_start": results["run_experiment"]["policy_start"],
                                "later_reports_changed": results.get("render_report", {}).get(
                                    "later_reports_changed", []),
                                "pushed": {t: (p["label_date"], p["changed"]) for t, p in pushes.items()}})
        out["receiver"] = receiver.current()
        out["deliveries"] = receiver.deliveries()
        if report:
            # Every date's report file as it is now, and as the warehouse renders it now.
            from include.runtime.paths import reports_dir

            fresh = tmp_path / f"{name}-fresh-reports"
            with Warehouse(url) as wh:
                code, symbol = run_currency(wh, SETTINGS.currency_code, SETTINGS.currency_symbol)  # as the stage
                out["reports"] = {d: ((reports_dir() / f"segment_report_{d.isoformat()}.html").read_text(),
                                      write_report(wh, d, fresh, currency=symbol, currency_code=code).read_text())
                                  for d in DATES}
    with Warehouse(url) as wh:
        for table, (keys, dropped) in {**COMPARED, **EXPERIMENT}.items():
            frame = wh.query_df(f"SELECT * FROM {table}").drop(columns=dropped)
            out[table] = frame.sort_values(keys, ignore_index=True)
        outbox = wh.query_df(CURRENT_OUTBOX_SQL, {"target": "outbox"})
        out["outbox"] = {k: (str(d)[:10], json.loads(p)) for k, d, p in
                         zip(outbox["customer_key"], outbox["as_of_date"], outbox["payload"], strict=True)}
        out["outbox_rows"] = int(wh.scalar("SELECT COUNT(*) FROM crm_outbox WHERE target = 'outbox'"))
        out["rewritten"] = wh.query_df("SELECT as_of_date, rewritten_by, rewrite_detail FROM policy_runs "
                                       "WHERE rewritten_by IS NOT NULL ORDER BY as_of_date")
    return out


def differing_rows(a: pd.DataFrame, b: pd.DataFrame, keys: list[str]) -> tuple[int, list[str]]:
    """Rows of ``a`` and ``b`` (matched on ``keys``) that differ in any column or exist on one side only,
    and the columns that differ."""
    merged = a.merge(b, on=keys, how="outer", suffixes=("_a", "_b"), indicator=True)
    differ = merged["_merge"] != "both"
    columns = []
    for column in (c for c in a.columns if c not in keys):
        x, y = merged[f"{column}_a"], merged[f"{column}_b"]
        if pd.api.types.is_float_dtype(x) and pd.api.types.is_float_dtype(y):
            same = ((x - y).abs() <= 1e-9 * y.abs().clip(lower=1e-3)) | (x.isna() & y.isna())
        else:
            same = (x.astype(object) == y.astype(object)) | (x.isna() & y.isna())
        if not same.astype(bool).all():
            columns.append(column)
        differ |= ~same.astype(bool)
    return int(differ.sum()), columns


@pytest.fixture(scope="module")
def in_order(tmp_path_factory, demo_warehouse_file, airflow_db) -> dict:
    """Scenario A: the four dates in order; the first date is not pushed (see the module docstring)."""
    return run_scenario("in_order", IN_ORDER, tmp_path_factory.mktemp("in_order"), demo_warehouse_file,
                        unpushed=frozenset({0}))


def test_shuffled_runs_with_reruns_publish_what_in_order_runs_publish(in_order, tmp_path, demo_warehouse_file,
                                                                      airflow_db):
    a = in_order
    b = run_scenario("shuffled", SHUFFLED, tmp_path, demo_warehouse_file)
    counts = {"runs A": a["runs"], "runs B": b["runs"]}
    for table in COMPARED:
        pd.testing.assert_frame_equal(a[table], b[table], check_exact=False, rtol=1e-9, obj=table)
        counts[table] = len(a[table])
    segments = a["customer_segments"]
    # Names belong to the ids they describe (segment_labels, their one owner): one name per (date, id), no
    # name for two ids on a date, and every published name is its id's label name (or the name it was
    # published with before).
    profiles = a["segment_labels"].drop_duplicates(["as_of_date", "segment_id"])
    assert not profiles.duplicated(["as_of_date", "segment_name"]).any()
    published_names = segments.drop_duplicates(["as_of_date", "segment_id"])
    assert not published_names.duplicated(["as_of_date", "segment_name"]).any()
    named = published_names.merge(profiles[["as_of_date", "segment_id", "segment_name"]],
                                  on=["as_of_date", "segment_id"], how="left", suffixes=("", "_profile"))
    own = named["segment_name_profile"].notna()
    assert (named.loc[own, "segment_name"] == named.loc[own, "segment_name_profile"]).all()
    # Downstream never disagrees with the published labels.
    for table in ("customer_economics", "customer_priority"):
        joined = a[table].merge(segments, on=["as_of_date", "customer_key"], suffixes=("", "_published"))
        assert len(joined) == len(segments)
        assert (joined["segment_id"] == joined["segment_id_published"]).all(), table
        assert (joined["segment_name"] == joined["segment_name_published"]).all(), table
    # CRM: the same final content per customer in the outbox and at the receiver. Only the label date
    # may differ: in order, a customer whose label never changed was last sent an older date's label;
    # shuffled, the first push already sent the newest date's labels and only those ever went out.
    assert {k: p for k, (_, p) in a["outbox"].items()} == {k: p for k, (_, p) in b["outbox"].items()}
    assert {k: f for k, (_, f) in a["receiver"].items()} == {k: f for k, (_, f) in b["receiver"].items()}
    newest = DATES[-1].isoformat()
    assert {d for d, _ in b["receiver"].values()} == {d for d, _ in b["outbox"].values()} == {newest}
    assert len(b["receiver"]) == (segments["as_of_date"] == pd.Timestamp(DATES[-1])).sum()
    # Forward only: in B no customer was ever delivered a label older than one delivered before.
    seen: dict[str, str] = {}
    went_back = 0
    for _, label_date, records in b["deliveries"]:
        for record in records:
            went_back += seen.get(record["customer_key"], "") > label_date
            seen[record["customer_key"]] = label_date
    assert went_back == 0
    # B delivered only 11-14's labels (its first run was 11-14; every later push sends the newest labels):
    # no policy started before them, so every date is its own first run and no lift is measured.
    assert {str(d)[:10]: str(s)[:10] for d, s in zip(b["policy_runs"]["as_of_date"], b["policy_runs"]["policy_start"],
                                                     strict=True)} == {d.isoformat(): d.isoformat() for d in DATES}
    assert b["segment_lift"].empty
    counts.update({
        "customers per date": _by_date(segments.groupby("as_of_date").size()),
        "segments per date": _by_date(profiles.groupby("as_of_date").size()),
        "names (id: name)": _by_date(profiles.groupby("as_of_date").apply(
            lambda g: dict(zip(g["segment_id"].astype(int), g["segment_name"], strict=True)), include_groups=False)),
        "rows that differ A vs B": 0,
        "customers moved (published)": int(a["segment_transitions"].query(
            "from_segment_id.notna() and to_segment_id.notna() and from_segment_id != to_segment_id",
            engine="python")["customers"].sum()),
        "receiver deliveries A/B": (sum(len(r) for *_, r in a["deliveries"]), sum(len(r) for *_, r in b["deliveries"])),
        "outbox rows A/B": (a["outbox_rows"], b["outbox_rows"]),
        "customers in receiver": len(b["receiver"]), "delivered labels that went back in time (B)": went_back,
    })
    print("\nORDER INDEPENDENCE COUNTS\n" + json.dumps(counts, indent=1, default=str))


def test_backfilled_early_date_without_rerunning_later_dates_gives_the_in_order_tables(
        in_order, tmp_path, demo_warehouse_file, airflow_db):
    """Issue #31: after 10-31 .. 11-14 ran (and were delivered), 10-24 is backfilled and nothing else re-run.

    Publishing 10-24 republishes the later dates, economics recomputes them, and the experiment stage
    re-derives their holdout record, policy and lift: every table equals the in-order run's, row for row.
    The later dates whose record changed are named and their reports rendered again.
    """
    a = in_order
    c = run_scenario("early_backfill", EARLY_BACKFILL, tmp_path, demo_warehouse_file, report=True)
    # Known, left to the owner of publishing (include/migration/publish.py): publish_from rewrites a later
    # date's segment_profiles only when the id fold changes its ids, so 10-31's match distances stay as its
    # first fit left them (none: it had no earlier date then). Only that may differ; nothing else.
    profiles_a, profiles_c = (x["segment_profiles"].drop(columns="match_distance") for x in (a, c))
    distance_dates = set(a["segment_profiles"].merge(
        c["segment_profiles"], on=["as_of_date", "segment_id"], suffixes=("_a", "_c")).query(
        "match_distance_a.notna() != match_distance_c.notna() or abs(match_distance_a - match_distance_c) > 1e-9",
        engine="python")["as_of_date"].astype(str).str[:10])
    assert distance_dates <= {"2026-10-31"}
    # Known, inherent to incremental linking (include/identity/incremental.py): the later dates' identity ran
    # before 10-24 existed, so each linked with the model of its chain's first run (10-31's in C, 10-24's in
    # A). The customer keys are the same; only the match probabilities behind cluster_confidence may differ,
    # and only on those later dates.
    ids_a, ids_c = a["identity_map"], c["identity_map"]
    keys = COMPARED["identity_map"][0]
    joined = ids_a.merge(ids_c, on=keys, suffixes=("_a", "_c"))
    assert len(joined) == len(ids_a) == len(ids_c) and (joined["customer_key_a"] == joined["customer_key_c"]).all()
    confidence_dates = set(joined.loc[(joined["cluster_confidence_a"] - joined["cluster_confidence_c"]).abs() > 1e-9,
                                      "as_of_date"].astype(str).str[:10])
    assert confidence_dates <= {"2026-10-31", "2026-11-07", "2026-11-14"}
    a = {**a, "segment_profiles": profiles_a, "identity_map": ids_a.drop(columns="cluster_confidence")}
    c = {**c, "segment_profiles": profiles_c, "identity_map": ids_c.drop(columns="cluster_confidence")}
    found = {table: differing_rows(a[table], c[table], keys) for table, (keys, _) in {**COMPARED, **EXPERIMENT}.items()}
    differ = {table: n for table, (n, _) in found.items()}
    assert sum(differ.values()) == 0, {table: found for table, found in found.items() if found[0]}
    for table in found:
        pd.testing.assert_frame_equal(a[table], c[table], check_exact=False, rtol=1e-9, obj=table)
    # The experiment's start is the first delivered date: 10-31 in both (10-24 was never delivered in C,
    # its push sent 11-14's labels; A connected its CRM from 10-31 on), and 10-24 is its own first run.
    starts = {str(d)[:10]: str(s)[:10] for d, s in zip(c["policy_runs"]["as_of_date"], c["policy_runs"]["policy_start"],
                                                       strict=True)}
    assert starts == {"2026-10-24": "2026-10-24", "2026-10-31": "2026-10-31", "2026-11-07": "2026-10-31",
                      "2026-11-14": "2026-10-31"}
    assert {str(d)[:10] for d in c["segment_lift"]["as_of_date"]} == {"2026-11-07", "2026-11-14"}
    # Said loudly: the backfill's experiment result names the later dates whose record it changed, the policy
    # record keeps who rewrote them, and the report stage wrote again every later report whose content
    # changed (those dates and any whose transitions or economics changed): every report matches the warehouse.
    backfill = c["runs"][-1]
    assert backfill["date"] == "2026-10-24" and backfill["republished"] == ["2026-10-31", "2026-11-07", "2026-11-14"]
    changed = sorted(backfill["later_dates_changed"])
    assert changed, "the backfill changed no later date: the case is not exercised on this data"
    assert sorted(str(d)[:10] for d in c["rewritten"]["as_of_date"]) == changed
    assert {str(d)[:10] for d in c["rewritten"]["rewritten_by"]} == {"2026-10-24"}
    assert set(changed) <= set(backfill["later_reports_changed"])
    stale = [str(d) for d, (file, fresh) in c["reports"].items() if file != fresh]
    assert stale == []
    # The backfill's pushes sent only the newest labels' changes: no customer got 10-24's labels.
    assert all(label_date == DATES[-1].isoformat() for label_date, _ in backfill["pushed"].values())
    print("\nEARLY BACKFILL (C) vs IN ORDER (A)\n" + json.dumps({
        "runs C": c["runs"], "rows compared": {t: len(a[t]) for t in differ}, "rows that differ": differ,
        "policy_start by date": starts, "lift rows": len(c["segment_lift"]),
        "segment_profiles.match_distance differing (dates)": sorted(distance_dates),
        "outbox rows A/C": (a["outbox_rows"], c["outbox_rows"]),
    }, indent=1, default=str))
