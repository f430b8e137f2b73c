"""The mapping file: which source feeds which ``raw_*`` table, column by column.

A mapping is a TOML file (see ``examples/shop/mapping.toml``)::

    [defaults]                  # optional, inherited by every table
    delimiter = ";"
    decimal = ","
    timezone = "Europe/Berlin"
    currency = "EUR"

    [tables.raw_orders]
    file = "orders/*.csv"       # relative to the mapping file; or query / table
    date_format = "%Y%m%d"
    columns = { order_id = "BestellNr", source_id = "KundenNr", order_ts = "Datum", amount = "Betrag" }
    constants = { source_system = "webshop" }

Keys of ``columns`` are contract columns (plus ``loaded_at`` and, for
``raw_identity_records``, any ``id_*`` extra identifier); values are source
column names. Parsing the file checks everything that can be checked without
reading the data: table and column names, required columns, options.
"""

from __future__ import annotations

import re
import tomllib
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path

from include.extract.validate import EXTRA_ID_PREFIX, TABLE_SPECS, TableSpec
from include.runtime.errors import BadDataError

FORMATS = ("csv", "parquet", "warehouse")
_SPECS = {spec.raw: spec for spec in TABLE_SPECS}
_TABLE_KEYS = {
    "file", "format", "query", "table", "columns", "constants", "date_format", "date_formats",
    "decimal", "delimiter", "timezone", "currency", "encoding", "header",
}
_DEFAULT_KEYS = {"date_format", "decimal", "delimiter", "timezone", "currency", "encoding", "header"}
_EXTRA_ID = re.compile(r"^id_[a-z0-9_]+$")


class MappingError(BadDataError):
    """The mapping file does not fit the contract or the source it names."""


@dataclass(frozen=True)
class TableMapping:
    """How one ``raw_*`` table is built from one source.

    Attributes
    ----------
    table
        The contract table (``raw_orders``...).
    source_format
        ``csv``, ``parquet`` or ``warehouse`` (an existing table, view or query).
    files
        Source files (``csv``/``parquet``), resolved and sorted.
    query
        SQL whose result is the source (``warehouse``).
    columns
        Contract column -> source column.
    constants
        Contract column -> constant text (``source_system = "webshop"``).
    date_formats
        Contract column -> strptime format of its source text; columns not
        listed are left for extract, which reads ISO 8601 and YYYYMMDD.
    decimal
        Decimal separator of numbers in text (``.`` or ``,``).
    delimiter, encoding, header
        CSV options.
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
    columns: dict[str, str] = field(default_factory=dict)
    constants: dict[str, str] = field(default_factory=dict)
    date_formats: dict[str, str] = field(default_factory=dict)
    decimal: str = "."
    delimiter: str | None = None
    encoding: str = "utf-8"
    header: bool = True
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


@dataclass(frozen=True)
class Mapping:
    path: Path
    tables: tuple[TableMapping, ...]


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
    parsed = tuple(_table_mapping(name, {**defaults, **body}, path.parent, path.name)
                   for name, body in tables.items())
    return Mapping(path, parsed)


def _table_mapping(name: str, body: dict, base: Path, file_name: str) -> TableMapping:
    where = f"{file_name} [tables.{name}]"
    if name not in _SPECS:
        raise MappingError(f"{where}: '{name}' is not a contract table (known: {', '.join(_SPECS)})")
    spec = _SPECS[name]
    unknown = set(body) - _TABLE_KEYS
    if unknown:
        raise MappingError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(_TABLE_KEYS))})")
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

    columns = {str(k).lower(): str(v) for k, v in dict(body.get("columns", {})).items()}
    constants = {str(k).lower(): str(v) for k, v in dict(body.get("constants", {})).items()}
    allowed = {c.name for c in spec.columns} | {"loaded_at"}
    for column in list(columns) + list(constants):
        extra_id = name == "raw_identity_records" and column.startswith(EXTRA_ID_PREFIX)
        if column not in allowed and not (extra_id and _EXTRA_ID.match(column)):
            hint = (" (extra identifiers are id_ followed by lower-case letters, digits, _)"
                    if column.startswith(EXTRA_ID_PREFIX) else "")
            raise MappingError(
                f"{where}: '{column}' is not a column of {name}{hint}; known: {', '.join(sorted(allowed))}"
                + (", id_*" if name == "raw_identity_records" else "")
            )
    both = set(columns) & set(constants)
    if both:
        raise MappingError(f"{where}: {', '.join(sorted(both))} is both mapped and a constant")
    missing = [c for c in spec.required_columns if c not in columns and c not in constants]
    if missing:
        raise MappingError(f"{where}: required column(s) {', '.join(missing)} of {name} are neither mapped "
                           "nor constants")

    kinds = {c.name: c.kind for c in spec.columns} | {"loaded_at": "ts"}
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
    return TableMapping(
        table=name, source_format=source_format, files=files, query=query, columns=columns,
        constants=constants, date_formats=date_formats, decimal=decimal,
        delimiter=body.get("delimiter"), encoding=str(body.get("encoding", "utf-8")),
        header=bool(body.get("header", True)), timezone=None if timezone is None else str(timezone),
        currency=None if currency is None else str(currency),
    )
