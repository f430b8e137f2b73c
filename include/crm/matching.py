"""Which CRM record carries which customer's labels: the target's own records, matched by their native id.

A CRM holds its own records (HubSpot contacts, Salesforce Contacts). The
warehouse mints ``customer_key``, which no CRM record carries, so pushing by it
would create one blank record per customer beside the real one (issue #29).
Instead a target is configured with where its ids come from, the way
reverse-ETL tools match rows to existing destination records:

- ``source_system``: the CRM's export is loaded as identity records of that
  source system (e.g. HubSpot contacts as ``source_system = 'hubspot'`` with
  ``source_id`` = the contact id). Identity resolution links them to the
  business's other records, and every record of that system in
  ``identity_map`` is a CRM record of its customer: each gets that customer's
  labels, by its native id.
- ``key = 'email_sha256'``: the CRM already has a unique property holding the
  SHA-256 of the lower-cased, trimmed email. Every distinct email of a
  customer's identity records is one CRM record (an email shared by two
  customers is ambiguous and skipped).
- neither (the outbox and the webhook by default): the record is the customer
  itself (``record_id = customer_key``); the receiver matches it.

Default: update only. A customer with no record in the CRM is counted and
reported, never created. ``create_missing`` (HubSpot only, opt-in) creates one
record per such customer through ``batch/upsert`` keyed by a unique property
holding the customer key (see docs/crm.md for exactly what it sends).

Records whose customer disappeared. A record keyed by a customer key that no
longer exists (merged away, or no longer published) gets, per ``on_merge``,
the survivor's labels (``survivor``, default) or a clear (``clear``). The
survivor is read from ``identity_changes`` when the identity stage wrote it,
else derived from ``identity_map``: the labelled customer that now holds most
of the records the vanished key held on the last date it existed. A native CRM
record always follows its current customer in ``identity_map``; one that left
the identity map (or whose customer is no longer labelled) is cleared.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from include.runtime.errors import PipelineFinding


class CrmMatchingError(PipelineFinding, ValueError):
    """A target's matching settings are invalid, or no CRM record can be matched (a retry cannot help)."""


#: The checksum of a cleared record: every pushed field empty (see ``contract.CHECKSUM_SQL``).
CLEAR_CHECKSUM = hashlib.md5(("\x1f" * 5).encode()).hexdigest()

#: Matching keys that derive a record id from the customer's identity records.
MATCH_KEYS = ("email_sha256",)
ON_MERGE = ("survivor", "clear")
#: Where each target's record ids come from unless configured (HubSpot and Salesforce: their own ids).
DEFAULT_SOURCE_SYSTEM = {"hubspot": "hubspot", "salesforce": "salesforce"}
_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")

#: SHA-256 as lower-case hex text, per SQLAlchemy dialect.
SHA256_SQL = {
    "duckdb": "sha256({})",
    "snowflake": "SHA2({}, 256)",
    "postgresql": "encode(sha256(convert_to({}, 'UTF8')), 'hex')",
}


@dataclass(frozen=True)
class Matching:
    """How a target's records are found for its customers.

    Parameters
    ----------
    source_system
        ``identity_map.source_system`` whose ``source_id`` values are the
        target's native record ids (``hubspot``, ``salesforce``, ...).
    key
        ``email_sha256``: record ids are SHA-256 of each normalised email.
    create_missing
        Create a record for each labelled customer without one (HubSpot only).
    create_id_property
        Unique property that holds the customer key of a created record.
    on_merge
        ``survivor`` or ``clear``: what a record keyed by a vanished customer key gets.
    """

    source_system: str | None = None
    key: str | None = None
    create_missing: bool = False
    create_id_property: str = "customer_key"
    on_merge: str = "survivor"

    def __post_init__(self) -> None:
        if self.source_system is not None and self.key is not None:
            raise CrmMatchingError("set match_source_system or match_key, not both")
        if self.source_system is not None and not _NAME.match(self.source_system):
            raise CrmMatchingError(f"match_source_system={self.source_system!r}: letters, digits, '_', '.', '-' only")
        if self.key is not None and self.key not in MATCH_KEYS:
            raise CrmMatchingError(f"match_key={self.key!r}: must be one of {', '.join(MATCH_KEYS)}")
        if self.on_merge not in ON_MERGE:
            raise CrmMatchingError(f"on_merge={self.on_merge!r}: must be one of {', '.join(ON_MERGE)}")
        if not _NAME.match(self.create_id_property):
            raise CrmMatchingError(f"create_id_property={self.create_id_property!r} is not a property name")
        if self.create_missing and self.by == "customer_key":
            raise CrmMatchingError("create_missing needs match_source_system or match_key: a target keyed by "
                                   "the customer key already has one record per customer")

    @classmethod
    def for_target(cls, target: str, config: Mapping[str, Any] | None = None) -> Matching:
        """The target's matching: its defaults, overridden by ``config``.

        ``config`` keys: ``match_source_system``, ``match_key``,
        ``create_missing``, ``create_id_property``, ``on_merge``
        (Airflow connection extras or operator arguments); others are ignored.
        """
        config = dict(config or {})
        system = config.get("match_source_system")
        key = config.get("match_key")
        if system is None and key is None:
            system = DEFAULT_SOURCE_SYSTEM.get(target)
        create = config.get("create_missing", False)
        if isinstance(create, str):
            create = create.strip().lower() in ("true", "1", "yes")
        return cls(source_system=system or None, key=key or None, create_missing=bool(create),
                   create_id_property=str(config.get("create_id_property") or "customer_key"),
                   on_merge=str(config.get("on_merge") or "survivor"))

    @property
    def by(self) -> str:
        """What a native record id is: ``customer_key``, ``source:<system>`` or ``email_sha256``."""
        if self.source_system is not None:
            return f"source:{self.source_system}"
        return self.key or "customer_key"

    @property
    def created_by(self) -> str:
        """``matched_by`` of the records created for customers without one."""
        return f"created:{self.create_id_property}"

    @property
    def kinds(self) -> tuple[str, ...]:
        """Every ``matched_by`` this matching produces."""
        return (self.by, self.created_by) if self.create_missing else (self.by,)

    @property
    def customer_keyed(self) -> bool:
        return self.by == "customer_key"

    def describe(self) -> str:
        if self.customer_keyed:
            return "one record per customer, keyed by customer_key"
        what = (f"identity records of source_system '{self.source_system}'" if self.source_system
                else "SHA-256 of each email of the customer's identity records")
        return what + (f"; customers without one get a record created by {self.create_id_property}"
                       if self.create_missing else "; customers without one are counted, never created")

    def replace(self, **changes: Any) -> Matching:
        return dataclasses.replace(self, **changes)


def records_sql(matching: Matching, dialect: str) -> str:
    """``(customer_key, record_id, matched_by)`` of every target record on ``:label_date``.

    Native records come from ``identity_map`` of the label date; in create
    mode, every labelled customer without one gets a record keyed by its
    customer key. A record id that maps to two customers is left out (ambiguous).
    """
    if matching.customer_keyed:
        return ("SELECT customer_key, customer_key AS record_id, 'customer_key' AS matched_by "
                "FROM customer_segments WHERE as_of_date = :label_date")
    if matching.source_system is not None:
        native = ("SELECT m.customer_key, m.source_id AS record_id FROM identity_map m "
                  f"WHERE m.as_of_date = :label_date AND m.source_system = '{matching.source_system}'")
    else:
        sha = SHA256_SQL.get(dialect)
        if sha is None:
            raise CrmMatchingError(f"match_key=email_sha256: no SHA-256 expression for the {dialect} dialect; "
                                   f"supported: {', '.join(SHA256_SQL)}")
        native = (f"SELECT m.customer_key, {sha.format('LOWER(TRIM(r.email))')} AS record_id "
                  "FROM identity_map m JOIN stg_identity_records r ON r.as_of_date = m.as_of_date "
                  "AND r.source_system = m.source_system AND r.source_id = m.source_id "
                  "WHERE m.as_of_date = :label_date AND r.email IS NOT NULL AND TRIM(r.email) <> ''")
    unique = (f"SELECT MIN(customer_key) AS customer_key, record_id, '{matching.by}' AS matched_by "
              f"FROM ({native}) n GROUP BY record_id HAVING MIN(customer_key) = MAX(customer_key)")
    if not matching.create_missing:
        return unique
    return (f"SELECT * FROM ({unique}) u UNION ALL "
            f"SELECT s.customer_key, s.customer_key AS record_id, '{matching.created_by}' AS matched_by "
            "FROM customer_segments s WHERE s.as_of_date = :label_date AND NOT EXISTS "
            f"(SELECT 1 FROM ({unique}) x WHERE x.customer_key = s.customer_key)")


def ambiguous_sql(matching: Matching, dialect: str) -> str | None:
    """How many native record ids of ``:label_date`` map to more than one customer (``None``: cannot happen)."""
    if matching.customer_keyed or matching.source_system is not None:
        return None  # identity_map has one customer per (source_system, source_id)
    sha = SHA256_SQL[dialect]
    return ("SELECT COUNT(*) FROM (SELECT record_id FROM ("
            f"SELECT m.customer_key, {sha.format('LOWER(TRIM(r.email))')} AS record_id "
            "FROM identity_map m JOIN stg_identity_records r ON r.as_of_date = m.as_of_date "
            "AND r.source_system = m.source_system AND r.source_id = m.source_id "
            "WHERE m.as_of_date = :label_date AND r.email IS NOT NULL AND TRIM(r.email) <> '') n "
            "GROUP BY record_id HAVING MIN(customer_key) <> MAX(customer_key)) a")
