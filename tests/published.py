"""Published labels written by hand: what the publish and economics stages leave for the CRM push to read."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from include.runtime.warehouse import Warehouse


def write_published(url: str, date: dt.date, keys: Sequence[str], seg: np.ndarray, names: Mapping[int, str]) -> None:
    """``customer_segments``, ``customer_clv`` and ``customer_priority`` of ``date`` (a playbook action each)."""
    labels = [names[int(s)] for s in seg]
    with Warehouse(url) as wh:
        wh.ensure_schema()
        wh.replace_partition("customer_segments", pd.DataFrame({
            "as_of_date": date, "customer_key": list(keys), "segment_id": seg, "segment_name": labels,
            "model_run_id": "m"}), {"as_of_date": date})
        wh.replace_partition("customer_clv", pd.DataFrame({
            "as_of_date": date, "customer_key": list(keys), "p_alive": 0.8,
            "clv_365d": np.arange(len(keys), dtype=float)}), {"as_of_date": date})
        wh.replace_partition("customer_priority", pd.DataFrame({
            "as_of_date": date, "customer_key": list(keys), "segment_id": seg, "segment_name": labels,
            "priority": "medium", "priority_rank": 3, "action": [f"Journey for {n}" for n in labels]}),
            {"as_of_date": date})
