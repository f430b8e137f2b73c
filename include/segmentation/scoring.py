"""Assign every customer to a segmentation fitted elsewhere: in memory by chunks, or in warehouse SQL.

At 50 million customers the segments are fitted on a sample and every customer is
then assigned to the nearest prototype (docs/scaling.md). Assignment needs only
the fitted model's parameters, gathered in :class:`SegmentAssigner`:

- the numeric preparation of :func:`include.segmentation.model.design_matrix`:
  which columns are derived (``order_rate``), filled where they have no denominator
  (``UNDEFINED_RATES``: a zero marker, e.g. no second purchase for ``order_rate``;
  ``NULLABLE_RATES``: NULL, e.g. no email data; with the fitted rows' values) and log1p-transformed, the
  per-column means and scales of the fitted rows, and the group weights;
- the prototypes (numeric, in the prepared space; categorical, as category
  values) and k-prototypes' ``gamma`` (0 for KMeans).

:meth:`SegmentAssigner.assign` scores a DataFrame with the model's own
dissimilarity (:func:`include.segmentation.kprototypes.dissimilarity`);
:func:`assign_in_chunks` reads a date's features in fixed-size chunks of one
streamed query (never the whole table in pandas); :func:`assignment_sql`
writes one statement (``include/sql/segment_assign.sql``) that does the same
arithmetic inside the warehouse, so rows never leave it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from include.runtime.errors import ModelInputError, WarehouseError
from include.runtime.warehouse import Warehouse, named_sql
from include.segmentation.model import (
    FEATURE_GROUPS,
    NULLABLE_RATES,
    ORDER_RATE,
    ORDER_RATE_PRIOR_YEARS,
    ORDER_RATE_SOURCES,
    SKEWED_FEATURES,
    UNDEFINED_RATES,
    SegmentationResult,
    add_derived_features,
    design_matrix,
    fill_undefined_rates,
    group_weights,
)

SQL = named_sql("segment_assign.sql")
#: Rows per chunk of in-memory scoring: ~20 MB of features, far below the imports' footprint.
DEFAULT_CHUNK_ROWS = 100_000
#: Text a missing category becomes, as :func:`include.segmentation.model.categorical_matrix` fills it.
MISSING_CATEGORY = "unknown"
#: DuckDB memory limit while a chunked read streams: bounds the blocks DuckDB caches during the scan.
DUCKDB_SCAN_MEMORY_LIMIT = "64MB"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _identifier(name: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


def _double(value: float) -> str:
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"model parameter {value!r} is not finite; cannot write it into SQL")
    return f"CAST({value!r} AS DOUBLE)"


def _text(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


@dataclass(frozen=True)
class SegmentAssigner:
    """A fitted segmentation reduced to what assigning a customer needs.

    Attributes
    ----------
    numeric_columns
        Model columns in design-matrix order (``order_rate`` derived when the source lacks it).
    log1p_columns
        The columns log1p-transformed before standardising.
    means, scales, weights
        (p,) mean and standard deviation (after log1p) of the fitted rows, and group weights:
        prepared = (x - mean) / scale * weight.
    prototypes
        (k, p) numeric prototypes in the prepared space.
    categorical_columns, category_levels
        Traits and, per trait, its known values in code order (sorted, as the fit encoded them).
    prototype_categories
        (k, q) category codes of the prototypes.
    gamma
        Weight of one categorical mismatch (0 without traits).
    segment_ids
        The id reported for each prototype (default 0..k-1, the model's labels).
    """

    numeric_columns: tuple[str, ...]
    log1p_columns: tuple[str, ...]
    means: np.ndarray
    scales: np.ndarray
    weights: np.ndarray
    prototypes: np.ndarray
    categorical_columns: tuple[str, ...]
    category_levels: tuple[tuple[str, ...], ...]
    prototype_categories: np.ndarray
    gamma: float
    segment_ids: tuple[int, ...]
    undefined_fill: dict[str, float] = field(default_factory=dict)

    @property
    def k(self) -> int:
        return len(self.prototypes)

    @classmethod
    def from_fit(cls, features: pd.DataFrame, result: SegmentationResult,
                 feature_groups: dict[str, tuple[str, ...]] | None = FEATURE_GROUPS,
                 segment_ids: Mapping[int, int] | None = None) -> SegmentAssigner:
        """The assigner of ``result``, fitted on ``features`` with ``feature_groups``.

        The fitted model keeps its prototypes but not its preparation, so the
        means, scales and weights are recomputed from the fitted rows the way
        :func:`~include.segmentation.model.design_matrix` computes them, and checked
        against it: if that preparation changes, this raises instead of assigning
        on a different scale. ``segment_ids`` maps model labels to published ids.
        """
        numeric = tuple(result.numeric_columns)
        derived, fill = fill_undefined_rates(add_derived_features(features, numeric), numeric)
        x = derived[list(numeric)].to_numpy(dtype=float, copy=True)
        log1p = tuple(c for c in numeric if c in SKEWED_FEATURES)
        for j, col in enumerate(numeric):
            if col in log1p:
                x[:, j] = np.log1p(x[:, j])
        means, scales = x.mean(axis=0), x.std(axis=0)
        scales[scales == 0] = 1.0
        z = (x - means) / scales
        weights = group_weights(z, numeric, feature_groups)
        expected = design_matrix(features, numeric, feature_groups)
        if not np.allclose(z * weights, expected, rtol=1e-9, atol=1e-9):
            raise RuntimeError("include.segmentation.model.design_matrix no longer matches the preparation "
                               "SegmentAssigner mirrors (log1p, standardise, group weights); update scoring.py")
        model = result.model
        if result.algorithm == "kmeans":
            prototypes = np.asarray(model.cluster_centers_, dtype=float)
            categorical, levels, codes, gamma = (), (), np.zeros((len(prototypes), 0), np.int64), 0.0
        else:
            prototypes = np.asarray(model.centroids_num_, dtype=float)
            categorical = tuple(result.categorical_columns)
            levels = tuple(tuple(np.unique(features[c].fillna(MISSING_CATEGORY).astype(str))) for c in categorical)
            codes = np.asarray(model.centroids_cat_, dtype=np.int64).reshape(len(prototypes), len(categorical))
            gamma = float(model.gamma_)
        ids = tuple(int(segment_ids[i]) if segment_ids else i for i in range(len(prototypes)))
        return cls(numeric, log1p, means, scales, weights, prototypes, categorical, levels, codes, gamma, ids, fill)

    # -- in memory ------------------------------------------------------------
    def input_columns(self, available: set[str] | None = None) -> tuple[str, ...]:
        """Source columns assignment reads (``order_rate``'s sources when it is not a column)."""
        cols = []
        for c in self.numeric_columns:
            if c == ORDER_RATE and (available is None or c not in available):
                cols.extend(ORDER_RATE_SOURCES)
            else:
                cols.append(c)
            if c in self.undefined_fill and c in UNDEFINED_RATES:
                cols.append(UNDEFINED_RATES[c])
        return tuple(dict.fromkeys([*cols, *self.categorical_columns]))

    def prepare(self, features: pd.DataFrame, source: str = "customer_features") -> tuple[np.ndarray, np.ndarray]:
        """Prepared numeric matrix (n, p) and category codes (n, q; -1 = a value the fit never saw).

        Raises
        ------
        ValueError
            A column is missing, or holds NULL, or is negative where log1p needs it
            non-negative; the message names ``source``, the column and a customer_key.
        """
        derived = add_derived_features(features, self.numeric_columns)
        missing = [c for c in (*self.numeric_columns, *self.categorical_columns,
                               *(UNDEFINED_RATES[c] for c in self.undefined_fill if c in UNDEFINED_RATES))
                   if c not in derived.columns]
        if missing:
            raise ModelInputError(f"{source} lacks column(s): {', '.join(missing)}")
        derived, _ = fill_undefined_rates(derived, self.numeric_columns, self.undefined_fill)
        x = derived[list(self.numeric_columns)].to_numpy(dtype=float, copy=True)
        keys = features["customer_key"].to_numpy() if "customer_key" in features.columns else np.arange(len(x))
        for j, col in enumerate(self.numeric_columns):
            bad = np.isnan(x[:, j])
            what = "NULL"
            if col in self.log1p_columns and not bad.any():
                bad, what = x[:, j] < 0, "negative (log1p needs >= 0)"
            if bad.any():
                raise ModelInputError(f"{source}.{col} is {what} in {int(bad.sum())} row(s), "
                                 f"e.g. customer_key={keys[np.argmax(bad)]!r}")
            if col in self.log1p_columns:
                x[:, j] = np.log1p(x[:, j])
        x = (x - self.means) / self.scales * self.weights
        codes = np.full((len(features), len(self.categorical_columns)), -1, dtype=np.int64)
        for j, (col, levels) in enumerate(zip(self.categorical_columns, self.category_levels, strict=True)):
            values = derived[col].fillna(MISSING_CATEGORY).astype(str).to_numpy()
            known = np.asarray(levels)
            pos = np.minimum(np.searchsorted(known, values), len(known) - 1)
            codes[:, j] = np.where(known[pos] == values, pos, -1)
        return x, codes

    def costs(self, features: pd.DataFrame, source: str = "customer_features") -> np.ndarray:
        """(n, k) k-prototypes dissimilarity of each row to each prototype."""
        from include.segmentation.kprototypes import dissimilarity

        x, codes = self.prepare(features, source)
        return dissimilarity(x, codes, self.prototypes, self.prototype_categories, self.gamma)

    def assign(self, features: pd.DataFrame, source: str = "customer_features") -> np.ndarray:
        """Segment id of each row: the nearest prototype (ties: the lower prototype index)."""
        return np.asarray(self.segment_ids, dtype=np.int64)[self.costs(features, source).argmin(axis=1)]

    # -- SQL ------------------------------------------------------------------
    def _prepared_sql(self, available: set[str]) -> list[str]:
        exprs = []
        for j, col in enumerate(self.numeric_columns):
            if col == ORDER_RATE and col not in available:
                orders, tenure, recency = (f"CAST({_identifier(c)} AS DOUBLE)" for c in ORDER_RATE_SOURCES)
                raw = (f"{orders} / (GREATEST({tenure} - {recency}, {_double(0)}) / {_double(365.25)}"
                       f" + {_double(ORDER_RATE_PRIOR_YEARS)})")
            else:
                raw = f"CAST({_identifier(col)} AS DOUBLE)"
            if col in self.undefined_fill and col in UNDEFINED_RATES:  # no denominator: the fitted fill
                marker = f"CAST({_identifier(UNDEFINED_RATES[col])} AS DOUBLE)"
                raw = f"CASE WHEN {marker} = {_double(0)} THEN {_double(self.undefined_fill[col])} ELSE {raw} END"
            if col in self.undefined_fill and col in NULLABLE_RATES:  # NULL: unknown, the fitted fill too
                raw = f"COALESCE({raw}, {_double(self.undefined_fill[col])})"
            if col in self.log1p_columns:
                raw = f"LN({_double(1)} + {raw})"
            exprs.append(f"({raw} - {_double(self.means[j])}) / {_double(self.scales[j])}"
                         f" * {_double(self.weights[j])} AS f_{j}")
        for j, col in enumerate(self.categorical_columns):
            exprs.append(f"COALESCE(CAST({_identifier(col)} AS VARCHAR), {_text(MISSING_CATEGORY)}) AS c_{j}")
        return exprs

    def _distance_sql(self) -> list[str]:
        out = []
        for i in range(self.k):
            terms = [f"(f_{j} - {_double(c)}) * (f_{j} - {_double(c)})" for j, c in enumerate(self.prototypes[i])]
            mismatches = [
                f"CASE WHEN c_{j} = {_text(levels[self.prototype_categories[i, j]])} THEN 0 ELSE 1 END"
                for j, levels in enumerate(self.category_levels)]
            if mismatches and self.gamma:
                terms.append(f"{_double(self.gamma)} * ({' + '.join(mismatches)})")
            out.append(f"{' + '.join(terms)} AS d_{i}")
        return out

    def _argmin_sql(self) -> str:
        if self.k == 1:
            return str(self.segment_ids[0])
        whens = []
        for i in range(self.k - 1):
            cond = " AND ".join(f"d_{i} {'<' if j < i else '<='} d_{j}" for j in range(self.k) if j != i)
            whens.append(f"WHEN {cond} THEN {self.segment_ids[i]}")
        return f"CASE {' '.join(whens)} ELSE {self.segment_ids[-1]} END"

    def _checks_sql(self, available: set[str]) -> list[str]:
        checks = []
        for col in self.input_columns(available):
            if col in self.categorical_columns:
                continue
            c = _identifier(col)
            negative = f"{c} < 0" if col in self.log1p_columns or col in ORDER_RATE_SOURCES else None
            if col in NULLABLE_RATES and col in self.undefined_fill:  # NULL means unknown: filled, not bad
                if negative is None:
                    continue
                bad = negative
            else:
                bad = f"{c} IS NULL" + (f" OR {negative}" if negative else "")
            checks.append(f"SUM(CASE WHEN {bad} THEN 1 ELSE 0 END) AS bad_{c}")
            checks.append(f"MIN(CASE WHEN {bad} THEN customer_key END) AS example_{c}")
        return checks


def _source_columns(wh: Warehouse, source: str) -> set[str]:
    columns = wh.table_columns(_identifier(source))
    if columns is None:
        raise WarehouseError(f"table {source} does not exist")
    return set(columns)


def assignment_sql(assigner: SegmentAssigner, available: set[str], source: str = "customer_features") -> str:
    """The ``assign_segments`` statement of ``include/sql/segment_assign.sql`` for this model.

    ``available`` are the source table's columns (``order_rate`` is derived in SQL
    unless the table has it). Bind ``:as_of_date``; it returns ``customer_key, segment_id``.
    """
    sep = ",\n           "
    return SQL["assign_segments"].format(source=_identifier(source), prepared=sep.join(assigner._prepared_sql(available)),
                                         distances=sep.join(assigner._distance_sql()), argmin=assigner._argmin_sql())


def check_source(wh: Warehouse, assigner: SegmentAssigner, as_of_date: dt.date, source: str = "customer_features",
                 ) -> int:
    """Count the date's rows of ``source``; raise on a missing column, NULL or a negative log-input.

    SQL would score such a row as NULL (or fail on LN of a negative), so it is
    named here instead, as :meth:`SegmentAssigner.prepare` names it in memory.
    """
    available = _source_columns(wh, source)
    missing = [c for c in assigner.input_columns(available) if c not in available]
    if missing:
        raise ModelInputError(f"{source} lacks column(s): {', '.join(missing)}")
    checks = assigner._checks_sql(available)
    row = wh.query_df(SQL["input_problems"].format(checks=",\n       ".join([*checks, "COUNT(*) AS n_rows"]),
                                                   source=_identifier(source)), {"as_of_date": as_of_date}).iloc[0]
    for col in assigner.input_columns(available):
        if col in assigner.categorical_columns:
            continue
        bad = row.get(f"bad_{col.lower()}")
        if bad is not None and pd.notna(bad) and int(bad) > 0:
            raise ModelInputError(f"{source}.{col} is NULL or negative in {int(bad)} row(s) for as_of_date={as_of_date}, "
                             f"e.g. customer_key={row[f'example_{col.lower()}']!r}")
    return int(row["n_rows"])


def assign_in_warehouse(wh: Warehouse, assigner: SegmentAssigner, as_of_date: dt.date,
                        source: str = "customer_features", target: str | None = None) -> pd.DataFrame | int:
    """Assign the date's customers in SQL (:func:`assignment_sql`), after :func:`check_source`.

    Without ``target`` the assignments come back as a DataFrame (small tables,
    tests); with ``target`` they are written to that table inside the warehouse
    (``CREATE OR REPLACE TABLE ... AS``) and the row count is returned.
    """
    rows = check_source(wh, assigner, as_of_date, source)
    query = assignment_sql(assigner, _source_columns(wh, source), source)
    if target is None:
        return wh.query_df(query, {"as_of_date": as_of_date})
    with wh.begin() as conn:
        import sqlalchemy as sa

        conn.execute(sa.text(f"CREATE OR REPLACE TABLE {_identifier(target)} AS {query}"),
                     {"as_of_date": as_of_date})
    return rows


def _rechunk(frames: Iterator[pd.DataFrame], rows: int) -> Iterator[pd.DataFrame]:
    """Frames of exactly ``rows`` rows (the last may be shorter) from frames of any size."""
    pending: list[pd.DataFrame] = []
    held = 0
    for frame in frames:
        pending.append(frame)
        held += len(frame)
        while held >= rows:
            joined = pd.concat(pending, ignore_index=True) if len(pending) > 1 else pending[0]
            yield joined.iloc[:rows].reset_index(drop=True)
            rest = joined.iloc[rows:].reset_index(drop=True)
            pending, held = ([rest] if len(rest) else []), len(rest)
    if held:
        yield pd.concat(pending, ignore_index=True)


def read_in_chunks(wh: Warehouse, block: str, columns: str, as_of_date: dt.date, source: str,
                   chunk_rows: int) -> Iterator[pd.DataFrame]:
    """The date's rows of ``source``, ``chunk_rows`` at a time, from one streamed query.

    One scan, no sort: the warehouse streams the result and memory holds about one
    chunk whatever the table's size. Keyset paging (``ORDER BY customer_key LIMIT``)
    was tried first and is not flat: each page makes DuckDB scan and hold the rest
    of the table (measured: 550 MB peak for the first page of 1M rows, 250 MB for
    the last). On DuckDB the scan also runs under :data:`DUCKDB_SCAN_MEMORY_LIMIT`,
    because DuckDB keeps every block it read cached up to its memory limit (80% of
    RAM by default), which would grow the process with the table. Rows come in
    the warehouse's order; every chunk carries ``customer_key``.
    """
    import sqlalchemy as sa

    from include.runtime.warehouse import _BIND  # the ":name" -> "$name" rewrite DuckDBWarehouse.query_df uses

    if int(chunk_rows) < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    query = SQL[block].format(columns=columns, source=_identifier(source))
    params = {"as_of_date": as_of_date}
    with wh.engine.connect() as conn:
        if wh.backend == "duckdb":
            raw = conn.connection.driver_connection
            raw.execute(f"SET memory_limit = '{DUCKDB_SCAN_MEMORY_LIMIT}'")
            raw.execute(_BIND.sub(r"$\1", query), params)
            vectors = max(1, int(chunk_rows) // 2048)  # DuckDB hands out rows in vectors of 2,048

            def frames() -> Iterator[pd.DataFrame]:
                while not (frame := raw.fetch_df_chunk(vectors)).empty:
                    yield frame
        else:
            result = conn.execution_options(stream_results=True).execute(sa.text(query), params)
            names = list(result.keys())

            def frames() -> Iterator[pd.DataFrame]:
                for rows in result.partitions(int(chunk_rows)):
                    yield pd.DataFrame(rows, columns=names)
        try:
            for chunk in _rechunk(frames(), int(chunk_rows)):
                chunk.columns = [str(c).lower() for c in chunk.columns]
                yield chunk
        finally:
            if wh.backend == "duckdb":  # the instance may outlive this read if another connection holds it
                raw.execute("RESET memory_limit")


def assign_in_chunks(wh: Warehouse, assigner: SegmentAssigner, as_of_date: dt.date,
                     sink: Callable[[pd.DataFrame], None], *, source: str = "customer_features",
                     chunk_rows: int = DEFAULT_CHUNK_ROWS) -> int:
    """Assign the date's customers chunk by chunk; hand each ``customer_key, segment_id`` frame to ``sink``.

    ``sink`` writes or collects the chunk (e.g. ``Warehouse.insert_df``); returns
    the number of rows assigned.
    """
    available = _source_columns(wh, source)
    missing = [c for c in assigner.input_columns(available) if c not in available]
    if missing:
        raise ModelInputError(f"{source} lacks column(s): {', '.join(missing)}")
    columns = ", ".join(_identifier(c) for c in ("customer_key", *assigner.input_columns(available)))
    total = 0
    for chunk in read_in_chunks(wh, "feature_rows", columns, as_of_date, source, chunk_rows):
        sink(pd.DataFrame({"customer_key": chunk["customer_key"].to_numpy(),
                           "segment_id": assigner.assign(chunk, source)}))
        total += len(chunk)
    return total
