"""Mappings for real exports without SQL (issue #27): several files per table, column expressions,
whitespace and fixed-width files, generated ids, invoice lines grouped into orders and returns,
derived customers, guests, the query escape hatch, and every input row accounted for.

Hand-made files loaded into real DuckDB files (one test into Snowflake's dialect through fakesnow).
"""

import pandas as pd
import pytest

from include.load import MappingError, load_mapping, read_mapping
from include.runtime.warehouse import Warehouse
from tests.load.test_load import raw, url_of, write_csv, write_mapping


def load(tmp_path, text: str, **files: str) -> dict:
    for name, content in files.items():
        write_csv(tmp_path / name.replace("__", "."), content)
    results = load_mapping(read_mapping(write_mapping(tmp_path, text)), url_of(tmp_path), progress=False)
    return {r.table: r for r in results}


def nulls_as_none(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(object).where(frame.notna(), None)


def manifest(tmp_path) -> pd.DataFrame:
    with Warehouse(url_of(tmp_path)) as wh:
        return wh.query_df("SELECT table_name, rows_in, rows_loaded, rows_as_returns, rows_aggregated, "
                           "rows_quarantined, rows_guest, guest_amount, COALESCE(derived_from, '-') AS derived_from "
                           "FROM load_manifest ORDER BY table_name").set_index("table_name")


def test_several_files_per_table_each_with_its_constants_and_options(tmp_path):
    results = load(tmp_path, """
[tables.raw_identity_records]
date_format = "%Y%m%d"
columns.source_id = "rec_id"
columns.address = { join = ["no", "street", "unit", "town"] }
columns.created_at = "since"

[[tables.raw_identity_records.files]]
file = "a.csv"
constants = { source_system = "registry_a" }

[[tables.raw_identity_records.files]]
file = "b.csv"
delimiter = ";"
constants = { source_system = "registry_b", region = "north" }
columns = { postcode = "zip" }
""", a__csv="rec_id,no,street,unit,town,since\nA1,12,high street,,bondi,20240105\nA2,3,king st,unit 4,glebe,20240201\n",
        b__csv="rec_id;no;street;unit;town;since;zip\nB1; 7 ;station rd;;;20230101;2000\n")
    people = raw(tmp_path, "raw_identity_records").set_index("source_id")
    assert people["source_system"].to_dict() == {"A1": "registry_a", "A2": "registry_a", "B1": "registry_b"}
    assert people["address"].to_dict() == {"A1": "12 high street bondi", "A2": "3 king st unit 4 glebe",
                                           "B1": "7 station rd"}
    assert people["created_at"].to_dict() == {"A1": "2024-01-05 00:00:00.000000", "A2": "2024-02-01 00:00:00.000000",
                                              "B1": "2023-01-01 00:00:00.000000"}
    # A column or constant of one file is NULL in the others' rows.
    assert people["region"].isna().tolist() == [True, True, False]
    assert people["postcode"].fillna("-").tolist() == ["-", "-", "2000"]
    assert results["raw_identity_records"].rows == results["raw_identity_records"].rows_in == 3


PEOPLE = "id;sys;created\nP1;shop;2025-01-01\nP2;shop;2025-01-01\n"
PEOPLE_MAPPING = """
[tables.raw_identity_records]
file = "people.csv"
columns = { source_id = "id", source_system = "sys", created_at = "created" }
"""


def test_strip_and_sign_from_a_flag_column(tmp_path):
    load(tmp_path, PEOPLE_MAPPING + """
[tables.raw_orders]
file = "orders.csv"
decimal = ","
constants = { source_system = "shop" }
columns.order_id = { column = "no", strip_prefix = "#" }
columns.source_id = { column = "customer", strip_suffix = ".0" }
columns.order_ts = "when"
columns.amount = { column = "value", negative_when = { column = "kind", equals = ["R", "C"] } }
columns.discount = { multiply = ["disc", "qty"], negative_when = { column = "no", starts_with = "#9" } }
""", people__csv=PEOPLE, orders__csv=(
        "no,customer,when,value,kind,disc,qty\n"
        "#1,P1.0,2025-06-01,\"12,50\",S,\"0,5\",2\n"
        "#2,P1.0,2025-06-02,\"3,00\",R,0,1\n"
        "#3,P2,2025-06-03,\"-4,00\",C,1,x\n"
        "#9,P2.0,2025-06-04,abc,R,1,3\n"))
    orders = raw(tmp_path, "raw_orders").set_index("order_id")
    assert orders["source_id"].to_dict() == {"1": "P1", "2": "P1", "3": "P2", "9": "P2"}
    # negative_when makes the number negative (an already negative one stays so); text is left for extract.
    assert orders["amount"].to_dict() == {"1": "12.50", "2": "-3.0", "3": "-4.0", "9": "abc"}
    assert orders["discount"].to_dict() == {"1": "1.0", "2": "0.0", "3": "1*x", "9": "-3.0"}


def test_whitespace_and_fixed_width_files(tmp_path):
    load(tmp_path, PEOPLE_MAPPING + """
[tables.raw_orders]
constants = { source_system = "shop" }
columns = { order_id = "no", source_id = "who", order_ts = "day", amount = "total" }

[[tables.raw_orders.files]]
file = "spaced.txt"
format = "whitespace"

[[tables.raw_orders.files]]
file = "bare.txt"
format = "whitespace"
header = false
names = ["no", "who", "day", "total"]

[[tables.raw_orders.files]]
file = "fixed.txt"
format = "fixed"
widths = [4, 3, 9, 8]
names = ["no", "who", "day", "total"]
""", people__csv=PEOPLE,
        spaced__txt="  no  who      day   total\r\n  o1   P1 20250601   10.50\r\n\r\n  o2\tP2  20250602 7\r\n",
        bare__txt="o3 P1 20250603 1.25\n",
        fixed__txt="no  whoday      total   \no4  P2 20250604    99.9\no5  P1 20250605        \n")
    orders = nulls_as_none(raw(tmp_path, "raw_orders").set_index("order_id").sort_index())
    assert orders[["source_id", "order_ts", "amount"]].to_dict("index") == {
        "o1": {"source_id": "P1", "order_ts": "20250601", "amount": "10.50"},
        "o2": {"source_id": "P2", "order_ts": "20250602", "amount": "7"},
        "o3": {"source_id": "P1", "order_ts": "20250603", "amount": "1.25"},
        "o4": {"source_id": "P2", "order_ts": "20250604", "amount": "99.9"},
        "o5": {"source_id": "P1", "order_ts": "20250605", "amount": None},
    }


def test_generated_order_ids_are_unique_and_do_not_depend_on_row_order(tmp_path):
    text = PEOPLE_MAPPING + """
[tables.raw_orders]
file = "tx.txt"
format = "whitespace"
constants = { source_system = "shop" }
columns = { order_id = { generate = "row_hash" }, source_id = "who", order_ts = "day", amount = "total" }
"""
    rows = ["P1 20250601 10.00", "P1 20250601 10.00", "P2 20250601 10.00", "P1 20250602 3.50"]
    ids = []
    for order in (rows, rows[::-1]):
        load(tmp_path, text, people__csv=PEOPLE, tx__txt="who day total\n" + "\n".join(order) + "\n")
        orders = raw(tmp_path, "raw_orders")
        ids.append(sorted(zip(orders["order_id"], orders["source_id"], orders["amount"], strict=True)))
    assert ids[0] == ids[1]
    assert len({i for i, _, _ in ids[0]}) == 4 and all(i.startswith("tx:") for i, _, _ in ids[0])


LINES = (
    "Invoice,Customer,When,Qty,Price,Country\n"
    "1001,17850.0,12/1/2010 8:26,6,2.55,United Kingdom\n"     # 1001: two lines
    "1001,17850.0,12/1/2010 8:26,2,1.10,United Kingdom\n"
    "1002,17850.0,12/3/2010 9:00,1,100,United Kingdom\n"      # 1002: a line returned on the same invoice
    "1002,17850.0,12/3/2010 9:00,-1,20,United Kingdom\n"
    "C1003,17850.0,12/5/2010 10:00,-6,2.55,United Kingdom\n"  # a cancellation invoice
    "1004,,12/5/2010 11:00,3,4.00,France\n"                   # guest lines
    "1004,,12/5/2010 11:00,1,2.50,France\n"
    "1005,13047.0,12/6/2010 12:00,n/a,3.00,France\n"          # a line whose value is no number
    "1005,13047.0,12/6/2010 12:00,2,3.00,France\n"
    ",13047.0,12/6/2010 12:00,1,1.00,France\n"                # a line without an invoice
    "1006,13047.0,1/1/0001 0:00,1,5.00,France\n"              # a placeholder date
    "1007,12583.0,12/7/2010 8:00,0,1.00,Germany\n"            # a line of value 0
)
LINES_MAPPING = """
[tables.raw_orders]
file = "lines.csv"
date_format = "%m/%d/%Y %H:%M"
currency = "GBP"
group_lines_by = "Invoice"
constants = { source_system = "web" }
columns.order_id = "Invoice"
columns.source_id = { column = "Customer", strip_suffix = ".0" }
columns.order_ts = "When"
columns.amount = { multiply = ["Qty", "Price"] }

[tables.raw_identity_records]
derive = "raw_orders"
columns = { region = "Country" }
"""


def test_invoice_lines_become_orders_returns_and_every_line_is_accounted_for(tmp_path):
    results = load(tmp_path, LINES_MAPPING, lines__csv=LINES)
    orders = nulls_as_none(raw(tmp_path, "raw_orders").set_index("order_id").sort_index())
    returns = nulls_as_none(raw(tmp_path, "raw_returns"))
    with Warehouse(url_of(tmp_path)) as wh:
        set_aside = wh.query_df("SELECT source_key, reason, detail FROM load_quarantine ORDER BY 1")
    assert orders[["source_id", "order_ts", "amount", "returned_amount"]].to_dict("index") == {
        "1001": {"source_id": "17850", "order_ts": "2010-12-01 08:26:00.000000", "amount": "17.5",
                 "returned_amount": None},
        "1002": {"source_id": "17850", "order_ts": "2010-12-03 09:00:00.000000", "amount": "100.0",
                 "returned_amount": "20.0"},
        "1005": {"source_id": "13047", "order_ts": "2010-12-06 12:00:00.000000", "amount": "6.0",
                 "returned_amount": None},
        "1006": {"source_id": "13047", "order_ts": "0001-01-01 00:00:00.000000", "amount": "5.0",
                 "returned_amount": None},
        "1007": {"source_id": "12583", "order_ts": "2010-12-07 08:00:00.000000", "amount": "0.0",
                 "returned_amount": None},
    }
    assert returns.to_dict("records") == [{"return_id": "C1003", "source_system": "web", "source_id": "17850",
                                           "return_ts": "2010-12-05 10:00:00.000000", "amount": "15.3",
                                           "order_id": None}]
    assert set_aside.to_dict("records") == [
        {"source_key": "", "reason": "missing_group_key", "detail": "amount=1.0"},
        {"source_key": "1005", "reason": "bad_line_value", "detail": "amount=n/a*3.00"},
    ]
    got = manifest(tmp_path)
    assert got.loc["raw_orders"].to_dict() == {
        "rows_in": 12, "rows_loaded": 5, "rows_as_returns": 1, "rows_aggregated": 2, "rows_quarantined": 2,
        "rows_guest": 2, "guest_amount": 14.5, "derived_from": "-"}
    assert got.loc["raw_returns", ["rows_in", "rows_loaded", "derived_from"]].tolist() == [1, 1, "raw_orders"]
    # The customers: created at their first plausible purchase (not year 1), region of that purchase.
    people = raw(tmp_path, "raw_identity_records").set_index("source_id").sort_index()
    assert people.to_dict("index") == {
        "12583": {"source_system": "web", "created_at": "2010-12-07 08:00:00.000000", "region": "Germany"},
        "13047": {"source_system": "web", "created_at": "2010-12-06 12:00:00.000000", "region": "France"},
        "17850": {"source_system": "web", "created_at": "2010-12-01 08:26:00.000000", "region": "United Kingdom"},
    }
    assert got.loc["raw_identity_records", ["rows_in", "rows_loaded", "rows_aggregated"]].tolist() == [10, 3, 7]
    assert all(r.balanced for r in results.values())


def test_guests_of_a_one_row_per_order_file_are_counted_not_loaded(tmp_path):
    results = load(tmp_path, PEOPLE_MAPPING + """
[tables.raw_orders]
file = "orders.csv"
constants = { source_system = "shop" }
columns = { order_id = "no", source_id = "who", order_ts = "day", amount = "total" }
""", people__csv=PEOPLE, orders__csv="no,who,day,total\n1,P1,2025-06-01,10\n2,,2025-06-01,4.5\n3, ,2025-06-02,x\n")
    assert raw(tmp_path, "raw_orders")["order_id"].tolist() == ["1"]
    r = results["raw_orders"]
    assert (r.rows_in, r.rows, r.rows_guest, r.guest_amount) == (3, 1, 2, 4.5)
    assert "2 guest rows, amount 4.50 not attributed" in r.summary()


def test_a_query_reads_files_relative_to_the_mapping(tmp_path):
    (tmp_path / "exports").mkdir()
    write_csv(tmp_path / "exports" / "orders.csv", "no,who,day,total\n1,P1,2025-06-01,10\n")
    load(tmp_path, PEOPLE_MAPPING + """
[tables.raw_orders]
query = "SELECT * FROM read_csv('exports/orders.csv', all_varchar = true) WHERE who IS NOT NULL"
constants = { source_system = "shop" }
columns = { order_id = "no", source_id = "who", order_ts = "day", amount = "total" }
""", people__csv=PEOPLE)
    assert raw(tmp_path, "raw_orders")[["order_id", "amount"]].to_dict("records") == [{"order_id": "1",
                                                                                       "amount": "10"}]


@pytest.mark.parametrize(("body", "message"), [
    ('file = "o.csv"\ndelimiter = " "\ncolumns = { order_id = "a", source_id = "b", order_ts = "c", amount = "d" }',
     'format = "whitespace"'),
    ('file = "o.csv"\ncolumns = { order_id = "a", source_id = "b", order_ts = "c", amount = { column = "d", '
     'join = ["e", "f"] } }', "exactly one of column, join, multiply or generate"),
    ('file = "o.csv"\ncolumns = { order_id = "a", source_id = "b", order_ts = "c", amount = { column = "d", '
     'times = 2 } }', "unknown expression key.*times"),
    ('file = "o.csv"\ncolumns = { order_id = "a", source_id = { generate = "row_hash" }, order_ts = "c", '
     'amount = "d" }', "generate makes a missing key"),
    ('file = "o.csv"\ncolumns = { order_id = "a", source_id = { column = "b", negative_when = { column = "k", '
     'equals = "R" } }, order_ts = "c", amount = "d" }', "source_id is not a number column"),
    ('file = "o.csv"\ngroup_lines_by = "a"\ncolumns = { order_id = "a", source_id = "b", order_ts = "c" }\n'
     'constants = { amount = "1", source_system = "s" }', "group_lines_by needs amount mapped"),
    ('file = "o.csv"\nformat = "fixed"\nnames = ["a"]\ncolumns = { order_id = "a", source_id = "b", '
     'order_ts = "c", amount = "d" }', "fixed-width file needs widths"),
    ('file = "o.csv"\ncolumns = { order_id = "a", source_id = "b", order_ts = "c", amount = "d" }\n'
     '[[tables.raw_orders.files]]\nfile = "o.csv"', "either as file/query/table or as"),
])
def test_mapping_errors_name_the_table_and_key(tmp_path, body, message):
    write_csv(tmp_path / "o.csv", "a,b,c,d\n")
    with pytest.raises(MappingError, match=message):
        read_mapping(write_mapping(tmp_path, f"[tables.raw_orders]\nconstants = {{ source_system = 's' }}\n{body}\n"
                                   if "constants" not in body else f"[tables.raw_orders]\n{body}\n"))


@pytest.mark.parametrize(("text", "message"), [
    ('[tables.raw_identity_records]\nderive = "raw_orders"\n', "derive = 'raw_orders', which the mapping does not"),
    ('[tables.raw_identity_records]\nderive = "raw_support_contacts"\n', "is not supported"),
    ('[tables.raw_identity_records]\nderive = "raw_orders"\ncolumns = { created_at = "x" }\n[tables.raw_orders]\n'
     'file = "o.csv"\ncolumns = { order_id = "a", source_id = "b", order_ts = "c", amount = "d" }\n'
     'constants = { source_system = "s" }', "created_at of a derived raw_identity_records comes from raw_orders"),
    (LINES_MAPPING + '[tables.raw_returns]\nfile = "o.csv"\ncolumns = { return_id = "a", source_id = "b", '
     'return_ts = "c", amount = "d" }\nconstants = { source_system = "s" }', "raw_returns is mapped and also made"),
])
def test_derived_and_grouped_mapping_errors(tmp_path, text, message):
    write_csv(tmp_path / "o.csv", "a,b,c,d\n")
    write_csv(tmp_path / "lines.csv", LINES)
    with pytest.raises(MappingError, match=message):
        read_mapping(write_mapping(tmp_path, text))


def test_invoice_lines_load_into_snowflake_and_extract_there(tmp_path):
    import datetime as dt

    import fakesnow

    from include.extract.validate import extract_and_validate

    write_csv(tmp_path / "lines.csv", LINES)
    with fakesnow.patch():
        url = "snowflake://user:pw@account/analytics/public"
        results = {r.table: r for r in load_mapping(read_mapping(write_mapping(tmp_path, LINES_MAPPING)), url,
                                                     progress=False)}
        with Warehouse(url) as wh:
            reports = {r.table: r for r in extract_and_validate(wh, dt.date(2010, 12, 31), max_bad_share=1.0)}
            returned = wh.query_df("SELECT order_id, returned_amount FROM stg_orders WHERE returned_amount > 0 "
                                   "ORDER BY order_id")
            reasons = wh.query_df("SELECT source_key, reason FROM quarantine")
    assert (results["raw_orders"].rows, results["raw_returns"].rows, results["raw_identity_records"].rows) == (5, 1, 3)
    assert reports["raw_returns"].rows_staged == 1
    # 1002 returned 20 on its own invoice; the cancellation C1003 (15.30) takes 1002, the latest purchase before it.
    assert returned.to_dict("records") == [{"order_id": "1002", "returned_amount": 35.3}]
    assert reasons.to_dict("records") == [{"source_key": "1006", "reason": "date_before_business_start"}]
