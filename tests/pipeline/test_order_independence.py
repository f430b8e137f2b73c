"""Running dates in any order, with re-runs, publishes what running them in order publishes.

The real stage functions (``include/stages/*`` through ``RunInfo``, no
Airflow) on generated data: Splink trained per date, k-prototypes fits with
bootstrap, BG/NBD and Gamma-Gamma fits, each run followed by an outbox push
and a webhook push to the real reference receiver (``scripts/webhook_receiver.py``).
Scenario A runs four weekly dates in order; B runs them shuffled with
re-runs (4th, 1st, 3rd, 2nd, re-run 3rd, re-run 4th), in its own warehouse,
receiver and MLflow store (so B trains its own identity models).
"""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd

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
STAGES = ["extract_validate", "resolve_identity", "build_features", "segment_customers", "fit_clv",
          "backtest_claims", "label_segments", "crosscheck_clv", "publish_segments", "track_migration",
          "build_economics"]
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
}


def _by_date(series: pd.Series) -> dict[str, object]:
    return {str(pd.Timestamp(d).date()): v for d, v in series.items()}


def run_scenario(name: str, order: list[int], tmp_path, monkeypatch, demo_warehouse_file) -> dict:
    """Run ``order`` (indexes into DATES), each run followed by both pushes; return tables and CRM state."""
    url = copy_duckdb(demo_warehouse_file, tmp_path / f"{name}.duckdb")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / f'{name}-mlflow.db'}")
    out = {"runs": []}
    with ReceiverProcess(tmp_path / f"{name}-receiver.sqlite") as receiver:
        set_conn(monkeypatch, "crm_webhook", receiver.url, receiver.secret)
        for i, idx in enumerate(order):
            date = DATES[idx]
            run = RunInfo("test_order_independence", f"{name}-{i}-{date}", date, SETTINGS, url)
            results = {task: stage(task)(run) for task in STAGES}
            pushes = {t: operator(t, url, date=date, batch_size=500).execute({"run_id": f"{name}-{i}-{t}"})
                      for t in ("outbox", "webhook")}
            out["runs"].append({"date": date.isoformat(), "k": results["segment_customers"]["k"],
                                "republished": results["publish_segments"]["republished"],
                                "pushed": {t: (p["label_date"], p["changed"]) for t, p in pushes.items()}})
        out["receiver"] = receiver.current()
        out["deliveries"] = receiver.deliveries()
    with Warehouse(url) as wh:
        for table, (keys, dropped) in COMPARED.items():
            frame = wh.query_df(f"SELECT * FROM {table}").drop(columns=dropped)
            out[table] = frame.sort_values(keys, ignore_index=True)
        outbox = wh.query_df(CURRENT_OUTBOX_SQL, {"target": "outbox"})
        out["outbox"] = {k: (str(d)[:10], json.loads(p)) for k, d, p in
                         zip(outbox["customer_key"], outbox["as_of_date"], outbox["payload"], strict=True)}
        out["outbox_rows"] = int(wh.scalar("SELECT COUNT(*) FROM crm_outbox WHERE target = 'outbox'"))
    return out


def test_shuffled_runs_with_reruns_publish_what_in_order_runs_publish(tmp_path, monkeypatch, demo_warehouse_file,
                                                                      airflow_db):
    a = run_scenario("in_order", IN_ORDER, tmp_path, monkeypatch, demo_warehouse_file)
    b = run_scenario("shuffled", SHUFFLED, tmp_path, monkeypatch, demo_warehouse_file)
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
