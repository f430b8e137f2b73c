"""The mapping file: which sources feed which ``raw_*`` table, column by column, without SQL.

A mapping is a TOML file (``examples/*/mapping.toml``)::

    [defaults]                  # optional, inherited by every table and file
    delimiter = ";"
    decimal = ","
    timezone = "Europe/Berlin"
    currency = "EUR"

    [tables.raw_orders]
    file = "orders/*.csv"       # relative to the mapping file; or query / table; or [[...files]]
    date_format = "%Y%m%d"
    columns = { order_id = "BestellNr", source_id = "KundenNr", order_ts = "Datum", amount = "Betrag" }
    constants = { source_system = "webshop" }

Keys of ``columns`` are contract columns (plus ``loaded_at`` and, for
``raw_identity_records``, any ``id_*`` extra identifier). A value is a source
column name, or an expression (an inline table):

- ``{ column = "CustomerID", strip_suffix = ".0" }``: the column with a
  literal prefix (``strip_prefix``) or suffix removed (``17850.0`` -> ``17850``);
- ``{ join = ["street_number", "address_1", "suburb"], sep = " " }``: parts
  joined, empty ones skipped;
- ``{ multiply = ["Quantity", "UnitPrice"] }``: a product of numbers (the
  line value of an invoice line);
- ``negative_when = { column = "Type", equals = ["R", "C"] }`` or
  ``{ column = "InvoiceNo", starts_with = "C" }`` beside ``column`` or
  ``multiply``: the number is made negative where the flag holds (already
  negative numbers stay negative);
- ``{ generate = "row_hash" }`` for a key (``order_id``...) an export lacks:
  ``<file>:<hash of the row's mapped values>:<n>``, the same on every load.

Several files per table, each with its own constants or options, are an
array of tables; each entry inherits the table's keys and may override them
(its ``columns`` and ``constants`` are merged into the table's)::

    [tables.raw_identity_records]
    columns = { source_id = "rec_id", created_at = "registered" }

    [[tables.raw_identity_records.files]]
    file = "registry_a.csv"
    constants = { source_system = "registry_a" }

    [[tables.raw_identity_records.files]]
    file = "registry_b.csv"
    constants = { source_system = "registry_b" }

Table-level keys that reshape rows:

- ``group_lines_by = "InvoiceNo"`` (``raw_orders``): the rows are invoice
  lines; one order per key, ``amount`` = the sum of the positive line values,
  ``returned_amount`` = the sum of the negative ones; a key with negative
  lines only (a cancellation) becomes a row of ``raw_returns``. A line whose
  value is not a number is set aside in ``load_quarantine``.
- ``derive = "raw_orders"`` (``raw_identity_records``): no customer file; one
  record per customer of the orders, ``created_at`` = the first purchase;
  ``columns`` may name order-source columns for other identity columns
  (``region = "Country"``, the value on the first purchase).

Rows of ``raw_orders`` without a customer (``source_id`` empty) are guests:
counted and reported in ``load_manifest`` (rows and amount), not loaded.

Formats: ``csv`` (DuckDB's reader, every column as text), ``parquet``,
``whitespace`` (columns separated by runs of spaces or tabs; the header line
names them, else ``names``), ``fixed`` (``widths`` in characters and
``names``; ``header = true`` skips a header line) and ``warehouse`` (``query``
or ``table``: a DuckDB query may read files, relative to the mapping).

Parsing the file checks everything that can be checked without reading the
data: table and column names, required columns, expressions, options.
"""

from __future__ import annotations

import re
import tomllib
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path

from include.extract.validate import EXTRA_ID_PREFIX, TABLE_SPECS, TableSpec
from include.runtime.errors import BadDataError

FORMATS = ("csv", "parquet", "whitespace", "fixed", "warehouse")
_SPECS = {spec.raw: spec for spec in TABLE_SPECS}
#: Keys a file entry may set (and inherit from the table and [defaults]).
_SOURCE_KEYS = {
    "file", "format", "query", "table", "columns", "constants", "date_format", "date_formats",
    "decimal", "delimiter", "timezone", "currency", "encoding", "header", "names", "widths",
}
_TABLE_KEYS = _SOURCE_KEYS | {"files", "group_lines_by", "derive"}
_DEFAULT_KEYS = {"date_format", "decimal", "delimiter", "timezone", "currency", "encoding", "header"}
_EXPRESSION_KEYS = {"column", "join", "sep", "multiply", "strip_prefix", "strip_suffix", "negative_when", "generate"}
_EXTRA_ID = re.compile(r"^id_[a-z0-9_]+$")
#: Key columns that may be generated when an export has none.
GENERATED_KEYS = {"order_id", "contact_id", "return_id"}
#: Tables whose rows without a customer are guests (counted, not loaded).
GUEST_TABLES = {"raw_orders"}
#: Table -> the table it may be derived from.
DERIVABLE = {"raw_identity_records": "raw_orders"}


class MappingError(BadDataError):
    """The mapping file does not fit the contract or the source it names."""


@dataclass(frozen=True)
class Condition:
    """Where a flag column marks a row: its trimmed text equals one of ``equals`` or starts with ``starts_with``."""

    column: str
    equals: tuple[str, ...] = ()
    starts_with: str | None = None


@dataclass(frozen=True)
class ColumnExpr:
    """How one contract column is made from a source row.

    ``kind`` is ``column`` (one source column), ``join`` (parts joined with
    ``sep``), ``multiply`` (a product of numbers) or ``generate`` (a row
    hash id); ``sources`` are the source columns it reads.
    """

    kind: str
    sources: tuple[str, ...] = ()
    sep: str = " "
    strip_prefix: str | None = None
    strip_suffix: str | None = None
    negative_when: Condition | None = None

    @property
    def read_columns(self) -> tuple[str, ...]:
        """Every source column the expression reads (the flag column too)."""
        return self.sources + ((self.negative_when.column,) if self.negative_when else ())

    @classmethod
    def of(cls, source: str) -> ColumnExpr:
        return cls("column", (source,))


@dataclass(frozen=True)
class SourceMapping:
    """One source of a table (a file pattern, a query or a table) and how it is read.

    Attributes
    ----------
    source_format
        One of :data:`FORMATS`.
    files
        Source files, resolved and sorted (file formats).
    query
        SQL whose result is the source (``warehouse``).
    base
        Folder of the mapping file: relative paths (in ``file`` and inside a
        DuckDB ``query``) are read from there.
    columns
        Contract column -> :class:`ColumnExpr`.
    constants
        Contract column -> constant text (``source_system = "webshop"``).
    date_formats
        Contract column -> strptime format of its source text; columns not
        listed are left for extract, which reads ISO 8601 and YYYYMMDD.
    decimal
        Decimal separator of numbers in text (``.`` or ``,``).
    delimiter, encoding, header
        CSV options (``header`` also for whitespace and fixed-width files).
    names, widths
        Column names (whitespace files without a header; fixed-width files)
        and widths in characters (fixed-width files).
    timezone
        IANA zone of timestamps written without an offset; they are
        converted to UTC. ``None`` or ``UTC``: left as they are.
    currency
        ISO 4217 code of the amounts, recorded in ``load_manifest``.
    """

    table: str
    source_format: str
    files: tuple[Path, ...] = ()
    query: str | None = None
    base: Path = Path(".")
    columns: dict[str, ColumnExpr] = field(default_factory=dict)
    constants: dict[str, str] = field(default_factory=dict)
    date_formats: dict[str, str] = field(default_factory=dict)
    decimal: str = "."
    delimiter: str | None = None
    encoding: str = "utf-8"
    header: bool = True
    names: tuple[str, ...] = ()
    widths: tuple[int, ...] = ()
    timezone: str | None = None
    currency: str | None = None

    @property
    def spec(self) -> TableSpec:
        return _SPECS[self.table]

    @property
    def source_label(self) -> str:
        if self.source_format == "warehouse":
            return f"query: {self.query}"
        return ", ".join(str(p) for p in self.files)

    @property
    def read_columns(self) -> list[str]:
        """Every source column the mapping reads, in first-use order."""
        seen: dict[str, None] = {}
        for expr in self.columns.values():
            for name in expr.read_columns:
                seen.setdefault(name, None)
        return list(seen)


@dataclass(frozen=True)
class TableMapping:
    """How one ``raw_*`` table is built: its sources and the table-level reshaping.

    Attributes
    ----------
    table
        The contract table (``raw_orders``...).
    parts
        Its sources (one per ``file``/``query``/``table`` or ``[[files]]`` entry).
    group_lines_by
        Source columns whose values key an order; the rows are its lines.
    derive
        The table this one is derived from (``raw_identity_records`` from ``raw_orders``).
    derive_columns
        For a derived table: contract column -> expression over the source table's sources.
    """

    table: str
    parts: tuple[SourceMapping, ...] = ()
    group_lines_by: tuple[str, ...] = ()
    derive: str | None = None
    derive_columns: dict[str, ColumnExpr] = field(default_factory=dict)

    @property
    def spec(self) -> TableSpec:
        return _SPECS[self.table]

    @property
    def source_label(self) -> str:
        if self.derive:
            return f"derived from {self.derive}"
        return "; ".join(part.source_label for part in self.parts)

    @property
    def currency(self) -> str | None:
        return next((p.currency for p in self.parts if p.currency), None)

    @property
    def timezone(self) -> str | None:
        return next((p.timezone for p in self.parts if p.timezone), None)

    @property
    def decimal(self) -> str:
        return self.parts[0].decimal if self.parts else "."

    @property
    def date_formats(self) -> dict[str, str]:
        merged: dict[str, str] = {}
        for part in self.parts:
            merged.update(part.date_formats)
        return merged

    @property
    def columns(self) -> list[str]:
        """The contract columns the table is written with, in mapping order."""
        if self.derive:
            return ["source_system", "source_id", "created_at", *self.derive_columns]
        names: dict[str, None] = {}
        for part in self.parts:
            for name in list(part.columns) + list(part.constants):
                names.setdefault(name, None)
        if self.group_lines_by and "returned_amount" not in names:
            names["returned_amount"] = None
        return list(names)


@dataclass(frozen=True)
class Mapping:
    path: Path
    tables: tuple[TableMapping, ...]

    def table(self, name: str) -> TableMapping | None:
        return next((t for t in self.tables if t.table == name), None)


def read_mapping(path: str | Path) -> Mapping:
    """Parse and check a mapping file.

    Raises
    ------
    MappingError
        Naming the table and the key or column at fault.
    """
    path = Path(path).resolve()
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise MappingError(f"mapping file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"mapping file {path} is not valid TOML: {exc}") from exc
    defaults = doc.get("defaults", {})
    unknown = set(defaults) - _DEFAULT_KEYS
    if unknown:
        raise MappingError(f"{path.name} [defaults]: unknown key(s) {', '.join(sorted(unknown))} "
                           f"(known: {', '.join(sorted(_DEFAULT_KEYS))})")
    tables = doc.get("tables", {})
    if not tables:
        raise MappingError(f"{path.name}: no [tables.raw_...] section")
    parsed = tuple(_table_mapping(name, body, defaults, path.parent, path.name) for name, body in tables.items())
    by_name = {t.table: t for t in parsed}
    for t in parsed:
        if t.derive and t.derive not in by_name:
            raise MappingError(f"{path.name} [tables.{t.table}]: derive = '{t.derive}', which the mapping "
                               f"does not map")
    grouped = [t for t in parsed if t.group_lines_by]
    if grouped and "raw_returns" in by_name:
        raise MappingError(f"{path.name}: raw_returns is mapped and also made from the cancellation lines of "
                           f"{grouped[0].table} (group_lines_by); keep one")
    return Mapping(path, parsed)


def _table_mapping(name: str, body: dict, defaults: dict, base: Path, file_name: str) -> TableMapping:
    where = f"{file_name} [tables.{name}]"
    if name not in _SPECS:
        raise MappingError(f"{where}: '{name}' is not a contract table (known: {', '.join(_SPECS)})")
    if not isinstance(body, dict):
        raise MappingError(f"{where}: expected a table of keys")
    unknown = set(body) - _TABLE_KEYS
    if unknown:
        raise MappingError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(_TABLE_KEYS))})")
    group = body.get("group_lines_by")
    group_by = tuple([group] if isinstance(group, str) else (group or []))
    if group_by and name != "raw_orders":
        raise MappingError(f"{where}: group_lines_by groups order lines; it belongs to [tables.raw_orders]")
    if "derive" in body:
        return _derived_mapping(name, body, where)
    entries = body.get("files")
    table_keys = {k: v for k, v in body.items() if k not in ("files", "group_lines_by", "derive")}
    if entries is None:
        entries = [{}]
        where_of = [where]
    else:
        if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
            raise MappingError(f"{where}: files must be an array of tables ([[tables.{name}.files]])")
        if any(k in table_keys for k in ("file", "query", "table")):
            raise MappingError(f"{where}: give the sources either as file/query/table or as [[tables.{name}.files]], "
                               "not both")
        where_of = [f"{file_name} [[tables.{name}.files]] #{i + 1}" for i in range(len(entries))]
    parts = []
    for entry, entry_where in zip(entries, where_of, strict=True):
        unknown = set(entry) - _SOURCE_KEYS
        if unknown:
            raise MappingError(f"{entry_where}: unknown key(s) {', '.join(sorted(unknown))} "
                               f"(known: {', '.join(sorted(_SOURCE_KEYS))})")
        merged = {**defaults, **table_keys, **entry}
        merged["columns"] = {**dict(table_keys.get("columns", {})), **dict(entry.get("columns", {}))}
        merged["constants"] = {**dict(table_keys.get("constants", {})), **dict(entry.get("constants", {}))}
        parts.append(_source_mapping(name, merged, base, entry_where, group_by))
    for part, entry_where in zip(parts, where_of, strict=True):
        if group_by and "amount" not in part.columns:
                raise MappingError(f"{entry_where}: group_lines_by needs amount mapped to the line value, e.g. "
                                   "amount = { multiply = [\"Quantity\", \"UnitPrice\"] }")
    return TableMapping(table=name, parts=tuple(parts), group_lines_by=group_by)


def _derived_mapping(name: str, body: dict, where: str) -> TableMapping:
    source = str(body["derive"])
    if DERIVABLE.get(name) != source:
        known = ", ".join(f"{t} from {s}" for t, s in DERIVABLE.items())
        raise MappingError(f"{where}: derive = '{source}' is not supported (known: {known})")
    extra = set(body) - {"derive", "columns"}
    if extra:
        raise MappingError(f"{where}: a derived table takes only derive and columns, not {', '.join(sorted(extra))}")
    columns = {str(k).lower(): _expression(v, f"{where} columns.{k}") for k, v in dict(body.get("columns", {})).items()}
    spec = _SPECS[name]
    own = {"source_system", "source_id", "created_at"}
    for column, expr in columns.items():
        if column in own:
            raise MappingError(f"{where}: {column} of a derived {name} comes from {source} (created_at = the "
                               "first purchase); map only other columns")
        _check_column_name(name, spec, column, where)
        if expr.kind not in ("column", "join"):
            raise MappingError(f"{where}: columns of a derived table are source columns or joins, not {expr.kind}")
    return TableMapping(table=name, derive=source, derive_columns=columns)


def _check_column_name(name: str, spec: TableSpec, column: str, where: str) -> None:
    allowed = {c.name for c in spec.columns} | {"loaded_at"}
    extra_id = name == "raw_identity_records" and column.startswith(EXTRA_ID_PREFIX)
    if column not in allowed and not (extra_id and _EXTRA_ID.match(column)):
        hint = (" (extra identifiers are id_ followed by lower-case letters, digits, _)"
                if column.startswith(EXTRA_ID_PREFIX) else "")
        raise MappingError(
            f"{where}: '{column}' is not a column of {name}{hint}; known: {', '.join(sorted(allowed))}"
            + (", id_*" if name == "raw_identity_records" else "")
        )


def _expression(value: object, where: str) -> ColumnExpr:
    """A ``columns`` value: a source column name or an expression table."""
    if isinstance(value, str):
        return ColumnExpr.of(value)
    if not isinstance(value, dict):
        raise MappingError(f"{where}: a column is a source column name or an expression table, got {value!r}")
    unknown = set(value) - _EXPRESSION_KEYS
    if unknown:
        raise MappingError(f"{where}: unknown expression key(s) {', '.join(sorted(unknown))} "
                           f"(known: {', '.join(sorted(_EXPRESSION_KEYS))})")
    kinds = [k for k in ("column", "join", "multiply", "generate") if k in value]
    if len(kinds) != 1:
        raise MappingError(f"{where}: an expression has exactly one of column, join, multiply or generate "
                           f"(got {kinds or 'none'})")
    kind = kinds[0]

    def names(key: str) -> tuple[str, ...]:
        parts = value[key]
        if not isinstance(parts, list) or len(parts) < 2 or not all(isinstance(p, str) for p in parts):
            raise MappingError(f"{where}: {key} takes a list of two or more source column names")
        return tuple(parts)

    condition = None
    if "negative_when" in value:
        if kind not in ("column", "multiply"):
            raise MappingError(f"{where}: negative_when applies to a number (column or multiply)")
        condition = _condition(value["negative_when"], where)
    for key in ("strip_prefix", "strip_suffix"):
        if key in value and (kind != "column" or not isinstance(value[key], str) or not value[key]):
            raise MappingError(f"{where}: {key} takes a non-empty text and applies to a column")
    if "sep" in value and kind != "join":
        raise MappingError(f"{where}: sep belongs to join")
    if kind == "generate":
        if value["generate"] != "row_hash" or len(value) != 1:
            raise MappingError(f"{where}: generate = \"row_hash\" is the one generated id")
        return ColumnExpr("generate")
    if kind == "column":
        if not isinstance(value["column"], str):
            raise MappingError(f"{where}: column takes a source column name")
        return ColumnExpr("column", (value["column"],), strip_prefix=value.get("strip_prefix"),
                          strip_suffix=value.get("strip_suffix"), negative_when=condition)
    if kind == "join":
        return ColumnExpr("join", names("join"), sep=str(value.get("sep", " ")))
    return ColumnExpr("multiply", names("multiply"), negative_when=condition)


def _condition(value: object, where: str) -> Condition:
    if not isinstance(value, dict) or not isinstance(value.get("column"), str):
        raise MappingError(f"{where}: negative_when = {{ column = \"...\", equals = [...] }} or "
                           "{ column = \"...\", starts_with = \"...\" }")
    unknown = set(value) - {"column", "equals", "starts_with"}
    tests = [k for k in ("equals", "starts_with") if k in value]
    if unknown or len(tests) != 1:
        raise MappingError(f"{where}: negative_when takes column and one of equals or starts_with")
    equals = value.get("equals", ())
    equals = (equals,) if isinstance(equals, str) else tuple(str(e) for e in equals)
    return Condition(value["column"], equals=equals, starts_with=value.get("starts_with"))


def _source_mapping(name: str, body: dict, base: Path, where: str, group_by: tuple[str, ...]) -> SourceMapping:
    spec = _SPECS[name]
    sources = [k for k in ("file", "query", "table") if k in body]
    if len(sources) != 1:
        raise MappingError(f"{where}: give exactly one of file, query or table (got {sources or 'none'})")
    files: tuple[Path, ...] = ()
    query = None
    if "file" in body:
        pattern = str(body["file"])
        matches = sorted(base.glob(pattern)) if not Path(pattern).is_absolute() else sorted(
            Path(pattern).parent.glob(Path(pattern).name))
        if not matches:
            raise MappingError(f"{where}: no file matches '{pattern}' (relative to {base})")
        files = tuple(p.resolve() for p in matches)
        suffix = files[0].suffix.lower().lstrip(".")
        source_format = str(body.get("format", "parquet" if suffix in ("parquet", "pq") else "csv")).lower()
        if source_format == "warehouse":
            raise MappingError(f"{where}: format 'warehouse' takes query or table, not file")
    else:
        source_format = str(body.get("format", "warehouse")).lower()
        if source_format != "warehouse":
            raise MappingError(f"{where}: query/table sources have format 'warehouse', not '{source_format}'")
        query = str(body["query"]) if "query" in body else f"SELECT * FROM {body['table']}"
    if source_format not in FORMATS:
        raise MappingError(f"{where}: format must be one of {', '.join(FORMATS)}, got '{source_format}'")
    if source_format == "csv" and body.get("delimiter") is not None and str(body["delimiter"]).strip() == "":
        raise MappingError(f"{where}: a blank delimiter means columns separated by spaces: set "
                           "format = \"whitespace\" instead")
    names = tuple(str(n) for n in body.get("names", ()))
    widths = tuple(body.get("widths", ()))
    if source_format == "fixed":
        if not widths or not all(isinstance(w, int) and w > 0 for w in widths):
            raise MappingError(f"{where}: a fixed-width file needs widths = [...] (characters per column)")
        if len(names) != len(widths):
            raise MappingError(f"{where}: a fixed-width file needs one name per width "
                               f"({len(names)} names, {len(widths)} widths)")
    elif widths:
        raise MappingError(f"{where}: widths belong to format = \"fixed\"")
    if names and source_format not in ("fixed", "whitespace"):
        raise MappingError(f"{where}: names belong to whitespace and fixed-width files (CSV files have a header)")
    if source_format == "whitespace" and not names and body.get("header") is False:
        raise MappingError(f"{where}: a whitespace file without a header needs names = [...]")

    columns = {str(k).lower(): _expression(v, f"{where} columns.{k}") for k, v in dict(body.get("columns", {})).items()}
    constants = {str(k).lower(): str(v) for k, v in dict(body.get("constants", {})).items()}
    for column in list(columns) + list(constants):
        _check_column_name(name, spec, column, where)
    both = set(columns) & set(constants)
    if both:
        raise MappingError(f"{where}: {', '.join(sorted(both))} is both mapped and a constant")
    missing = [c for c in spec.required_columns if c not in columns and c not in constants]
    if missing:
        raise MappingError(f"{where}: required column(s) {', '.join(missing)} of {name} are neither mapped "
                           "nor constants")
    for column, expr in columns.items():
        if expr.kind == "generate" and (column not in GENERATED_KEYS or column not in spec.key):
            raise MappingError(f"{where}: generate makes a missing key ({', '.join(sorted(GENERATED_KEYS))}), "
                               f"not {column}")
        if expr.kind == "generate" and group_by:
            raise MappingError(f"{where}: with group_lines_by the order key is the group's key: map order_id to "
                               "the group column")
    kinds = {c.name: c.kind for c in spec.columns} | {"loaded_at": "ts"}
    for column, expr in columns.items():
        if expr.kind == "multiply" and kinds.get(column) != "num":
            raise MappingError(f"{where}: multiply makes a number; {column} is not a number column")
        if expr.negative_when and kinds.get(column) != "num":
            raise MappingError(f"{where}: negative_when makes a number negative; {column} is not a number column")
    date_formats = {str(k).lower(): str(v) for k, v in dict(body.get("date_formats", {})).items()}
    if "date_format" in body:
        for column in columns:
            if kinds.get(column) in ("ts", "date"):
                date_formats.setdefault(column, str(body["date_format"]))
    for column, fmt in date_formats.items():
        if column not in columns:
            raise MappingError(f"{where}: date_formats names '{column}', which is not a mapped column")
        if kinds.get(column) not in ("ts", "date"):
            raise MappingError(f"{where}: date_formats names '{column}', which is not a date or time column")
        if "%" not in fmt:
            raise MappingError(f"{where}: date format '{fmt}' of {column} has no % directive "
                               "(strptime codes: %Y%m%d, %d.%m.%Y, %m/%d/%Y %H:%M...)")
    decimal = str(body.get("decimal", "."))
    if decimal not in (".", ","):
        raise MappingError(f"{where}: decimal must be '.' or ',', got '{decimal}'")
    timezone = body.get("timezone")
    if timezone is not None:
        try:
            zoneinfo.ZoneInfo(str(timezone))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise MappingError(f"{where}: unknown time zone '{timezone}' (IANA names: Europe/Berlin, UTC...)") from exc
    currency = body.get("currency")
    if currency is not None and not re.fullmatch(r"[A-Z]{3}", str(currency)):
        raise MappingError(f"{where}: currency must be an ISO 4217 code such as EUR or USD, got '{currency}'")
    return SourceMapping(
        table=name, source_format=source_format, files=files, query=query, base=base, columns=columns,
        constants=constants, date_formats=date_formats, decimal=decimal,
        delimiter=body.get("delimiter"), encoding=str(body.get("encoding", "utf-8")),
        header=bool(body.get("header", True)), names=names, widths=widths,
        timezone=None if timezone is None else str(timezone),
        currency=None if currency is None else str(currency),
    )
