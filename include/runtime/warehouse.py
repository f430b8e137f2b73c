"""One warehouse interface, with the SQL dialect behind it.

The pipeline speaks SQL that runs unchanged on DuckDB (the embedded default)
and Snowflake (production): statements use SQLAlchemy ``:name`` bind
parameters, and only the bulk paths (DataFrame in and out) go through each
driver's native API, because row-by-row inserts through SQLAlchemy are two
orders of magnitude slower for the table sizes we move.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import resources
from typing import Any

import pandas as pd
import sqlalchemy as sa

from include.runtime.errors import WarehouseError

log = logging.getLogger(__name__)

_BIND = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def load_sql(name: str) -> str:
    """Return the text of ``include/sql/<name>``."""
    return resources.files("include.sql").joinpath(name).read_text(encoding="utf-8")


def split_statements(script: str) -> list[str]:
    """Split a SQL script on ``;`` ending a line; comments-only pieces are dropped."""
    pieces = re.split(r";\s*(?:\n|$)", script)
    statements = []
    for piece in pieces:
        body = "\n".join(
            line for line in piece.splitlines() if not line.strip().startswith("--")
        ).strip()
        if body:
            statements.append(body)
    return statements


def parse_create_tables(script: str) -> dict[str, list[tuple[str, str]]]:
    """``{table: [(column, type), ...]}`` from the CREATE TABLE statements of a script."""
    tables = {}
    for stmt in split_statements(script):
        m = re.match(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*)\)\s*$", stmt, re.S)
        if not m:
            continue
        cols = []
        for part in m.group(2).split(","):
            words = part.split()
            if len(words) >= 2:
                cols.append((words[0].lower(), " ".join(words[1:])))
        tables[m.group(1).lower()] = cols
    return tables


class Warehouse:
    """A SQLAlchemy engine plus the few bulk operations the stages need.

    Parameters
    ----------
    url
        SQLAlchemy URL: ``duckdb:///path/warehouse.duckdb`` or
        ``snowflake://user:pass@account/db/schema?warehouse=wh``.

    Use as a context manager so the engine is disposed when the task ends:
    a DuckDB file admits one writing process at a time.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url)
        self.dialect = self.engine.dialect.name

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """A connection inside one transaction (committed on success)."""
        with self.engine.begin() as conn:
            yield conn

    # -- metadata ---------------------------------------------------------
    def table_columns(self, table: str) -> list[str] | None:
        """Lower-case column names of ``table``, or ``None`` when it does not exist."""
        inspector = sa.inspect(self.engine)
        if not inspector.has_table(table) and not inspector.has_table(table.upper()):
            return None
        name = table if inspector.has_table(table) else table.upper()
        return [c["name"].lower() for c in inspector.get_columns(name)]

    def has_table(self, table: str) -> bool:
        return self.table_columns(table) is not None

    # -- statements -------------------------------------------------------
    def run_script(
        self, script: str, params: Mapping[str, Any] | None = None, conn: sa.Connection | None = None
    ) -> None:
        """Run every statement of ``script`` in one transaction."""
        statements = split_statements(script)
        if conn is not None:
            for stmt in statements:
                conn.execute(sa.text(stmt), dict(params or {}))
            return
        with self.begin() as c:
            for stmt in statements:
                c.execute(sa.text(stmt), dict(params or {}))

    def run_sql_file(self, name: str, params: Mapping[str, Any] | None = None) -> None:
        self.run_script(load_sql(name), params)

    def scalar(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        with self.engine.connect() as c:
            return c.execute(sa.text(sql), dict(params or {})).scalar()

    def query_df(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run a query and return a DataFrame with lower-case column names."""
        params = dict(params or {})
        with self.engine.connect() as c:
            if self.dialect == "duckdb":
                raw = c.connection.driver_connection
                used = set(_BIND.findall(sql))  # DuckDB rejects unused named parameters
                df = raw.execute(_BIND.sub(r"$\1", sql), {k: v for k, v in params.items() if k in used}).df()
            else:
                df = pd.read_sql(sa.text(sql), c, params=params)
        df.columns = [str(col).lower() for col in df.columns]
        return df

    # -- bulk writes ------------------------------------------------------
    def insert_df(self, table: str, df: pd.DataFrame, conn: sa.Connection) -> None:
        """Append ``df`` to an existing ``table``, matching columns by name."""
        if df.empty:
            return
        if self.dialect == "duckdb":
            raw = conn.connection.driver_connection
            raw.register("_insert_frame", df)
            try:
                cols = ", ".join(f'"{c}"' for c in df.columns)
                raw.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _insert_frame")
            finally:
                raw.unregister("_insert_frame")
        elif self.dialect == "snowflake":
            from snowflake.connector.pandas_tools import write_pandas

            frame = df.copy()
            frame.columns = [c.upper() for c in frame.columns]
            ok, *_ = write_pandas(
                conn.connection.driver_connection,
                frame,
                table.upper(),
                quote_identifiers=False,
                use_logical_type=True,
            )
            if not ok:
                raise WarehouseError(f"write_pandas into {table} failed")
        else:
            df.to_sql(table, conn, if_exists="append", index=False, method="multi", chunksize=5000)

    def replace_partition(
        self, table: str, df: pd.DataFrame, where: Mapping[str, Any]
    ) -> int:
        """Delete the rows of ``table`` matching ``where`` and insert ``df``, atomically.

        This is how every stage stays idempotent: re-running an as-of date
        replaces that date's rows and never duplicates them.
        """
        clause = " AND ".join(f"{col} = :{col}" for col in where)
        with self.begin() as conn:
            conn.execute(sa.text(f"DELETE FROM {table} WHERE {clause}"), dict(where))
            self.insert_df(table, df, conn)
        return len(df)

    def replace_table(self, table: str, df: pd.DataFrame) -> None:
        """Create or replace ``table`` with the contents and types of ``df``."""
        with self.begin() as conn:
            if self.dialect == "duckdb":
                raw = conn.connection.driver_connection
                raw.register("_table_frame", df)
                try:
                    raw.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM _table_frame")
                finally:
                    raw.unregister("_table_frame")
            elif self.dialect == "snowflake":
                from snowflake.connector.pandas_tools import write_pandas

                frame = df.copy()
                frame.columns = [c.upper() for c in frame.columns]
                write_pandas(
                    conn.connection.driver_connection,
                    frame,
                    table.upper(),
                    auto_create_table=True,
                    overwrite=True,
                    quote_identifiers=False,
                    use_logical_type=True,
                )
            else:
                df.to_sql(table, conn, if_exists="replace", index=False, chunksize=5000)

    def ensure_schema(self) -> None:
        """Create the pipeline's tables (``include/sql/schema.sql``) and add any new columns.

        A warehouse created by an older version gains the columns added since
        (``ALTER TABLE ... ADD COLUMN``); existing rows get NULL there.
        """
        script = load_sql("schema.sql")
        self.run_script(script)
        for table, columns in parse_create_tables(script).items():
            have = set(self.table_columns(table) or [])
            missing = [(c, t) for c, t in columns if c not in have]
            if missing:
                with self.begin() as conn:
                    for column, sql_type in missing:
                        conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}"))
                log.info("schema: added %s to %s", ", ".join(c for c, _ in missing), table)
