"""Erase a person (right to erasure): every warehouse row, every CRM label, and never again from old files.

Given any of a person's source ids (``system:id``), :func:`erase`

1. finds the person: the customer keys those records had on any date in
   ``identity_map``, and every source record that had one of those keys, until
   nothing new is found (a person merged on one date and split on another is
   found whole);
2. discovers the warehouse's tables from the information schema (no list to
   go stale) and deletes, in one transaction, every row that holds the person:
   rows with one of the person's ``(source_system, source_id)`` pairs (raw,
   staging, identity, the demo's truth tables...), rows with one of its
   customer keys in *any* text column (features, segments, CLV, economics,
   priorities, holdouts, outbox, pending pushes, ``identity_changes``...),
   rows keyed by one of its order or contact ids (from the input contract's
   keys), and the quarantine and field-issue rows of its source rows
   (``source_table``, ``source_key``);
3. marks the person's records in ``crm_push_state`` for a clear: the next push
   to each CRM target sends one clear per record (every label field empty)
   and deletes the state row once the target acknowledged it (the outbox,
   which lives in the warehouse, simply loses the person's rows: a reverse-ETL
   sync in mirror mode removes what left the model);
4. adds the person's records to ``erasure_list`` as
   ``md5('erasure|<system>|<id>')``, which load (:func:`remove_erased_rows`,
   called by ``include.load``) and extract apply, so files loaded earlier
   never bring the person back;
5. writes one ``erasure_log`` row: when, who asked, how many identifiers,
   records, keys, rows per table and CRM records to clear, and no erased value.

The list keeps hashes, not ids: enough to recognise a record when it comes
back, not a copy of it. It is a pseudonym (an id that can be enumerated can be
hashed and compared), which is why it keeps nothing but the hash.

MLflow and the HTML reports hold aggregates only (segment profiles, metrics,
model parameters): nothing of one person to erase there
(``tests/plugins/test_erasure.py`` greps both after an erasure).

Deleted is not yet overwritten: the embedded DuckDB file keeps freed blocks,
so :func:`compact_duckdb` (``--compact``) rewrites it with live rows only.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd
import sqlalchemy as sa

from include.crm.contract import WAREHOUSE_TARGETS
from include.crm.matching import CLEAR_CHECKSUM
from include.extract.validate import TABLE_SPECS
from include.runtime.errors import PipelineFinding
from include.runtime.warehouse import Warehouse

log = logging.getLogger(__name__)

#: The hash ``erasure_list`` keeps of a source record, in SQL (DuckDB, Snowflake and Postgres alike).
ID_HASH_SQL = "md5(concat_ws('|', 'erasure', CAST(source_system AS VARCHAR), CAST(source_id AS VARCHAR)))"
#: Tables the erasure itself keeps (its audit and its list): never searched.
OWN_TABLES = frozenset({"erasure_log", "erasure_list"})
#: Columns whose value identifies one row of one person: the input contract's own row keys (order and
#: contact ids) and the demo generator's ``person_id`` of its truth tables.
LINKED_ID_COLUMNS = tuple(dict.fromkeys(
    [spec.key[0] for spec in TABLE_SPECS if len(spec.key) == 1] + ["person_id"]))
_TEXT_TYPES = ("VARCHAR", "TEXT", "STRING", "CHAR")


class ErasureRequestError(PipelineFinding, ValueError):
    """An erasure request names no valid source id (``system:id``)."""


def id_hash(source_system: str, source_id: str) -> str:
    """What ``erasure_list`` keeps of a source record (:data:`ID_HASH_SQL` in Python)."""
    return hashlib.md5(f"erasure|{source_system}|{source_id}".encode()).hexdigest()


def parse_source_ids(values: Iterable[str]) -> list[tuple[str, str]]:
    """``system:id`` strings as pairs (split at the first ``:``), without duplicates.

    Raises
    ------
    ErasureRequestError
        For an empty request or a value without a system or an id (the value
        itself is not repeated in the message).
    """
    pairs: list[tuple[str, str]] = []
    for n, value in enumerate(values, start=1):
        system, sep, source_id = str(value).strip().partition(":")
        if not sep or not system.strip() or not source_id.strip():
            raise ErasureRequestError(f"erasure request: identifier #{n} is not 'source_system:source_id'")
        pairs.append((system.strip(), source_id.strip()))
    if not pairs:
        raise ErasureRequestError("erasure request: no source id given")
    return list(dict.fromkeys(pairs))


@dataclass
class ErasureResult:
    """What one erasure did (counts only)."""

    erasure_id: str | None
    status: str
    identifiers_given: int
    source_records: int = 0
    customer_keys: int = 0
    rows_by_table: dict[str, int] = field(default_factory=dict)
    crm_records_to_clear: int = 0

    @property
    def rows_deleted(self) -> int:
        return sum(self.rows_by_table.values())

    def summary(self) -> dict[str, object]:
        return {"erasure_id": self.erasure_id, "status": self.status, "identifiers_given": self.identifiers_given,
                "source_records": self.source_records, "customer_keys": self.customer_keys,
                "rows_deleted": self.rows_deleted, "tables_changed": len(self.rows_by_table),
                "rows_by_table": dict(self.rows_by_table), "crm_records_to_clear": self.crm_records_to_clear}


def _tables(wh: Warehouse) -> dict[str, dict[str, str]]:
    """Base tables of the current schema -> {column: upper-case type} (lower-case names)."""
    frame = wh.query_df(
        "SELECT LOWER(c.table_name) AS t, LOWER(c.column_name) AS c, UPPER(c.data_type) AS ty "
        "FROM information_schema.columns c JOIN information_schema.tables t "
        "ON t.table_name = c.table_name AND t.table_schema = c.table_schema "
        "WHERE c.table_schema = CURRENT_SCHEMA() AND t.table_type = 'BASE TABLE'")
    return {t: dict(zip(g["c"], g["ty"], strict=True)) for t, g in frame.groupby("t")}


def _binds(prefix: str, values: Sequence[object]) -> tuple[str, dict[str, object]]:
    names = [f"{prefix}{i}" for i in range(len(values))]
    return ", ".join(f":{n}" for n in names), dict(zip(names, values, strict=True))


def _pairs_condition(pairs: Sequence[tuple[str, str]], prefix: str = "p") -> tuple[str, dict[str, object]]:
    """``(source_system, source_id) IN pairs`` as ORs of equalities (portable, and a person has few records)."""
    parts, params = [], {}
    for i, (system, source_id) in enumerate(pairs):
        parts.append(f"(source_system = :{prefix}s{i} AND source_id = :{prefix}i{i})")
        params[f"{prefix}s{i}"], params[f"{prefix}i{i}"] = system, source_id
    return "(" + " OR ".join(parts) + ")" if parts else "(1 = 0)", params


def find_person(wh: Warehouse, pairs: Sequence[tuple[str, str]],
                tables: dict[str, dict[str, str]]) -> tuple[list[tuple[str, str]], list[str]]:
    """Every source record and customer key of the person, closed over ``identity_map`` on every date."""
    records = list(dict.fromkeys(pairs))
    keys: list[str] = []
    if "identity_map" not in tables:
        return records, keys
    while True:
        where, params = _pairs_condition(records)
        found = wh.query_df(f"SELECT DISTINCT customer_key FROM identity_map WHERE {where}", params)
        new_keys = sorted(set(found["customer_key"].dropna()) - set(keys))
        if not new_keys:
            return records, keys
        keys += new_keys
        binds, params = _binds("k", keys)
        more = wh.query_df("SELECT DISTINCT source_system, source_id FROM identity_map "
                           f"WHERE customer_key IN ({binds})", params)
        records = list(dict.fromkeys(records + list(zip(more["source_system"], more["source_id"], strict=True))))


def _linked_ids(wh: Warehouse, records: Sequence[tuple[str, str]],
                tables: dict[str, dict[str, str]]) -> dict[str, set[str]]:
    """The person's order, contact and truth ids, from every table that holds them beside its source ids."""
    where, params = _pairs_condition(records)
    linked: dict[str, set[str]] = {c: set() for c in LINKED_ID_COLUMNS}
    for table, columns in tables.items():
        if table in OWN_TABLES or not {"source_system", "source_id"} <= set(columns):
            continue
        for column in LINKED_ID_COLUMNS:
            if column in columns:
                values = wh.query_df(f"SELECT DISTINCT CAST({column} AS VARCHAR) AS v FROM {table} WHERE {where}",
                                     params)["v"].dropna()
                linked[column] |= set(values)
    return {c: v for c, v in linked.items() if v}


def _source_key_condition(records: Sequence[tuple[str, str]], linked: dict[str, set[str]]
                          ) -> tuple[str, dict[str, object]]:
    """Quarantine and field-issue rows of the person's raw rows (``source_key`` as extract builds it)."""
    parts, params = [], {}
    n = 0
    for spec in TABLE_SPECS:
        if spec.key[:2] == ("source_system", "source_id"):
            for system, source_id in records:
                key = f"{system}|{source_id}"
                params[f"sk{n}"], params[f"sp{n}"], params[f"sl{n}"] = key, key + "|", len(key) + 1
                parts.append(f"(source_table = '{spec.raw}' AND (source_key = :sk{n} "
                             f"OR SUBSTR(source_key, 1, :sl{n}) = :sp{n}))")
                n += 1
        elif len(spec.key) == 1 and linked.get(spec.key[0]):
            binds, values = _binds(f"sv{n}_", sorted(linked[spec.key[0]]))
            params.update(values)
            parts.append(f"(source_table = '{spec.raw}' AND source_key IN ({binds}))")
            n += 1
    return "(" + " OR ".join(parts) + ")" if parts else "(1 = 0)", params


def _email_hashes(wh: Warehouse, records: Sequence[tuple[str, str]], tables: dict[str, dict[str, str]]) -> list[str]:
    """SHA-256 of the person's normalised emails: the record ids of a target matched by ``email_sha256``."""
    if "stg_identity_records" not in tables:
        return []
    where, params = _pairs_condition(records)
    emails = wh.query_df(f"SELECT DISTINCT email FROM stg_identity_records WHERE {where} AND email IS NOT NULL",
                         params)["email"]
    return sorted({hashlib.sha256(e.strip().lower().encode()).hexdigest() for e in emails if e and e.strip()})


def _crm_condition(records: Sequence[tuple[str, str]], keys: Sequence[str], email_hashes: Sequence[str]
                   ) -> tuple[str, dict[str, object]]:
    """``crm_push_state`` rows of the person, however the target matched them."""
    parts, params = [], {}
    if keys:
        binds, values = _binds("ck", list(keys))
        params.update(values)
        parts += [f"customer_key IN ({binds})",
                  f"((matched_by = 'customer_key' OR matched_by LIKE 'created:%') AND record_id IN ({binds}))"]
    for i, (system, source_id) in enumerate(records):
        parts.append(f"(matched_by = :cm{i} AND record_id = :ci{i})")
        params[f"cm{i}"], params[f"ci{i}"] = f"source:{system}", source_id
    if email_hashes:
        binds, values = _binds("ce", list(email_hashes))
        params.update(values)
        parts.append(f"(matched_by = 'email_sha256' AND record_id IN ({binds}))")
    return "(" + " OR ".join(parts) + ")" if parts else "(1 = 0)", params


def _row_condition(table: str, columns: dict[str, str], records: Sequence[tuple[str, str]], keys: Sequence[str],
                   linked: dict[str, set[str]]) -> tuple[str | None, dict[str, object]]:
    """The rows of ``table`` that hold the person, or ``None`` when the table cannot hold any."""
    parts, params = [], {}
    if {"source_system", "source_id"} <= set(columns):
        where, values = _pairs_condition(records)
        parts.append(where)
        params.update(values)
    if keys:
        binds, values = _binds("k", list(keys))
        text = [c for c, ty in columns.items() if ty.startswith(_TEXT_TYPES)]
        if text:
            params.update(values)
            parts += [f"{c} IN ({binds})" for c in text]
    for column, ids in linked.items():
        if column in columns:
            binds, values = _binds(f"l_{column}_", sorted(ids))
            params.update(values)
            parts.append(f"CAST({column} AS VARCHAR) IN ({binds})")
    if {"source_table", "source_key"} <= set(columns):
        where, values = _source_key_condition(records, linked)
        parts.append(where)
        params.update(values)
    return (" OR ".join(parts), params) if parts else (None, {})


def _count(conn: sa.Connection, sql: str, params: dict[str, object] | None = None) -> int:
    """``SELECT COUNT(*)`` fetched to the end: DuckDB keeps a half-read result open, which blocks the next
    bulk insert on the same connection."""
    return int(conn.execute(sa.text(sql), params or {}).all()[0][0] or 0)


def erase(wh: Warehouse, source_ids: Iterable[str], *, requested_by: str = "command") -> ErasureResult:
    """Erase the person holding any of ``source_ids`` (``system:id``) from the warehouse; see the module docstring.

    Idempotent: a request whose records are all on the erasure list already
    and that finds nothing left to delete writes no second audit row.
    """
    pairs = parse_source_ids(source_ids)
    wh.ensure_schema()
    tables = _tables(wh)
    records, keys = find_person(wh, pairs, tables)
    linked = _linked_ids(wh, records, tables)
    email_hashes = _email_hashes(wh, records, tables)
    hashes = sorted({id_hash(s, i) for s, i in records})
    binds, params = _binds("h", hashes)
    listed = set(wh.query_df(f"SELECT DISTINCT id_hash FROM erasure_list WHERE id_hash IN ({binds})",
                             params)["id_hash"])
    erasure_id = uuid.uuid4().hex
    requested_at = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    result = ErasureResult(erasure_id, "erased", len(pairs), len(records), len(keys))
    with wh.transaction() as tx, tx.begin() as conn:
        if "crm_push_state" in tables:
            where, params = _crm_condition(records, keys, email_hashes)
            warehouse = ", ".join(f"'{t}'" for t in WAREHOUSE_TARGETS)
            gone = _count(conn, f"SELECT COUNT(*) FROM crm_push_state WHERE ({where}) AND (target IN ({warehouse}) "
                                f"OR checksum = '{CLEAR_CHECKSUM}')", params)
            # In the warehouse (the outbox) or already cleared: nothing to send, the rows go now.
            conn.execute(sa.text(f"DELETE FROM crm_push_state WHERE ({where}) AND (target IN ({warehouse}) "
                                 f"OR checksum = '{CLEAR_CHECKSUM}')"), params)
            to_clear = _count(conn, f"SELECT COUNT(*) FROM crm_push_state WHERE {where}", params)
            conn.execute(sa.text(f"UPDATE crm_push_state SET erasure_id = :eid, customer_key = NULL, "
                                 f"segment_name = NULL WHERE {where}"), {**params, "eid": erasure_id})
            result.crm_records_to_clear = to_clear
            if gone:
                result.rows_by_table["crm_push_state"] = int(gone)
        for table, columns in sorted(tables.items()):
            if table in OWN_TABLES or table == "crm_push_state":
                continue
            where, params = _row_condition(table, columns, records, keys, linked)
            if where is None:
                continue
            n = _count(conn, f"SELECT COUNT(*) FROM {table} WHERE {where}", params)
            if n:
                conn.execute(sa.text(f"DELETE FROM {table} WHERE {where}"), params)
                result.rows_by_table[table] = n
        if not result.rows_by_table and not result.crm_records_to_clear and set(hashes) <= listed:
            result.erasure_id, result.status = None, "already erased"
            log.info("erasure: nothing left of the %d records; already erased", len(records))
            return result
        new = [h for h in hashes if h not in listed]
        if new:
            tx.insert_df("erasure_list", pd.DataFrame({"erasure_id": erasure_id, "id_hash": new}), conn)
        tx.insert_df("erasure_log", pd.DataFrame([{
            "erasure_id": erasure_id, "requested_at": requested_at,
            "completed_at": dt.datetime.now(dt.UTC).replace(tzinfo=None), "requested_by": requested_by[:200],
            "identifiers_given": len(pairs), "source_records": len(records), "customer_keys": len(keys),
            "tables_changed": len(result.rows_by_table), "rows_deleted": result.rows_deleted,
            "rows_by_table": json.dumps(result.rows_by_table, sort_keys=True),
            "crm_records_to_clear": result.crm_records_to_clear, "crm_records_cleared": 0,
            "status": "erased; CRM clears pending" if result.crm_records_to_clear else "erased"}]), conn)
    log.info("erasure %s: %d source records, %d customer keys, %d rows deleted from %d tables, %d CRM records "
             "to clear at the next push", erasure_id, len(records), len(keys), result.rows_deleted,
             len(result.rows_by_table), result.crm_records_to_clear)
    return result


def remove_erased_rows(wh: Warehouse, tables: Iterable[str] | None = None) -> dict[str, int]:
    """Delete rows of erased persons from raw tables (every ``raw_*`` table with source ids, or ``tables``).

    Called by ``include.load`` after a table is loaded and by the extract stage
    before it reads: a file loaded before (or after) an erasure never brings
    the person back. Returns the rows removed per table (only tables that had some).
    """
    found = _tables(wh)
    if "erasure_list" not in found:
        return {}
    if not wh.scalar("SELECT COUNT(*) FROM erasure_list"):
        return {}
    names = [t.lower() for t in tables] if tables is not None else [t for t in found if t.startswith("raw_")]
    removed: dict[str, int] = {}
    with wh.begin() as conn:
        for table in names:
            if not {"source_system", "source_id"} <= set(found.get(table, {})):
                continue
            where = f"{ID_HASH_SQL} IN (SELECT id_hash FROM erasure_list)"
            n = _count(conn, f"SELECT COUNT(*) FROM {table} WHERE {where}")
            if n:
                conn.execute(sa.text(f"DELETE FROM {table} WHERE {where}"))
                removed[table] = n
    for table, n in removed.items():
        log.info("%s: %d rows of erased persons removed (erasure_list)", table, n)
    return removed


def compact_duckdb(warehouse_url: str) -> tuple[int, int]:
    """Rewrite an embedded DuckDB file so deleted rows leave no bytes behind; return (bytes before, after).

    DuckDB marks deleted rows and frees their blocks but does not overwrite
    them: an erased person's values stay readable in the file's bytes until
    the blocks are reused (measured: still there after ``FORCE CHECKPOINT``,
    ``VACUUM`` and rewriting the tables). ``COPY FROM DATABASE`` into a new
    file copies live rows only; the new file then replaces the old one. It
    needs the file to itself: run it when no task holds the warehouse.
    """
    import os
    from pathlib import Path

    import duckdb
    from sqlalchemy.engine import make_url

    url = make_url(warehouse_url)
    if url.get_backend_name() != "duckdb" or not url.database or url.database == ":memory:":
        raise ErasureRequestError("--compact rewrites an embedded DuckDB file; this warehouse is not one "
                                  "(on Snowflake, deleted rows are kept by Time Travel and Fail-safe until they expire)")
    path = Path(url.database)
    fresh = path.with_name(path.name + ".compact")
    fresh.unlink(missing_ok=True)
    before = path.stat().st_size
    with duckdb.connect(str(path)) as con:  # replays and folds any write-ahead log into the file
        con.execute("CHECKPOINT")
    with duckdb.connect() as con:
        con.execute(f"ATTACH '{path}' AS src (READ_ONLY)")
        con.execute(f"ATTACH '{fresh}' AS dst")
        con.execute("COPY FROM DATABASE src TO dst")
        con.execute("DETACH dst")
        con.execute("DETACH src")
    os.replace(fresh, path)
    log.info("warehouse file rewritten without freed blocks: %d -> %d bytes", before, path.stat().st_size)
    return before, path.stat().st_size


def erase_requested(warehouse_url: str, source_ids: Sequence[str] | None, *, requested_by: str) -> dict[str, object]:
    """The DAG's ``apply_erasures`` task: erase the param's ids (if any), then apply the list to raw tables."""
    with Warehouse(warehouse_url) as wh:
        summary: dict[str, object] = {"requested": len(source_ids or [])}
        if source_ids:
            summary.update(erase(wh, source_ids, requested_by=requested_by).summary())
        summary["raw_rows_removed"] = sum(remove_erased_rows(wh).values())
    return summary
