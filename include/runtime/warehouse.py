"""One warehouse interface, with the SQL dialect behind it.

The pipeline speaks SQL that runs unchanged on DuckDB (the embedded default)
and Snowflake (production): statements use SQLAlchemy ``:name`` bind
parameters. Only the bulk paths (DataFrame in and out) differ per dialect, as
in Splink's database APIs: :class:`Warehouse` holds everything shared and each
dialect subclass overrides ``query_df``, ``insert_df`` and ``replace_table``
with its driver's native API, because row-by-row inserts through SQLAlchemy
are two orders of magnitude slower for the table sizes we move.

``Warehouse(url)`` returns the subclass registered for the URL's backend
(``duckdb``, ``snowflake``), else :class:`SqlAlchemyWarehouse`.

The embedded DuckDB file admits one read-write process at a time, and Airflow
runs tasks in parallel processes; :class:`DuckDBWarehouse` therefore opens the
file per operation (no pooled connection holds the lock) and, when another
process holds it, waits and retries for up to ``lock_timeout`` seconds.

All-or-nothing stages
---------------------
A stage writes all its tables for a date in one transaction, so a reader (or
the next task) sees either the complete old state or the complete new one,
and a stage killed mid-way (SIGKILL, OOM, a lost worker) leaves nothing
behind but the old state::

    with wh.transaction() as tx:          # a Warehouse bound to one connection and transaction
        tx.replace_partition("a", frame_a, {"as_of_date": d})
        tx.run_sql_file("b.sql", {"as_of_date": d})
        rows = tx.scalar("SELECT COUNT(*) FROM b WHERE as_of_date = :as_of_date", {"as_of_date": d})
    # committed here; an exception (or a killed process) rolls every statement back

Every operation of the bound warehouse (``query_df``, ``scalar``,
``run_script``, ``replace_partition``, ``begin``, library functions that take
a ``Warehouse``) joins that one transaction and reads its own uncommitted
writes. ``begin()`` gives the same guarantee with a bare connection (pass it
as ``conn=``).

What each dialect guarantees:

- DuckDB: DML and DDL are transactional; a killed process's open transaction
  is discarded when the file is next opened (write-ahead log replay stops at
  the last commit).
- Snowflake: a DDL statement commits the open transaction before it runs
  (docs.snowflake.com/en/sql-reference/transactions, "DDL"), and
  ``write_pandas`` issues DDL (``CREATE TEMPORARY STAGE``, ``CREATE FILE
  FORMAT``). :meth:`SnowflakeWarehouse.insert_df` therefore never runs
  ``write_pandas`` on the caller's connection: a frame of up to
  ``inline_rows`` rows goes in as multi-row ``INSERT ... VALUES``; a larger
  one is loaded into a transient scratch table through a *second* session,
  copied with ``INSERT ... SELECT`` inside the caller's transaction, and the
  scratch table dropped. Statements a stage runs itself must follow the same
  rule: DDL (work tables) before the first write, DML only after it; and no
  metadata reflection (``table_columns``, ``has_table``: ``SHOW``/``DESCRIBE``)
  inside the transaction. ``replace_table`` and ``ensure_schema`` are DDL and
  never part of a stage's transaction. fakesnow (the tests' Snowflake) models
  the DDL rule but isolates by snapshot, not READ COMMITTED, so only the
  inline path can be tested there with several tables in one transaction.
- Other SQLAlchemy databases: as transactional as the database is.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from importlib import resources
from typing import Any, ClassVar

import pandas as pd
import sqlalchemy as sa

from include.runtime.errors import WarehouseError

log = logging.getLogger(__name__)

_BIND = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


def load_sql(name: str) -> str:
    """Return the text of ``include/sql/<name>``."""
    return resources.files("include.sql").joinpath(name).read_text(encoding="utf-8")


def redact_url(url: str) -> str:
    """``url`` without its password, for logs."""
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def named_sql(name: str) -> dict[str, str]:
    """The ``-- name: <statement>`` blocks of ``include/sql/<name>``, without comments or the final ``;``.

    The convention of aiosql/yesql: one file per statement family, each
    statement under its name, parameters documented in the file's header.
    """
    return parse_named_sql(load_sql(name), f"include/sql/{name}")


def parse_named_sql(text: str, origin: str = "SQL") -> dict[str, str]:
    """The ``-- name: <statement>`` blocks of ``text`` (see :func:`named_sql`); ``origin`` names it in errors."""
    blocks: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"--\s*name:\s*(\w+)\s*$", line.strip())
        if m:
            current = m.group(1)
            if current in blocks:
                raise ValueError(f"{origin}: statement {current!r} is defined twice")
            blocks[current] = ""
        elif current is not None and not line.strip().startswith("--"):
            blocks[current] += line + "\n"
    return {k: v.strip().rstrip(";").strip() for k, v in blocks.items()}


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
        ``snowflake://user:pass@account/db/schema?warehouse=wh``; any other
        SQLAlchemy URL gets the generic :class:`SqlAlchemyWarehouse`.

    Use as a context manager so the engine is disposed when the task ends.
    """

    #: backend name (``make_url(url).get_backend_name()``) -> subclass, filled by ``__init_subclass__``
    _dialects: ClassVar[dict[str, type[Warehouse]]] = {}
    backend: ClassVar[str | None] = None

    def __init_subclass__(cls, backend: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if backend:
            cls.backend = backend
            Warehouse._dialects[backend] = cls

    def __new__(cls, url: str, *args: Any, **kwargs: Any) -> Warehouse:
        if cls is Warehouse:
            cls = Warehouse._dialects.get(sa.engine.make_url(url).get_backend_name(), SqlAlchemyWarehouse)
        return super().__new__(cls)

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = self._create_engine(url)
        self.dialect = self.engine.dialect.name

    def _create_engine(self, url: str) -> sa.Engine:
        return sa.create_engine(url)

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is None:  # a bound view shares its parent's engine
            self.engine.dispose()

    #: the connection of :meth:`transaction`'s bound view; ``None`` on an unbound warehouse
    _conn: sa.Connection | None = None

    @contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """A connection inside one transaction (committed on success, rolled back on an exception).

        On a warehouse bound by :meth:`transaction` this is the bound
        connection: the caller's statements join that transaction, which
        commits only when :meth:`transaction` ends.
        """
        if self._conn is not None:
            yield self._conn
            return
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def transaction(self, *, discard: bool = False) -> Iterator[Warehouse]:
        """This warehouse bound to one connection and one transaction: a stage's writes become visible together.

        Yields a view of this warehouse whose every operation runs on the
        same connection inside one transaction, committed when the block ends
        and rolled back when it raises; a killed process leaves the old state.
        Nested calls join the outer transaction.

        ``discard=True`` always rolls back: the pipeline's own SQL can compute
        a table for a read (say, model inputs) while the write that publishes
        it waits for the stage's final transaction.
        """
        if self._conn is not None:
            if discard:
                raise ValueError("a discarded transaction cannot be nested in another transaction")
            yield self
            return
        if not discard:
            with self.engine.begin() as conn:
                yield self._bound(conn)
            return
        with self.engine.connect() as conn:
            conn.begin()
            try:
                yield self._bound(conn)
            finally:
                conn.rollback()

    def _bound(self, conn: sa.Connection) -> Warehouse:
        view = object.__new__(type(self))  # not copy.copy: __new__ needs the URL
        view.__dict__.update(self.__dict__, _conn=conn)
        return view

    @contextmanager
    def _connection(self) -> Iterator[sa.Connection]:
        """A connection for a read: the bound one inside :meth:`transaction`, else a fresh one."""
        if self._conn is not None:
            yield self._conn
            return
        with self.engine.connect() as conn:
            yield conn

    # -- metadata ---------------------------------------------------------
    def table_columns(self, table: str) -> list[str] | None:
        """Lower-case column names of ``table``, or ``None`` when it does not exist.

        One catalogue query: SQLAlchemy's reflection took about 150 ms a call on DuckDB (three
        round trips), and the report alone asks 14 times.
        """
        frame = self.query_df(
            "SELECT LOWER(column_name) AS column_name FROM information_schema.columns "
            "WHERE table_schema = CURRENT_SCHEMA() AND LOWER(table_name) = :table ORDER BY ordinal_position",
            {"table": table.lower()})
        return list(frame["column_name"]) if len(frame) else None

    def has_table(self, table: str) -> bool:
        return self.table_columns(table) is not None

    def schema_columns(self) -> dict[str, set[str]]:
        """Lower-case column names of every table in the current schema, from one catalogue query.

        Reflecting table by table costs a round trip per table (about 7 s for
        the pipeline's ~40 tables on DuckDB); ``information_schema`` answers at once.
        """
        frame = self.query_df(
            "SELECT LOWER(table_name) AS table_name, LOWER(column_name) AS column_name "
            "FROM information_schema.columns WHERE table_schema = CURRENT_SCHEMA()")
        return {t: set(g["column_name"]) for t, g in frame.groupby("table_name")}

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

    def run_sql_file(
        self, name: str, params: Mapping[str, Any] | None = None, conn: sa.Connection | None = None
    ) -> None:
        """Run ``include/sql/<name>`` in one transaction (``conn``'s, when given)."""
        self.run_script(load_sql(name), params, conn=conn)

    def scalar(self, sql: str, params: Mapping[str, Any] | None = None) -> Any:
        with self._connection() as c:
            return c.execute(sa.text(sql), dict(params or {})).scalar()

    def query_df(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run a query and return a DataFrame with lower-case column names."""
        with self._connection() as c:
            df = pd.read_sql(sa.text(sql), c, params=dict(params or {}))
        df.columns = [str(col).lower() for col in df.columns]
        return df

    # -- bulk writes ------------------------------------------------------
    def insert_df(self, table: str, df: pd.DataFrame, conn: sa.Connection) -> None:
        """Append ``df`` to an existing ``table``, matching columns by name."""
        if df.empty:
            return
        df.to_sql(table, conn, if_exists="append", index=False, method="multi", chunksize=5000)

    def replace_partition(
        self, table: str, df: pd.DataFrame, where: Mapping[str, Any], conn: sa.Connection | None = None
    ) -> int:
        """Delete the rows of ``table`` matching ``where`` and insert ``df``, atomically.

        This is how every stage stays idempotent: re-running an as-of date
        replaces that date's rows and never duplicates them. Pass ``conn``
        (from :meth:`begin`) to make several replacements one transaction.
        """
        clause = " AND ".join(f"{col} = :{col}" for col in where)
        if conn is not None:
            conn.execute(sa.text(f"DELETE FROM {table} WHERE {clause}"), dict(where))
            self.insert_df(table, df, conn)
            return len(df)
        with self.begin() as c:
            return self.replace_partition(table, df, where, conn=c)

    def replace_table(self, table: str, df: pd.DataFrame) -> None:
        """Create or replace ``table`` with the contents and types of ``df``."""
        with self.begin() as conn:
            df.to_sql(table, conn, if_exists="replace", index=False, chunksize=5000)

    # -- schema -----------------------------------------------------------
    def ensure_schema(self) -> None:
        """Create the pipeline's tables (``include/sql/schema.sql``) and add any new columns.

        Called once per DAG run, by its first task (``extract_validate``), and
        by entry points that can run alone (the CRM push operator, the CDNOW
        loader); later stages rely on it instead of repeating it.

        A warehouse created by an older version gains the columns added since
        (``ALTER TABLE ... ADD COLUMN``); existing rows get NULL there.
        """
        script = load_sql("schema.sql")
        self.run_script(script)
        existing = self.schema_columns()
        for table, columns in parse_create_tables(script).items():
            have = existing.get(table, set())
            missing = [(c, t) for c, t in columns if c not in have]
            if missing:
                with self.begin() as conn:
                    for column, sql_type in missing:
                        conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}"))
                log.info("schema: added %s to %s", ", ".join(c for c, _ in missing), table)


class SqlAlchemyWarehouse(Warehouse):
    """Any other SQLAlchemy database: pandas ``read_sql``/``to_sql`` for the bulk paths."""

    def table_columns(self, table: str) -> list[str] | None:
        # Not every database has information_schema (SQLite has none): reflect instead.
        with self._connection() as conn:
            inspector = sa.inspect(conn)
            if not inspector.has_table(table) and not inspector.has_table(table.upper()):
                return None
            name = table if inspector.has_table(table) else table.upper()
            return [c["name"].lower() for c in inspector.get_columns(name)]

    def schema_columns(self) -> dict[str, set[str]]:
        # Not every database has information_schema (SQLite has none): reflect instead.
        with self._connection() as conn:
            inspector = sa.inspect(conn)
            return {t.lower(): {c["name"].lower() for c in inspector.get_columns(t)}
                    for t in inspector.get_table_names()}


def _is_lock_conflict(exc: BaseException) -> bool:
    return "Could not set lock on file" in str(exc) or "Conflicting lock is held" in str(exc)


class DuckDBWarehouse(Warehouse, backend="duckdb"):
    """The embedded DuckDB file, opened per operation so parallel tasks take turns.

    Parameters
    ----------
    url
        ``duckdb:///path/warehouse.duckdb``.
    lock_timeout
        Seconds to keep retrying when another process holds the file's lock
        (a DuckDB file admits one read-write process at a time). The stages
        hold it only for one statement or transaction, so a wait is short;
        past this bound the lock error is raised.
    """

    def __init__(self, url: str, lock_timeout: float = 300.0) -> None:
        self.lock_timeout = lock_timeout
        super().__init__(url)

    def _create_engine(self, url: str) -> sa.Engine:
        # NullPool: the file is closed (and its lock released) when each operation returns its connection.
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        sa.event.listen(engine, "do_connect", self._connect_waiting_for_lock)
        return engine

    def _connect_waiting_for_lock(self, dialect: Any, conn_rec: Any, cargs: tuple, cparams: dict) -> Any:
        import duckdb

        from include.runtime.threads import current_budget

        # The task's thread budget (include/runtime/threads.py), not one DuckDB thread per core. Set after
        # connecting, not in the connect config: DuckDB refuses a second connection to an open file whose
        # config differs ("different configuration"), e.g. a reader opened outside the task's budget.
        config = dict(cparams.get("config") or {})
        start = time.monotonic()
        delay = 0.05
        attempt = 0
        while True:
            attempt += 1
            try:
                conn = dialect.connect(*cargs, **dict(cparams, config=dict(config)))
            except duckdb.IOException as exc:
                waited = time.monotonic() - start
                if not _is_lock_conflict(exc) or waited >= self.lock_timeout:
                    if _is_lock_conflict(exc):
                        log.warning("warehouse %s still locked by another process after %.1f s; giving up",
                                    cargs[0] if cargs else "", waited)
                    raise
                if attempt == 1:
                    log.info("warehouse file is locked by another process; waiting up to %.0f s",
                             self.lock_timeout)
                time.sleep(min(delay, max(self.lock_timeout - waited, 0.0)))
                delay = min(delay * 2, 1.0)
                continue
            waited = time.monotonic() - start
            if attempt > 1:
                level = logging.WARNING if waited > 10 else logging.INFO
                log.log(level, "warehouse lock acquired after waiting %.2f s (%d attempts)", waited, attempt)
            conn.execute(f"SET threads = {int(current_budget())}")
            return conn

    @contextmanager
    def held_open(self) -> Iterator[None]:
        """Keep the file open in this process while the block runs, so operations reuse the open database.

        Opening the file per operation (what lets parallel task processes take turns on its lock) reads
        the catalogue on every open and checkpoints the write-ahead log on every last close: 26 CPU-ms
        and 30-80 ms wall an operation on the demo's warehouse, and the demo's four dates make about 600
        operations. While one connection stays open, DuckDB hands every later connection of this
        process to the same file the database already open (2 CPU-ms an operation), and checkpoints
        when the log passes its threshold and when the block ends. Only for a process that runs every
        task itself, one at a time (``scripts/run_dates.py``): another process cannot open the file
        meanwhile. Transactions and what a killed process leaves behind are unchanged: committed work
        is in the log, replayed on the next open.
        """
        anchor = self.engine.raw_connection()  # the same connect path and config as every operation
        try:
            yield
        finally:
            anchor.close()

    def query_df(self, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        params = dict(params or {})
        with self._connection() as c:
            raw = c.connection.driver_connection
            used = set(_BIND.findall(sql))  # DuckDB rejects unused named parameters
            df = raw.execute(_BIND.sub(r"$\1", sql), {k: v for k, v in params.items() if k in used}).df()
        df.columns = [str(col).lower() for col in df.columns]
        return df

    def insert_df(self, table: str, df: pd.DataFrame, conn: sa.Connection) -> None:
        if df.empty:
            return
        raw = conn.connection.driver_connection
        raw.register("_insert_frame", df)
        try:
            cols = ", ".join(f'"{c}"' for c in df.columns)
            raw.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM _insert_frame")
        finally:
            raw.unregister("_insert_frame")

    def replace_table(self, table: str, df: pd.DataFrame) -> None:
        with self.begin() as conn:
            raw = conn.connection.driver_connection
            raw.register("_table_frame", df)
            try:
                raw.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM _table_frame")
            finally:
                raw.unregister("_table_frame")


def _bindable(value: Any) -> Any:
    """A DataFrame cell as a value the Snowflake connector binds (it rejects pandas and NumPy scalars)."""
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if hasattr(value, "item") and type(value).__module__ == "numpy":
        return value.item()
    return value


class SnowflakeWarehouse(Warehouse, backend="snowflake"):
    """Snowflake: bulk paths through ``write_pandas`` (staged Parquet + COPY INTO), kept out of transactions.

    ``write_pandas`` creates a temporary stage and file format, and in
    Snowflake a DDL statement commits the session's open transaction. A bulk
    insert inside a stage's transaction would publish that stage's earlier
    writes half-way; so the DataFrame is loaded into a transient scratch table
    through a second session and copied into the target with one ``INSERT ...
    SELECT`` (DML, in the caller's transaction; Snowflake's READ COMMITTED
    statements see the scratch table once its session committed it). A
    killed process can leave a ``SEGMENTATION_SCRATCH_*`` table behind, never
    a half-written partition.
    """

    SCRATCH_PREFIX: ClassVar[str] = "SEGMENTATION_SCRATCH_"
    #: Frames up to this many rows go in as multi-row ``INSERT ... VALUES`` on the caller's connection (DML,
    #: no second session or scratch table to pay for); larger ones through a scratch table.
    inline_rows: ClassVar[int] = 10_000

    def insert_df(self, table: str, df: pd.DataFrame, conn: sa.Connection) -> None:
        if df.empty:
            return
        if len(df) <= self.inline_rows:
            self._insert_values(conn, table, df)
            return
        with self._scratch(df) as scratch:
            self._insert_from(conn, table, scratch, df.columns)

    def replace_partition(
        self, table: str, df: pd.DataFrame, where: Mapping[str, Any], conn: sa.Connection | None = None
    ) -> int:
        if conn is None and self._conn is None:
            with self.begin() as c:
                return self.replace_partition(table, df, where, conn=c)
        conn = conn if conn is not None else self._conn
        clause = " AND ".join(f"{col} = :{col}" for col in where)
        # The scratch table first, so the transaction's first statement is already the DELETE.
        with self._scratch(df if len(df) > self.inline_rows else df.iloc[:0]) as scratch:
            conn.execute(sa.text(f"DELETE FROM {table} WHERE {clause}"), dict(where))
            if scratch is not None:
                self._insert_from(conn, table, scratch, df.columns)
            elif len(df):
                self._insert_values(conn, table, df)
        return len(df)

    @staticmethod
    def _insert_values(conn: sa.Connection, table: str, df: pd.DataFrame) -> None:
        # Not DataFrame.to_sql: its SHOW TABLES check is a DDL-class statement in Snowflake.
        names = [f"c{i}" for i in range(len(df.columns))]
        sql = sa.text(f"INSERT INTO {table} ({', '.join(str(c) for c in df.columns)}) "
                      f"VALUES ({', '.join(':' + n for n in names)})")
        values = df.astype(object).where(df.notna(), None)
        rows = [dict(zip(names, map(_bindable, row), strict=True))
                for row in values.itertuples(index=False, name=None)]
        for start in range(0, len(rows), 1000):
            conn.execute(sql, rows[start:start + 1000])

    @contextmanager
    def _scratch(self, df: pd.DataFrame) -> Iterator[str | None]:
        """``df`` in a transient table written and committed by a second session; dropped afterwards."""
        if df.empty:
            yield None
            return
        scratch = f"{self.SCRATCH_PREFIX}{uuid.uuid4().hex[:16].upper()}"
        with self.engine.connect() as side:
            try:
                ok, *_ = self._write_pandas(side, df, scratch, auto_create_table=True, table_type="transient")
                if not ok:
                    raise WarehouseError(f"write_pandas into the scratch table {scratch} failed")
                side.commit()
                yield scratch
            finally:
                side.rollback()
                side.execute(sa.text(f"DROP TABLE IF EXISTS {scratch}"))

    @staticmethod
    def _insert_from(conn: sa.Connection, table: str, scratch: str, columns: Any) -> None:
        cols = ", ".join(str(c).upper() for c in columns)
        conn.execute(sa.text(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {scratch}"))

    def replace_table(self, table: str, df: pd.DataFrame) -> None:
        # DDL (CREATE OR REPLACE): its own transaction on Snowflake whatever the caller holds.
        with self.engine.begin() as conn:
            self._write_pandas(conn, df, table, auto_create_table=True, overwrite=True)

    @staticmethod
    def _write_pandas(conn: sa.Connection, df: pd.DataFrame, table: str, **options: Any) -> tuple:
        from snowflake.connector.pandas_tools import write_pandas

        frame = df.copy()
        frame.columns = [c.upper() for c in frame.columns]
        return write_pandas(conn.connection.driver_connection, frame, table.upper(),
                            quote_identifiers=False, use_logical_type=True, **options)
