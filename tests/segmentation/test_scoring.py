"""Assigning customers to a fitted segmentation: in memory, by chunks, and in warehouse SQL."""

import dataclasses
import datetime as dt

import numpy as np
import pandas as pd
import pytest

from include.features.build import NUMERIC_FEATURES
from include.segmentation import scoring
from include.segmentation.model import fit_segments
from include.segmentation.scoring import SegmentAssigner, assign_in_chunks, assign_in_warehouse
from tests.segmentation.test_model import blobs, with_service_rates
from tests.warehouses import warehouse

AS_OF = dt.date(2026, 11, 14)


#: The fit's numeric columns: the table's features plus two rates with no denominator for some customers.
COLUMNS = (*NUMERIC_FEATURES, "support_per_order", "cost_per_contact")


def assigned_in_duckdb(assigner: SegmentAssigner, features: pd.DataFrame, tmp_path) -> list[int]:
    """Segment ids SQL assignment gives ``features`` (a DuckDB file), in ``features`` order."""
    with warehouse("duckdb", tmp_path) as wh:
        wh.ensure_schema()
        with wh.begin() as conn:
            wh.insert_df("customer_features", features, conn)
        in_sql = assign_in_warehouse(wh, assigner, AS_OF).set_index("customer_key")["segment_id"]
    return in_sql.reindex(features["customer_key"]).tolist()


@pytest.fixture(scope="module")
def fitted():
    """A k-prototypes fit on 450 customers, and 300 other customers to score (new and missing categories)."""
    features = with_service_rates(blobs(150, seed=3)[0], seed=3)
    # Customers without email data: their email rates are unknown (NULL), not 0.
    features.loc[::5, ["email_open_rate", "email_click_rate"]] = np.nan
    result = fit_segments(features, k=3, seed=5, n_init=2, numeric_columns=COLUMNS)
    fresh = with_service_rates(blobs(100, seed=11)[0], seed=11)
    fresh.loc[::4, ["email_open_rate", "email_click_rate"]] = np.nan
    fresh["customer_key"] = [f"N{i:05d}" for i in range(len(fresh))]
    fresh.loc[::7, "preferred_channel"] = "kiosk"  # never seen by the fit: a mismatch with every prototype
    fresh.loc[::11, "region"] = None  # missing: the fit's "unknown"
    fresh.insert(0, "as_of_date", AS_OF)
    return features, result, SegmentAssigner.from_fit(features, result), fresh


def test_assigner_reproduces_the_fit(fitted):
    features, result, assigner, _ = fitted
    assert assigner.k == result.k and assigner.gamma > 0
    # A rate without a denominator takes the fitted mean of the customers who have it, as the fit did: a
    # zero marker (no support contact) or NULL (no email data).
    has_contacts = features["support_per_order"] > 0
    assert assigner.undefined_fill == {
        "cost_per_contact": pytest.approx(features.loc[has_contacts, "cost_per_contact"].mean()),
        "email_open_rate": pytest.approx(features["email_open_rate"].mean()),  # pandas' mean skips the NULLs
        "email_click_rate": pytest.approx(features["email_click_rate"].mean())}
    assert np.array_equal(assigner.assign(features), result.labels)
    kmeans = fit_segments(features, k=3, seed=5, n_init=2, algorithm="kmeans", numeric_columns=COLUMNS)
    assert np.array_equal(SegmentAssigner.from_fit(features, kmeans).assign(features), kmeans.labels)


def test_assigner_notices_a_changed_preparation(fitted, monkeypatch):
    features, result, _, _ = fitted
    monkeypatch.setattr(scoring, "design_matrix", lambda f, c, g: np.zeros((len(f), len(c))))
    with pytest.raises(RuntimeError, match="design_matrix no longer matches"):
        SegmentAssigner.from_fit(features, result)


@pytest.mark.parametrize("kind", ["duckdb", "snowflake"])
def test_sql_and_chunked_assignment_equal_in_memory(fitted, kind, tmp_path):
    _, _, assigner, fresh = fitted
    ids = dataclasses.replace(assigner, segment_ids=(7, 3, 9))  # published ids, not model order
    expected = pd.Series(ids.assign(fresh), index=fresh["customer_key"])
    assert (fresh["preferred_channel"] == "kiosk").any() and fresh["region"].isna().any()
    with warehouse(kind, tmp_path) as wh:
        wh.ensure_schema()
        with wh.begin() as conn:
            wh.insert_df("customer_features", fresh, conn)
        in_sql = assign_in_warehouse(wh, ids, AS_OF)
        got = in_sql.set_index("customer_key")["segment_id"].reindex(expected.index)
        assert got.tolist() == expected.tolist()
        chunks = []
        assert assign_in_chunks(wh, ids, AS_OF, chunks.append, chunk_rows=37) == len(fresh)
        assert [len(c) for c in chunks] == [37] * 8 + [4]
        chunked = pd.concat(chunks)
        assert chunked["customer_key"].is_unique
        assert chunked.set_index("customer_key")["segment_id"].reindex(expected.index).tolist() == expected.tolist()


def test_ties_go_to_the_lower_prototype_in_memory_and_in_sql(fitted, tmp_path):
    _, _, assigner, fresh = fitted
    # Prototype 2 duplicates prototype 0: every row nearest to them is a tie, won by prototype 0.
    twin = dataclasses.replace(
        assigner, prototypes=np.vstack([assigner.prototypes[[0, 1]], assigner.prototypes[[0]]]),
        prototype_categories=np.vstack([assigner.prototype_categories[[0, 1]], assigner.prototype_categories[[0]]]),
        segment_ids=(0, 1, 2))
    labels = twin.assign(fresh)
    assert 2 not in set(labels) and (labels == 0).any()
    assert assigned_in_duckdb(twin, fresh, tmp_path) == labels.tolist()


def test_bad_rows_are_named_in_memory_and_in_sql(fitted, tmp_path):
    _, _, assigner, fresh = fitted
    bad = fresh.copy()
    bad.loc[5, "monetary"] = np.nan
    with pytest.raises(ValueError, match=r"customer_features\.monetary is NULL in 1 row\(s\), e.g. customer_key='N00005'"):
        assigner.assign(bad)
    with warehouse("duckdb", tmp_path) as wh:
        wh.ensure_schema()
        with wh.begin() as conn:
            wh.insert_df("customer_features", bad, conn)
        with pytest.raises(ValueError, match=r"customer_features\.monetary is NULL or negative in 1 row\(s\).*N00005"):
            assign_in_warehouse(wh, assigner, AS_OF)
        with pytest.raises(ValueError, match="chunk_rows must be at least 1"):
            assign_in_chunks(wh, assigner, AS_OF, print, chunk_rows=0)


def test_a_rate_without_a_denominator_is_filled_in_memory_and_in_sql(fitted, tmp_path):
    _, _, assigner, fresh = fitted
    j = assigner.numeric_columns.index("cost_per_contact")
    prepared = lambda raw: (raw - assigner.means[j]) / assigner.scales[j] * assigner.weights[j]  # noqa: E731
    # Two prototypes that differ only where a contact-free customer lands: at the fitted fill, or at 0.
    prototypes = np.vstack([assigner.prototypes[0], assigner.prototypes[0]])
    prototypes[0, j], prototypes[1, j] = prepared(assigner.undefined_fill["cost_per_contact"]), prepared(0.0)
    two = dataclasses.replace(assigner, prototypes=prototypes, segment_ids=(1, 2),
                              prototype_categories=assigner.prototype_categories[[0, 0]])
    no_contact = (fresh["support_per_order"] == 0).to_numpy()
    in_memory = two.assign(fresh)
    assert no_contact.any() and (in_memory[no_contact] == 1).all()
    assert assigned_in_duckdb(two, fresh, tmp_path) == in_memory.tolist()
