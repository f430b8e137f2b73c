"""The dataset record of a run: MLflow's schema and a digest, computed without reading every value in Python."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from include.runtime import tracking


@pytest.fixture
def frame() -> pd.DataFrame:
    n = 40
    return pd.DataFrame({
        "customer_key": [f"C{i:03d}" for i in range(n)],
        "monetary": np.linspace(0.0, 10.0, n),
        "orders": np.arange(n, dtype="int64"),
        # NULL only after the rows the types are read from: still not required.
        "email_open_rate": [0.5] * (n - 1) + [np.nan],
        # NULL in every row read for the types: its type comes from the whole column.
        "region": [None] * 10 + ["north"] * (n - 10),
        # No data at all (no email table): MLflow says Any, and so does the schema here.
        "channel": [None] * n,
        "email_click_rate": [np.nan] * n,
    })


@pytest.mark.filterwarnings("ignore:Hint. Inferred schema contains integer")  # MLflow's note on int columns
def test_dataset_schema_is_mlflows_inference_from_few_rows(frame, monkeypatch):
    import mlflow.data

    monkeypatch.setattr(tracking, "SCHEMA_ROWS", 10)
    assert tracking.dataset_schema(frame).to_dict() == mlflow.data.from_pandas(frame).schema.to_dict()
    required = {c["name"]: c["required"] for c in tracking.dataset_schema(frame).to_dict()}
    assert required == {"customer_key": True, "monetary": True, "orders": True, "email_open_rate": False,
                        "region": False, "channel": False, "email_click_rate": False}


def test_dataset_digest_sees_every_row(frame):
    changed = frame.copy()
    changed.loc[len(frame) - 1, "monetary"] += 1.0
    assert tracking.dataset_digest(frame) == tracking.dataset_digest(frame.copy())
    assert tracking.dataset_digest(changed) != tracking.dataset_digest(frame)
    assert tracking.dataset_digest(frame.rename(columns={"orders": "n_orders"})) != tracking.dataset_digest(frame)
    assert len(tracking.dataset_digest(frame)) == 8
