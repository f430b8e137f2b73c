"""The worked examples in examples/ (issue #27): each loads with its mapping, every row is accounted for,
extract says what it did with the bad values, and each runs through the DAG to published segments.

The expected counts are computed here from the example's own files (pandas), not copied from a run.
"""

import datetime as dt
import json

import pandas as pd
import pytest

from include.extract.validate import extract_and_validate
from include.load import load_mapping, read_mapping
from include.runtime.warehouse import Warehouse
from tests.conftest import ROOT

EXAMPLES = ROOT / "examples"
#: example -> (as-of date, DAG conf beyond the light defaults)
RUNS = {
    "invoice_lines": (dt.date(2011, 12, 9), {"identity_method": "exact"}),
    "transactions_only": (dt.date(1998, 6, 30), {"identity_method": "exact"}),
    "person_records": (dt.date(2025, 6, 30), {}),
}
LIGHT = {"k_min": 3, "k_max": 5, "silhouette_sample": 500, "n_bootstrap": 4, "min_jaccard": 0.0,
         "crm_targets": ["outbox"]}


def load_example(name: str, url: str) -> dict:
    results = load_mapping(read_mapping(EXAMPLES / name / "mapping.toml"), url, progress=False)
    assert all(r.balanced for r in results), [r.summary() for r in results]
    return {r.table: r for r in results}


def mapping_lines(name: str) -> int:
    return len((EXAMPLES / name / "mapping.toml").read_text(encoding="utf-8").splitlines())


@pytest.mark.parametrize("name", sorted(RUNS))
def test_example_mappings_are_short_and_have_no_sql(name):
    text = (EXAMPLES / name / "mapping.toml").read_text(encoding="utf-8")
    assert mapping_lines(name) <= 30
    assert "query" not in text and "SELECT" not in text.upper()
    assert (EXAMPLES / name / "README.md").exists() and (EXAMPLES / name / "make_example.py").exists()


def test_invoice_lines_example_accounts_for_every_line(tmp_path):
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    lines = pd.read_csv(EXAMPLES / "invoice_lines" / "invoice_lines.csv", dtype=str, keep_default_na=False)
    results = load_example("invoice_lines", url)
    guests = lines["CustomerID"] == ""
    known = lines[~guests]
    value = pd.to_numeric(known["Quantity"], errors="coerce") * pd.to_numeric(known["UnitPrice"], errors="coerce")
    summable = value.notna() & (value.abs() < 1e30)  # not the n/a line, not the 1e308 one
    per_invoice = pd.DataFrame({"positive": value[summable] > 0, "negative": value[summable] < 0}).groupby(
        known.loc[summable, "InvoiceNo"]).any()
    cancellations = int((~per_invoice["positive"] & per_invoice["negative"]).sum())
    orders = results["raw_orders"]
    assert orders.rows_in == len(lines) and orders.rows_guest == int(guests.sum())
    assert orders.quarantine_reasons == {"bad_line_value": 1, "line_value_out_of_range": 1}  # n/a, 1e308
    assert orders.rows_as_returns == results["raw_returns"].rows == cancellations > 0
    assert orders.rows == len(per_invoice) - cancellations
    assert orders.rows_aggregated == int(summable.sum()) - len(per_invoice)
    assert results["raw_identity_records"].rows == known["CustomerID"].nunique()
    with Warehouse(url) as wh:
        reports = {r.table: r for r in extract_and_validate(wh, RUNS["invoice_lines"][0])}
        quarantine = wh.query_df("SELECT source_table, reason, detail FROM quarantine")
        attribution = wh.query_df("SELECT * FROM return_attribution").iloc[0]
        net = wh.scalar("SELECT MIN(amount - COALESCE(returned_amount, 0)) FROM stg_orders")
        ids = wh.query_df("SELECT source_id FROM stg_identity_records")
    # Extract: the year-1 invoice, nothing else; every cancellation staged and its money placed.
    assert quarantine.to_dict("records") == [{"source_table": "raw_orders", "reason": "date_before_business_start",
                                              "detail": quarantine["detail"].iloc[0]}]
    assert quarantine["detail"].iloc[0].startswith("order_ts=0001-01-01")
    assert reports["raw_returns"].rows_staged == cancellations
    assert attribution["matched_to_order"] + attribution["matched_to_prior"] + attribution["unattributed_amount"] \
        == pytest.approx(attribution["returned_amount"])
    assert attribution["unattributed_amount"] > 0 and attribution["records_zero_net_spend"] >= 0
    assert net >= 0
    assert not ids["source_id"].str.endswith(".0").any()


def test_transactions_only_example_and_the_real_cdnow_file_load_with_the_same_mapping(tmp_path):
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    rows = pd.read_csv(EXAMPLES / "transactions_only" / "transactions.txt", sep=r"\s+", dtype=str)
    results = load_example("transactions_only", url)
    assert results["raw_orders"].rows == len(rows)
    assert results["raw_identity_records"].rows == rows["customer_id"].nunique()
    with Warehouse(url) as wh:
        extract_and_validate(wh, RUNS["transactions_only"][0])
        reasons = dict(wh.query_df("SELECT detail, reason FROM quarantine").itertuples(index=False))
        first = wh.query_df("SELECT source_id, CAST(created_at AS DATE) AS created FROM stg_identity_records")
        ids = wh.scalar("SELECT COUNT(DISTINCT order_id) FROM raw_orders")
    assert reasons == {"order_ts=00010101": "date_before_business_start", "amount=NaN": "non_numeric_value",
                       "amount=1e308": "value_above_bound"}
    assert ids == len(rows)
    plausible = rows[rows["date"] >= "19700101"]
    expected = pd.to_datetime(plausible.groupby("customer_id")["date"].min(), format="%Y%m%d").dt.date
    created = pd.to_datetime(first.set_index("source_id")["created"]).dt.date
    assert created.sort_index().to_dict() == expected.sort_index().to_dict()

    # The real file (lifetimes' CDNOW master, 69,659 purchases of 23,570 customers), same mapping but its path.
    from include.clv.cdnow import cdnow_path

    real = tmp_path / "cdnow"
    real.mkdir()
    text = (EXAMPLES / "transactions_only" / "mapping.toml").read_text(encoding="utf-8")
    (real / "mapping.toml").write_text(text.replace('"transactions.txt"', json.dumps(str(cdnow_path("CDNOW_master.txt")))))
    loaded = {r.table: r for r in load_mapping(read_mapping(real / "mapping.toml"), f"duckdb:///{real / 'w.duckdb'}",
                                               progress=False)}
    assert (loaded["raw_orders"].rows, loaded["raw_identity_records"].rows) == (69_659, 23_570)


def test_person_records_example_loads_every_record_of_both_files(tmp_path):
    url = f"duckdb:///{tmp_path / 'w.duckdb'}"
    a = pd.read_csv(EXAMPLES / "person_records" / "registry_a.csv", dtype=str, keep_default_na=False)
    b = pd.read_csv(EXAMPLES / "person_records" / "registry_b.csv", sep=";", dtype=str, keep_default_na=False)
    results = load_example("person_records", url)
    assert results["raw_identity_records"].rows == len(a) + len(b)
    with Warehouse(url) as wh:
        people = wh.query_df("SELECT source_system, source_id, address FROM raw_identity_records")
        reports = {r.table: r for r in extract_and_validate(wh, RUNS["person_records"][0])}
    assert people.groupby("source_system").size().to_dict() == {"registry_a": len(a), "registry_b": len(b)}
    row = a.iloc[0]
    joined = " ".join(p for p in (row["street_number"], row["address_1"], row["address_2"], row["suburb"]) if p)
    assert people.set_index("source_id").loc[row["rec_id"], "address"] == joined
    assert reports["raw_identity_records"].rows_quarantined == 0 and reports["raw_orders"].rows_quarantined == 0


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUNS))
def test_example_runs_through_the_dag_to_published_segments(name, dagbag, tmp_path, monkeypatch):
    as_of, conf = RUNS[name]
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    load_example(name, url)
    monkeypatch.setenv("WAREHOUSE_URL", url)
    logical = dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    run = dagbag.dags["customer_segmentation"].test(
        logical_date=logical, run_conf={**LIGHT, **conf, "as_of_date": as_of.isoformat()})
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    with Warehouse(url) as wh:
        d = {"d": as_of}
        features = wh.scalar("SELECT COUNT(*) FROM customer_features WHERE as_of_date = :d", d)
        published = wh.query_df("SELECT customer_key, segment_name FROM customer_segments WHERE as_of_date = :d", d)
        monetary = wh.scalar("SELECT MIN(monetary) FROM customer_features WHERE as_of_date = :d", d)
        linked = wh.query_df("SELECT COUNT(*) AS records, COUNT(DISTINCT customer_key) AS customers "
                             "FROM identity_map WHERE as_of_date = :d", d).iloc[0]
    assert len(published) == features > 100 and published["segment_name"].notna().all()
    assert monetary >= 0
    if name == "person_records":  # people in both registries are one customer each
        assert linked["customers"] < linked["records"]
