"""The CLV tier sent to a CRM: quartiles of the scored customers, 'unknown' where CLV is not true."""

import datetime as dt

import pandas as pd

from include.crm.contract import LABELS_SQL
from include.runtime.warehouse import Warehouse

D = dt.date(2026, 11, 1)


def _put(wh: Warehouse, table: str, df: pd.DataFrame) -> None:
    with wh.begin() as conn:
        wh.insert_df(table, df, conn)


def _labels(tmp_path, status: str | None) -> pd.Series:
    with Warehouse(f"duckdb:///{tmp_path / f'w-{status}.duckdb'}") as wh:
        wh.ensure_schema()
        keys = [f"C{i}" for i in range(9)]
        _put(wh, "customer_segments", pd.DataFrame({"as_of_date": D, "customer_key": keys, "segment_id": 1,
                                                      "segment_name": "Top value"}))
        # Eight scored customers, one the model did not score.
        _put(wh, "customer_clv", pd.DataFrame({"as_of_date": D, "customer_key": keys[:8],
                                                 "clv_365d": [float(100 - i) for i in range(8)]}))
        if status is not None:
            _put(wh, "clv_runs", pd.DataFrame([{"as_of_date": D, "status": status}]))
        return wh.query_df(LABELS_SQL, {"label_date": D}).set_index("customer_key")["clv_tier"]


def test_quartiles_of_the_scored_customers_and_unknown_for_the_rest(tmp_path):
    tier = _labels(tmp_path, "champion")
    assert tier["C0"] == "A" and tier["C7"] == "D" and tier["C8"] == "unknown"
    assert (tier.drop("C8").value_counts() == 2).all()


def test_a_clv_fit_that_failed_its_check_sends_no_tier(tmp_path):
    assert (_labels(tmp_path, "fitted") == "unknown").all()
