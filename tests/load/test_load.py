"""Loader: the example shop end to end, conversions, sources and mapping errors, on real DuckDB files."""

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from include.load import MappingError, load_mapping, read_mapping
from include.runtime.warehouse import Warehouse
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "shop" / "mapping.toml"
SHOP_AS_OF = dt.date(2025, 12, 31)


def url_of(tmp_path: Path) -> str:
    return f"duckdb:///{tmp_path / 'warehouse.duckdb'}"


def write_mapping(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mapping.toml"
    path.write_text(text, encoding="utf-8")
    return path


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def raw(tmp_path: Path, table: str) -> pd.DataFrame:
    with Warehouse(url_of(tmp_path)) as wh:
        return wh.query_df(f"SELECT * FROM {table}")


IDENTITY_CSV = "id;sys;created\nP1;shop;2025-01-01\n"
IDENTITY_MAPPING = """
[tables.raw_identity_records]
file = "people.csv"
columns = { source_id = "id", source_system = "sys", created_at = "created" }
"""


def test_example_shop_loads_and_runs_through_segments(tmp_path):
    from include.runtime.run import RunInfo
    from include.runtime.settings import PipelineSettings
    from include.stages import stage

    url = url_of(tmp_path)
    results = {r.table: r.rows for r in load_mapping(read_mapping(EXAMPLE), url, progress=False)}
    customers = pd.read_csv(EXAMPLE.parent / "customers.csv", sep=";", dtype=str)
    orders = pd.read_csv(EXAMPLE.parent / "orders.csv", sep=";", dtype=str)
    assert results == {"raw_identity_records": len(customers), "raw_orders": len(orders)}

    settings = PipelineSettings(n_bootstrap=5, n_init=2, identity_method="exact")
    run = RunInfo("test_load", "load-example", SHOP_AS_OF, settings, url)
    extracted = stage("extract_validate")(run)
    stage("resolve_identity")(run)
    stage("build_features")(run)
    stage("segment_customers")(run)

    with Warehouse(url) as wh:
        quarantine = wh.query_df("SELECT source_key, reason, detail FROM quarantine WHERE as_of_date = :d",
                                 {"d": SHOP_AS_OF})
        issues = wh.query_df("SELECT source_key, column_name, reason, detail FROM field_issues "
                             "WHERE as_of_date = :d", {"d": SHOP_AS_OF})
        staged_people = wh.scalar("SELECT COUNT(*) FROM stg_identity_records WHERE as_of_date = :d", {"d": SHOP_AS_OF})
        staged_orders = wh.query_df("SELECT order_id, order_ts, amount FROM stg_orders WHERE as_of_date = :d",
                                    {"d": SHOP_AS_OF})
        ids = wh.query_df("SELECT id_type, COUNT(*) AS n FROM stg_identity_identifiers WHERE as_of_date = :d "
                          "GROUP BY id_type", {"d": SHOP_AS_OF})
        features = wh.scalar("SELECT COUNT(*) FROM customer_features WHERE as_of_date = :d", {"d": SHOP_AS_OF})
        linked = wh.scalar("SELECT COUNT(DISTINCT customer_key) FROM identity_map WHERE as_of_date = :d",
                           {"d": SHOP_AS_OF})
        segments = wh.scalar("SELECT COUNT(*) FROM segment_assignments WHERE as_of_date = :d", {"d": SHOP_AS_OF})
        gate_passed = wh.scalar("SELECT gate_passed FROM segmentation_runs WHERE as_of_date = :d", {"d": SHOP_AS_OF})
        manifest = wh.query_df("SELECT table_name, currency, timezone FROM load_manifest ORDER BY table_name")

    # Every identity record is staged: invalid birth dates are nulled, not quarantined.
    assert staged_people == len(customers)
    bad_dob = customers[~customers["Geburtsdatum"].str.fullmatch(r"\d\d\.\d\d\.\d{4}")
                        | (customers["Geburtsdatum"] == "31.02.1980")]
    assert len(bad_dob) > 0
    assert set(issues["column_name"]) == {"date_of_birth"}
    assert sorted(issues["source_key"]) == sorted(bad_dob["System"] + "|" + bad_dob["KundenNr"])
    # The two bad orders are quarantined with their reason; every other order is staged.
    reasons = dict(zip(quarantine["source_key"], quarantine["reason"], strict=True))
    assert reasons == {"100004": "non_numeric_value", "100009": "unknown_customer_id"}
    assert len(staged_orders) + len(quarantine) == len(orders)
    amounts = dict(zip(staged_orders["order_id"], staged_orders["amount"], strict=True))
    assert amounts["100006"] == pytest.approx(1249.90)
    source = orders.set_index("BestellNr")
    assert amounts["100001"] == pytest.approx(float(source.loc["100001", "Betrag"].replace(",", ".")))
    # YYYYMMDD order dates stay on their calendar day (a date has no time to move to UTC).
    first = staged_orders.set_index("order_id").loc["100001", "order_ts"]
    assert pd.Timestamp(first) == pd.Timestamp(source.loc["100001", "Bestelldatum"])
    assert dict(zip(ids["id_type"], ids["n"], strict=True)) == {
        "national": int(customers["Steuer-ID"].notna().sum()),
        "loyalty": int(customers["Kundenkarte"].notna().sum()),
    }
    # Web-shop and store records of one person (same email) are one customer.
    assert 0 < linked < staged_people
    assert features > 0 and segments == features
    assert gate_passed, "the example's four kinds of customer should give stable segments"
    assert extracted["fields_nulled"] == len(bad_dob)
    assert manifest.to_dict("records") == [
        {"table_name": "raw_identity_records", "currency": "EUR", "timezone": "Europe/Berlin"},
        {"table_name": "raw_orders", "currency": "EUR", "timezone": "Europe/Berlin"},
    ]


def test_conversions_dates_times_zones_and_decimal_commas(tmp_path):
    write_csv(tmp_path / "people.csv", IDENTITY_CSV)
    write_csv(tmp_path / "orders.csv",
              "no|when|total|disc\n"
              "1|01.06.2025 10:00|1.249,90|0,5\n"
              "2|01.12.2025 10:00|12,5|\n"
              "3|31.12.2025 23:30|12.5|1.000\n"
              "4|garbage|abc|x\n")
    mapping = write_mapping(tmp_path, IDENTITY_MAPPING + """
[tables.raw_orders]
file = "orders.csv"
delimiter = "|"
decimal = ","
timezone = "Europe/Berlin"
currency = "EUR"
date_format = "%d.%m.%Y %H:%M"
columns = { order_id = "no", order_ts = "when", amount = "total", discount = "disc" }
constants = { source_system = "shop", source_id = "P1" }
""")
    load_mapping(read_mapping(mapping), url_of(tmp_path), progress=False)
    orders = raw(tmp_path, "raw_orders").set_index("order_id")
    # Summer (+02:00) and winter (+01:00) local times become UTC; the year boundary moves too.
    assert orders["order_ts"].tolist() == [
        "2025-06-01 08:00:00.000000", "2025-12-01 09:00:00.000000", "2025-12-31 22:30:00.000000", "garbage"]
    # Decimal commas and thousands points become numbers in text; anything else is kept as it came.
    assert orders["amount"].tolist() == ["1249.90", "12.5", "12.5", "abc"]
    assert orders["discount"].tolist()[0] == "0.5" and orders["discount"].tolist()[2] == "1000"
    assert orders["discount"].tolist()[3] == "x"
    assert set(orders["source_system"]) == {"shop"}


def test_offsets_in_the_text_are_left_for_extract(tmp_path):
    write_csv(tmp_path / "people.csv", IDENTITY_CSV)
    write_csv(tmp_path / "orders.csv", "no,when,total\n1,2025-06-01T10:00:00+05:00,1\n2,2025-06-01 10:00:00,1\n")
    mapping = write_mapping(tmp_path, IDENTITY_MAPPING + """
[tables.raw_orders]
file = "orders.csv"
timezone = "America/New_York"
columns = { order_id = "no", order_ts = "when", amount = "total" }
constants = { source_system = "shop", source_id = "P1" }
""")
    load_mapping(read_mapping(mapping), url_of(tmp_path), progress=False)
    assert raw(tmp_path, "raw_orders")["order_ts"].tolist() == [
        "2025-06-01T10:00:00+05:00", "2025-06-01 14:00:00.000000"]


def test_parquet_and_warehouse_sources(tmp_path):
    import duckdb

    parquet = tmp_path / "orders.parquet"
    con = duckdb.connect()
    con.execute(f"COPY (SELECT 'o' || i AS id, TIMESTAMPTZ '2025-06-01 10:00:00+02' AS ts, 10.5 * i AS value "
                f"FROM range(1, 4) t(i)) TO '{parquet}' (FORMAT parquet)")
    con.close()
    write_csv(tmp_path / "people.csv", IDENTITY_CSV)
    with Warehouse(url_of(tmp_path)) as wh:
        wh.run_script("CREATE SCHEMA crm; CREATE VIEW crm.contacts AS SELECT 'c1' AS ticket, 'P1' AS who, "
                      "TIMESTAMP '2025-07-01 09:00:00' AS opened, 'phone' AS via")
    mapping = write_mapping(tmp_path, IDENTITY_MAPPING + """
[tables.raw_orders]
file = "*.parquet"
columns = { order_id = "id", order_ts = "ts", amount = "value" }
constants = { source_system = "shop", source_id = "P1" }

[tables.raw_support_contacts]
table = "crm.contacts"
columns = { contact_id = "ticket", source_id = "who", contact_ts = "opened", channel = "via" }
constants = { source_system = "shop" }
""")
    results = {r.table: r.rows for r in load_mapping(read_mapping(mapping), url_of(tmp_path), progress=False)}
    assert results == {"raw_identity_records": 1, "raw_orders": 3, "raw_support_contacts": 1}
    orders = raw(tmp_path, "raw_orders").sort_values("order_id")
    assert orders["order_ts"].tolist() == ["2025-06-01 08:00:00.000000"] * 3
    assert [float(v) for v in orders["amount"]] == [10.5, 21.0, 31.5]
    contacts = raw(tmp_path, "raw_support_contacts")
    assert contacts.iloc[0].to_dict() == {"contact_id": "c1", "source_id": "P1",
                                          "contact_ts": "2025-07-01 09:00:00.000000", "channel": "phone",
                                          "source_system": "shop"}


@pytest.mark.parametrize(("orders_csv", "extra", "message"), [
    ("no;Datum;total\n1;2025-06-01;1\n", 'date_format = "%Y%m%d"',
     r"orders\.csv.*'Datum' \(mapped to raw_orders\.order_ts\).*date_format '%Y%m%d'.*'2025-06-01'"),
    ("no;Datum;total\n1;20250601;12 EUR\n", "",
     r"orders\.csv.*'total' \(mapped to raw_orders\.amount\).*decimal separator.*'12 EUR'"),
    ("no;Datum;Betrag\n1;20250601;1\n", "",
     r"orders\.csv.*'total' \(for amount\) not found; the source has: no, Datum, Betrag"),
    ("no,Datum,total\n1,20250601,1\n", "",
     r"orders\.csv.*not found.*one column only: is the delimiter right"),
])
def test_mapping_errors_name_the_file_the_column_and_an_example(tmp_path, orders_csv, extra, message):
    write_csv(tmp_path / "people.csv", IDENTITY_CSV)
    write_csv(tmp_path / "orders.csv", orders_csv)
    mapping = write_mapping(tmp_path, IDENTITY_MAPPING + f"""
[tables.raw_orders]
file = "orders.csv"
delimiter = ";"
{extra}
columns = {{ order_id = "no", order_ts = "Datum", amount = "total" }}
constants = {{ source_system = "shop", source_id = "P1" }}
""")
    with pytest.raises(MappingError, match=message):
        load_mapping(read_mapping(mapping), url_of(tmp_path), progress=False)


@pytest.mark.parametrize(("body", "message"), [
    ('file = "people.csv"\ncolumns = { source_id = "id", created_at = "c" }', "source_system.*neither mapped"),
    ('file = "people.csv"\ncolumns = { source_id = "id", source_system = "s", created_at = "c", birthday = "b" }',
     "'birthday' is not a column of raw_identity_records"),
    ('file = "nothing*.csv"\ncolumns = { source_id = "id" }', "no file matches 'nothing\\*.csv'"),
    ('file = "people.csv"\ntimezone = "Mars/Olympus"\ncolumns = { source_id = "id", source_system = "s", '
     'created_at = "c" }', "unknown time zone 'Mars/Olympus'"),
    ('file = "people.csv"\ncolumns = { source_id = "id", source_system = "s", created_at = "c", '
     '"id_loyalty card" = "card" }', "'id_loyalty card' is not a column.*extra identifiers are id_"),
])
def test_mapping_file_errors_name_the_table_and_key(tmp_path, body, message):
    write_csv(tmp_path / "people.csv", IDENTITY_CSV)
    mapping = write_mapping(tmp_path, f"[tables.raw_identity_records]\n{body}\n")
    with pytest.raises(MappingError, match=message):
        read_mapping(mapping)


def test_failed_load_keeps_the_previous_table(tmp_path):
    write_csv(tmp_path / "people.csv", IDENTITY_CSV)
    write_csv(tmp_path / "orders_1.csv", "no,when,total\n1,2025-06-01,1\n")
    text = IDENTITY_MAPPING + """
[tables.raw_orders]
file = "orders_*.csv"
columns = { order_id = "no", order_ts = "when", amount = "total" }
constants = { source_system = "shop", source_id = "P1" }
"""
    load_mapping(read_mapping(write_mapping(tmp_path, text)), url_of(tmp_path), progress=False)
    write_csv(tmp_path / "orders_2.csv", "no,when,sum\n2,2025-06-02,2\n")
    with pytest.raises(MappingError, match=r"orders_2\.csv.*'total'"):
        load_mapping(read_mapping(write_mapping(tmp_path, text)), url_of(tmp_path), progress=False)
    assert raw(tmp_path, "raw_orders")["order_id"].tolist() == ["1"]


def test_command_line_loads_and_reports_mapping_errors(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    url = url_of(tmp_path)
    ok = subprocess.run([sys.executable, "-m", "include.load", "--mapping", str(EXAMPLE), "--warehouse-url", url,
                         "--quiet"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "raw_orders" in ok.stdout and "raw_identity_records" in ok.stdout
    bad = write_mapping(tmp_path, "[tables.raw_orderz]\nfile = 'x.csv'\n")
    failed = subprocess.run([sys.executable, "-m", "include.load", "--mapping", str(bad), "--warehouse-url", url],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert failed.returncode == 2
    assert "mapping error" in failed.stderr and "raw_orderz" in failed.stderr


def test_example_shop_loads_into_snowflake_and_extracts_there(tmp_path):
    import fakesnow

    from include.extract.validate import extract_and_validate

    with fakesnow.patch():
        url = "snowflake://user:pw@account/analytics/public"
        results = {r.table: r.rows for r in load_mapping(read_mapping(EXAMPLE), url, progress=False)}
        with Warehouse(url) as wh:
            reports = {r.table: r for r in extract_and_validate(wh, SHOP_AS_OF)}
            amount = wh.scalar("SELECT amount FROM stg_orders WHERE order_id = '100006'")
            manifest = wh.query_df("SELECT table_name, currency FROM load_manifest ORDER BY table_name")
    orders = pd.read_csv(EXAMPLE.parent / "orders.csv", sep=";", dtype=str)
    assert results["raw_orders"] == len(orders)
    assert reports["raw_orders"].rows_staged == len(orders) - 2
    assert reports["raw_identity_records"].rows_quarantined == 0
    assert reports["raw_identity_records"].fields_nulled > 0
    assert amount == pytest.approx(1249.90)
    assert manifest["currency"].tolist() == ["EUR", "EUR"]
