"""CLV scored chunk by chunk from the warehouse equals the one-shot score."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from include.clv.mbgnbd import ModifiedBetaGeoNBD
from include.clv.models import BetaGeoNBD, ClvSettings, GammaGammaSpend, score_customers
from include.clv.scoring import score_clv_in_chunks
from tests.warehouses import warehouse

AS_OF = dt.date(2026, 11, 14)


def summary(n: int = 400, seed: int = 2) -> pd.DataFrame:
    """A full-period summary: repeat purchases, recency <= t (weeks), mean spend (0 for one-time buyers)."""
    rng = np.random.default_rng(seed)
    t = rng.uniform(5, 150, n).round(2)
    frequency = rng.poisson(rng.gamma(0.8, 3.0, n)).astype(float)
    recency = np.where(frequency > 0, (t * rng.uniform(0.05, 1.0, n)).round(2), 0.0)
    monetary = np.where(frequency > 0, rng.gamma(4.0, 15.0, n).round(2), 0.0)
    return pd.DataFrame({"as_of_date": AS_OF, "period": "full", "customer_key": [f"C{i:05d}" for i in range(n)],
                         "frequency": frequency, "recency": recency, "t": t, "monetary_value": monetary,
                         "holdout_purchases": 0.0})


@pytest.mark.parametrize(("kind", "purchase_model"), [
    ("duckdb", BetaGeoNBD(r=0.25, alpha=4.4, a=0.8, b=2.4)),
    ("snowflake", ModifiedBetaGeoNBD(r=0.5, alpha=6.0, a=0.9, b=3.1)),
])
def test_chunked_clv_equals_one_shot(kind, purchase_model, tmp_path):
    rows = summary()
    calibration = rows.assign(period="calibration", frequency=0.0)  # another period: must not be scored
    spend, settings = GammaGammaSpend(p=6.2, q=3.7, v=15.4), ClvSettings()
    expected = score_customers(purchase_model, spend, rows, settings).set_index("customer_key")
    with warehouse(kind, tmp_path) as wh:
        wh.ensure_schema()
        with wh.begin() as conn:
            wh.insert_df("clv_summary", pd.concat([calibration, rows]), conn)
        chunks = []
        assert score_clv_in_chunks(wh, purchase_model, spend, settings, AS_OF, chunks.append, chunk_rows=64) == len(rows)
    assert [len(c) for c in chunks] == [64] * 6 + [16]
    got = pd.concat(chunks).set_index("customer_key").reindex(expected.index)
    assert got["clv_model"].eq(purchase_model.LABEL).all()
    assert expected["clv_365d"].gt(0).sum() > 100  # a real score, not zeros
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12)


def test_bad_summary_row_is_named(tmp_path):
    rows = summary(50)
    rows.loc[7, "recency"] = rows.loc[7, "t"] + 3
    with warehouse("duckdb", tmp_path) as wh:
        wh.ensure_schema()
        with wh.begin() as conn:
            wh.insert_df("clv_summary", rows, conn)
        with pytest.raises(ValueError, match=r"clv_summary: recency greater than t in 1 row\(s\), e.g. customer_key='C00007'"):
            score_clv_in_chunks(wh, BetaGeoNBD(r=0.25, alpha=4.4, a=0.8, b=2.4), GammaGammaSpend(p=6.2, q=3.7, v=15.4),
                                ClvSettings(), AS_OF, print)
