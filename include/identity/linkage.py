"""Probabilistic record linkage (Fellegi–Sunter) of identity records with Splink.

One person seen as a web account, an app user and a call-centre caller is
linked by a Fellegi–Sunter model (Fellegi & Sunter 1969, "A theory for record
linkage", JASA 64(328)) as implemented by Splink (Linacre et al. 2022).

What the model compares depends on the data: a column takes part when it is
*present*, i.e. at least :data:`PRESENT_MIN_SHARE` of the records carry a value
and it has at least two distinct values (:func:`present_columns`). Person-only
files (names, address, date of birth, a national id), contact-only files
(email, phone, device) and the demo's rich records all get a model from the
same rules. Extra identifiers (``id_*`` columns: national id, loyalty card,
CRM id) come from the staging table ``stg_identity_identifiers``.

The model is trained without labels:

1. λ, the prior that two random records match, from deterministic rules on the
   strong identifiers present (email, phone, device id, every ``id_*``), or on
   name + date of birth when there are none. The rules' recall is estimated
   from the data (:func:`rules_recall`: how often both records carry the
   rule's columns, and, after EM, how often a matching pair agrees on them), so
   an id on 70% of records is not taken for one on every record;
2. u probabilities by random sampling of record pairs (fixed seed);
3. m probabilities by expectation maximisation over blocking rules chosen from
   :data:`EM_SESSION_CANDIDATES` in order: at least three sessions, and more
   until every comparison is estimated in at least one session (a session
   cannot estimate the comparisons on its own blocking columns). A session
   whose block holds no pairs is skipped and the next candidate tried.

Comparisons and why they look the way they do (measured on generated data;
"person files" are :mod:`include.demo.person_files`, FEBRL-shaped registers):

- names: Jaro–Winkler levels with term-frequency adjustment (common names
  weigh less), plus a level for first and last name entered the wrong way
  round when both are present, by Jaro–Winkler so a swapped name with a typo
  still counts (without the level, person-only recall was 0.94);
- ``id_*``: exact, one character different, two characters swapped (a
  mistyped national id or card number; 9 of the 35 pairs a public benchmark
  missed differed by two swapped digits, two edits for Levenshtein);
- email, phone and device id: exact match only; a similarity level
  on email re-counts the name evidence for namesakes (``john.smith@`` vs
  ``john.smith2@``) and cut clustered F1 to about 0.91 at 1.4M records; phone
  keeps its term-frequency adjustment when an address is compared (households
  share landline and address: rich precision fell from 0.997 to 0.992 without
  it); without an address it is left out, as it only counted a person's own
  repeated number against them (contact-only F1 0.88 with it, 0.94 without);
- address: one comparison of postcode *and* street address, because household
  members share both and treating them as independent evidence over-merged
  (precision 0.56 with two separate exact comparisons); graded: equal, similar
  (same house numbers, and Jaro–Winkler or shared words: typos, abbreviations,
  a missing unit, another word order) with and without an equal postcode, the
  same street in the postcode but for its numbers (a mistyped house number, or
  the neighbours), the postcode alone (term-frequency adjusted), the postcode one
  character off or two swapped (a mistyped postcode: 30 of the 126 true pairs
  FEBRL4 left apart without the id), and the region (when present) last: a person
  who moved usually stays in the region (see :func:`_place_comparison`);
- date of birth: exact, one edit apart, day and month swapped, two characters
  swapped (a transposition, tested as two differing positions holding the same
  characters; "any two edits" also joined unrelated dates of one month, and
  Damerau–Levenshtein is 9x slower in DuckDB), then the same year of birth (day
  and month re-keyed beyond that: weaker evidence, but not a stranger's date).

Prediction blocking: the fixed rules of :data:`PREDICTION_RULE_CANDIDATES`
plus each of :data:`OPTIONAL_PREDICTION_RULES` the data keeps within
:data:`OPTIONAL_RULE_PAIRS_PER_RECORD` pairs per record (counted from value
frequencies before training): on person files the fixed rules reached 96% of
the true pairs, with the broader ones 99.5%; on the demo's 1.4M rich records
none of the broad ones is affordable and none is used. The rules chosen are
saved in the model, so a reused model blocks as it did when trained.

EM sessions sample at most :data:`EM_MAX_PAIRS` blocked pairs, so the broad
last-resort rules used for sparse column sets stay affordable.

Running on Spark when the data outgrows one machine: blocking rules and the
library levels render to each SQL dialect, but the custom levels and the
derived address and postcode columns (:data:`DERIVED_COLUMNS`,
:data:`POSTCODE_DERIVED`) are DuckDB SQL
(``hamming``, ``jaro_winkler_similarity``, ``contains``, ``string_split``,
``list_sort``, ``regexp_extract_all``); on ``splink.SparkAPI`` they need
Spark's equivalents (``levenshtein``/a UDF, Splink's registered
``jaro_winkler`` UDF, ``instr``, ``split``, ``array_sort``,
``regexp_extract_all``) before the same :func:`build_settings` and model JSON run there.

Size: the column-driven Splink design (which comparisons, blocking rules, deterministic
rules and EM sessions each column set gets) must stay in one place to stay consistent.
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from include.identity.normalise import date_text_for_linkage, normalise_date, normalise_email, normalise_phone

log = logging.getLogger(__name__)

#: Linkage columns every run derives from ``stg_identity_records`` (after normalisation).
BASE_COLUMNS = ("first_name", "last_name", "email", "phone", "postcode", "address", "region", "dob", "device_id")
#: Columns of the linkage input before any ``id_*`` column (see :func:`linkage_input`).
LINKAGE_COLUMNS = ("unique_id", *BASE_COLUMNS)
#: Columns that locate a record without identifying it: compared only as the coarsest level of
#: the address comparison, never counted as an identifier (a record with only a region has none).
CONTEXT_COLUMNS = ("region",)
IDENTIFYING_COLUMNS = tuple(c for c in BASE_COLUMNS if c not in CONTEXT_COLUMNS)
#: Prefix of the extra identifier columns pivoted from ``stg_identity_identifiers``.
ID_PREFIX = "id_"
#: Contact identifiers that, equal on two records, almost always mean one person.
STRONG_CONTACT_COLUMNS = ("email", "phone", "device_id")
#: Share of records that must carry a column for it to take part in the model.
PRESENT_MIN_SHARE = 0.01

#: Prediction blocking rules, in order; a rule is used when all its columns are present.
#: Each is selective at 1.4M records; a rule on first and last name alone produced
#: 78M pairs from a realistic name distribution. ``first_name[:1]`` is a prefix;
#: ``first_name~last_name`` is the left record's first name equal to the right one's
#: last name: names entered the wrong way round, which no rule on equal names reaches
#: once the person has also moved or left the postcode out (both orders are listed,
#: as a pair is blocked in one orientation only).
PREDICTION_RULE_CANDIDATES: tuple[tuple[str, ...], ...] = (
    ("email",), ("phone",), ("device_id",), ("{id}",),
    ("postcode", "first_name[:1]"), ("dob", "last_name[:2]"), ("last_name", "address"),
    ("postcode", "dob"), ("postcode", "address"), ("dob", "first_name[:2]"),
    ("dob", "first_name~last_name"), ("dob", "last_name~first_name"),
)
#: Broader prediction rules, each used only when the data keeps it affordable: at most
#: :data:`OPTIONAL_RULE_PAIRS_PER_RECORD` pairs per record (counted before training, from the
#: value frequencies). On person-only records the fixed rules above reached 96% of the true
#: pairs (a person who moved and left the date of birth out shares no postcode, address or
#: date); these bring it to 99.5% (postcode with the last name's initial, or with one name
#: keyed into the other's field: first names missing, or names swapped with a typo in one,
#: 10 of the 24 pairs of 5,000 still unblocked). On the demo's 1.4M rich records (80 first names, 100 last
#: names, 15 streets) each would produce 10^8 pairs and is left out.
OPTIONAL_PREDICTION_RULES: tuple[tuple[str, ...], ...] = (
    ("first_name~last_name", "last_name~first_name"), ("last_name", "region"), ("last_name[:3]", "first_name[:3]"), ("address",), ("last_name", "first_name[:1]"),
    ("first_name", "last_name[:1]"), ("dob",), ("postcode",), ("postcode", "last_name[:1]"),
    ("postcode", "first_name~last_name"), ("postcode", "last_name~first_name"),
)
#: Largest pair count per record an optional prediction rule may add.
OPTIONAL_RULE_PAIRS_PER_RECORD = 10.0
#: EM training blocking rules, in order of preference (see the module docstring).
EM_SESSION_CANDIDATES: tuple[tuple[str, ...], ...] = (
    ("email",), ("phone",), ("{id}",), ("postcode", "dob"), ("first_name", "last_name", "dob"),
    ("first_name", "last_name", "postcode"), ("device_id",), ("last_name", "dob"),
    # Last resorts for sparse column sets (e.g. names and postcode only); EM samples
    # at most EM_MAX_PAIRS pairs of a block, so a broad rule stays affordable.
    ("dob",), ("postcode",), ("last_name",), ("first_name",), ("address",),
)
#: Blocked pairs one EM session learns from at most (Splink samples records above it).
EM_MAX_PAIRS = 5e6


def _splink_quiet() -> None:
    # Splink logs every EM iteration at INFO; keep the task log readable.
    for name in ("splink", "splink.internals"):
        logging.getLogger(name).setLevel(logging.WARNING)


def id_column_name(id_type: str) -> str:
    """``id_<type>`` linkage column of an identifier type (lower case, non-alphanumerics as ``_``)."""
    clean = re.sub(r"[^a-z0-9]+", "_", str(id_type).strip().lower()).strip("_")
    if not clean:
        raise ValueError(f"identifier type {id_type!r} has no letters or digits")
    return clean if clean.startswith(ID_PREFIX) else ID_PREFIX + clean


def identifier_columns(columns: Any) -> list[str]:
    """The ``id_*`` columns among ``columns``, sorted."""
    return sorted(c for c in columns if str(c).startswith(ID_PREFIX))


def present_columns(frame: pd.DataFrame, min_share: float = PRESENT_MIN_SHARE) -> tuple[str, ...]:
    """Linkage columns of ``frame`` that carry data this run, in model order.

    A column is present when at least ``min_share`` of the records have a value
    and it holds at least two distinct values (a constant cannot separate
    persons). The region (:data:`CONTEXT_COLUMNS`) counts only beside a
    postcode or street address.
    """
    out = []
    for col in (*BASE_COLUMNS, *identifier_columns(frame.columns)):
        if col not in frame.columns or not len(frame):
            continue
        values = frame[col].dropna()
        if len(values) >= max(2, min_share * len(frame)) and values.nunique() >= 2:
            out.append(col)
    if not {"postcode", "address"} & set(out):
        # A region refines an address comparison; alone it is too coarse to weigh as evidence.
        out = [c for c in out if c not in CONTEXT_COLUMNS]
    return tuple(out)


def _rule_columns(rule: tuple[str, ...]) -> set[str]:
    return {col for part in rule for col in part.split("[")[0].split("~")}


def _expand(candidates: tuple[tuple[str, ...], ...], columns: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Candidate rules whose columns are all present, with ``{id}`` expanded to every ``id_*`` column."""
    out = []
    for rule in candidates:
        expanded = [(c,) for c in identifier_columns(columns)] if rule == ("{id}",) else [rule]
        out += [r for r in expanded if _rule_columns(r) <= set(columns)]
    return out


def _block_on(rule: tuple[str, ...]):
    from splink import block_on
    from splink.blocking_rule_library import CustomRule

    parts = _rule_sql_parts(rule)
    if not any("~" in part for part in rule):
        return block_on(*parts)
    # Across two columns: block_on compares a column with itself, so spell the equi-join out.
    sides = [part.split("~") if "~" in part else [part, part] for part in rule]
    return CustomRule(" AND ".join(f'l."{a}" = r."{b}"' for a, b in sides))


@dataclass(frozen=True)
class ComparisonSpec:
    """One comparison of the model: its output name and the linkage columns it reads."""

    name: str
    columns: tuple[str, ...]


def comparison_specs(columns: tuple[str, ...]) -> list[ComparisonSpec]:
    """The comparisons a model over ``columns`` holds (see the module docstring)."""
    have = set(columns)
    specs = [ComparisonSpec(c, (c,)) for c in ("first_name", "last_name", "email", "phone") if c in have]
    place = tuple(c for c in ("postcode", "address", "region") if c in have)
    if {"postcode", "address"} & have:
        specs.append(ComparisonSpec("address" if "address" in have else "postcode", place))
    specs += [ComparisonSpec(c, (c,)) for c in ("dob", "device_id", *identifier_columns(columns)) if c in have]
    return specs


def _comparison(spec: ComparisonSpec, columns: tuple[str, ...]):
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    name = spec.name
    if name in ("first_name", "last_name"):
        levels = [
            cll.NullLevel(name),
            cll.ExactMatchLevel(name).configure(tf_adjustment_column=name),
            cll.JaroWinklerLevel(name, 0.92),
            cll.JaroWinklerLevel(name, 0.8),
        ]
        other = "last_name" if name == "first_name" else "first_name"
        if other in columns:
            # First and last name entered the wrong way round: 1-2% of hand-keyed records.
            levels.append(cll.CustomLevel(f'jaro_winkler_similarity("{name}_l", "{other}_r") >= 0.92',
                                          label_for_charts=f"{name} similar to other {other}"))
        return cl.CustomComparison(output_column_name=name, comparison_levels=[*levels, cll.ElseLevel()],
                                   comparison_description=f"{name}: exact, Jaro-Winkler, swapped with {other}")
    if name == "phone":
        # Term frequencies guard against households: members share a landline *and* the
        # address, whose comparison would otherwise join them. Without an address the
        # first name already tells them apart, and the adjustment only counts a person's
        # own repeated records against them (contact-only F1 0.88 with it, 0.94 without).
        return cl.ExactMatch("phone").configure(
            term_frequency_adjustments=bool({"postcode", "address"} & set(columns)))
    if name in ("address", "postcode"):
        return _place_comparison(spec)
    if name == "dob":
        # ISO text: day and month swapped (a US/UK mix-up) and two digits swapped are common entry errors.
        swapped = ('substr("dob_l", 1, 4) = substr("dob_r", 1, 4) AND substr("dob_l", 6, 2) = substr("dob_r", 9, 2) '
                   'AND substr("dob_l", 9, 2) = substr("dob_r", 6, 2)')
        digits_swapped = _transposed_sql("dob")
        return cl.CustomComparison(
            output_column_name="dob",
            comparison_description="date of birth: exact, one edit, day and month swapped, two digits swapped, "
                                   "same year",
            comparison_levels=[
                cll.NullLevel("dob"), cll.ExactMatchLevel("dob"), _one_edit_level("dob"),
                cll.CustomLevel(swapped, label_for_charts="day and month swapped"),
                cll.CustomLevel(digits_swapped, label_for_charts="two digits swapped"),
                # Day or month re-keyed beyond one edit (two digits of one date mistyped): the year
                # still says something. Without the level such a pair weighed as two strangers'
                # dates (-8 bits) though name and address were equal.
                cll.CustomLevel('substr("dob_l", 1, 4) = substr("dob_r", 1, 4)', label_for_charts="same year"),
                cll.ElseLevel(),
            ],
        )
    if name.startswith(ID_PREFIX):
        # Identifiers are keyed by hand too: one mistyped character, or two swapped, is no
        # contradiction. Without the transposition level, 9 of 35 pairs a public person-only
        # benchmark missed differed only by two swapped id digits (two edits for Levenshtein).
        return cl.CustomComparison(
            output_column_name=name,
            comparison_description=f"{name}: exact, one character different, two characters swapped",
            comparison_levels=[
                cll.NullLevel(name), cll.ExactMatchLevel(name), _one_edit_level(name),
                cll.CustomLevel(_transposed_sql(name), label_for_charts="two characters swapped"),
                cll.ElseLevel(),
            ],
        )
    return cl.ExactMatch(name)


def _one_edit_level(column: str):
    """Levenshtein distance at most 1, as Splink's ``LevenshteinLevel(column, 1)``, computed cheaply.

    Between texts of equal length one edit is a substitution, so the Hamming distance
    decides; Levenshtein runs only across lengths that differ. Dates of birth (ISO
    text) always have equal lengths: on 1e7 random pairs, the level every pair of u
    estimation reaches cost 2.9 CPU-s as Levenshtein and 0.4 as Hamming, for the same pairs.
    """
    import splink.comparison_level_library as cll

    left, right = f'"{column}_l"', f'"{column}_r"'
    return cll.CustomLevel(f"CASE WHEN length({left}) = length({right}) THEN hamming({left}, {right}) <= 1 "
                           f"ELSE levenshtein({left}, {right}) <= 1 END",
                           label_for_charts=f"Levenshtein distance of {column} <= 1")


def _transposed_sql(column: str) -> str:
    """SQL: exactly two characters differ and they are each other's (a transposition).

    Tested as two differing positions holding the same characters: Damerau-Levenshtein
    is 9x slower in DuckDB, and "any two edits" also joins unrelated values (another
    day of the same month: u 0.017 for dates of birth, 80x the transpositions' rate).
    """
    left, right = f'"{column}_l"', f'"{column}_r"'
    # Nested CASE: the list sort runs only for the few pairs two characters apart.
    return (f"CASE WHEN length({left}) = length({right}) THEN (CASE WHEN hamming({left}, {right}) = 2 THEN "
            f"list_sort(string_split({left}, '')) = list_sort(string_split({right}, '')) ELSE FALSE END) "
            "ELSE FALSE END")


#: Columns derived from the street address in the linkage session (see :data:`DERIVED_COLUMNS`).
ADDRESS_WORDS, ADDRESS_NUMBERS = "address_words", "address_numbers"
#: SQL of the columns each linkage session derives from the input (DuckDB; Spark has the same
#: string and list functions under other names). Words: the address's distinct words, sorted, as
#: one text. Numbers: its distinct runs of digits (house, flat, unit) sorted, padded with spaces
#: (`` 12 4 ``; a single space when there are none), so that "one holds the other's numbers" is a
#: substring test. Both are text: list columns carried into every pair made u estimation (2e7
#: random pairs, every level tested on each) cost 2.3x the old model's; the word lists are split
#: only inside the test, for the pairs whose numbers agree.
DERIVED_COLUMNS = {
    ADDRESS_WORDS: "array_to_string(list_sort(list_distinct(string_split(address, ' '))), ' ')",
    ADDRESS_NUMBERS: ("CASE WHEN len(regexp_extract_all(address, '[0-9]+')) = 0 THEN ' ' ELSE ' ' || "
                      "array_to_string(list_sort(list_distinct(regexp_extract_all(address, '[0-9]+'))), ' ') "
                      "|| ' ' END"),
}
#: The postcode's characters sorted (``3175`` and ``3715`` both ``1357``), derived when a postcode is
#: present: two postcodes with two characters swapped differ in two positions and sort alike. Sorting
#: each record's postcode once costs little; splitting and sorting both sides of each of the 1e7
#: random pairs of u estimation cost 4.5 CPU-s (measured on 1e7 pairs of generated postcodes).
POSTCODE_CHARS = "postcode_chars"
POSTCODE_DERIVED = {POSTCODE_CHARS: "array_to_string(list_sort(string_split(postcode, '')), '')"}
#: Jaro-Winkler similarity of two street addresses (as written) called "similar".
ADDRESS_SIMILAR_JW = 0.92
#: Or the share of their distinct words they have in common (Jaccard) called "similar".
ADDRESS_SHARED_WORDS = 0.6


def _address_similar_sql(jaro_winkler: float = ADDRESS_SIMILAR_JW) -> str:
    """SQL: the street addresses carry the same numbers (or one carries none) and read alike.

    Numbers first: two flats of one house or neighbours on one street (``12 high st`` vs
    ``14 high st``) read alike to any string measure but are different addresses. "Read
    alike": a Jaro-Winkler similarity of the addresses as written (typos, an abbreviated
    street type) or enough shared words (parts missing or in another order: ``unit 4 12
    high st`` vs ``12 high st``).
    """
    nl, nr = f'"{ADDRESS_NUMBERS}_l"', f'"{ADDRESS_NUMBERS}_r"'
    wl, wr = (f"string_split(\"{ADDRESS_WORDS}_{side}\", ' ')" for side in "lr")
    same_numbers = f"(contains({nl}, {nr}) OR contains({nr}, {nl}))"
    shared = (f"len(list_intersect({wl}, {wr})) >= {ADDRESS_SHARED_WORDS} * "
              f"len(list_distinct(list_concat({wl}, {wr})))")
    # CASE, not AND: DuckDB evaluates both sides of an AND; a CASE branch only for the rows reaching it,
    # so the word lists are split only for the pairs whose numbers agree.
    return (f'CASE WHEN {same_numbers} THEN (jaro_winkler_similarity("address_l", "address_r") >= {jaro_winkler} '
            f"OR {shared}) ELSE FALSE END")


def _postcode_typo_sql() -> str:
    """SQL: the postcodes are one character apart (one substituted, added or dropped) or two swapped.

    Hamming distance for equal lengths (one edit between equal-length texts is a substitution;
    two differing positions whose characters sort alike, :data:`POSTCODE_CHARS`, are a swap),
    Levenshtein only across a length difference of one. Nested CASE, so the u sampling's random
    pairs (which reach this level when nothing above agrees) mostly stop at a length or Hamming
    test: 0.9 CPU-s per 1e7 pairs against 0.2 for equality alone (Damerau-Levenshtein: 10).
    """
    left, right = '"postcode_l"', '"postcode_r"'
    return (f"CASE WHEN length({left}) = length({right}) THEN (CASE hamming({left}, {right}) WHEN 1 THEN TRUE "
            f'WHEN 2 THEN "{POSTCODE_CHARS}_l" = "{POSTCODE_CHARS}_r" ELSE FALSE END) '
            f"WHEN abs(length({left}) - length({right})) = 1 THEN levenshtein({left}, {right}) = 1 ELSE FALSE END")


def _place_comparison(spec: ComparisonSpec):
    """One comparison of postcode, street address and region (those of them present), graded.

    Levels, first match wins: postcode and street address equal; street address
    equal; postcode equal and street address similar; street address similar;
    postcode equal and the street addresses alike (Jaro-Winkler) but for their
    numbers: a mistyped house number or the neighbours, which EM weighs apart
    from both (on person files without an id its m was 0.09 and it took pairs
    off the plain "postcode equal" level); postcode equal (term-frequency
    adjusted: a busy postcode says less); postcode one character off or two
    swapped, the street address not alike (a mistyped postcode beside a re-keyed
    street: of FEBRL4's 126 true pairs left apart without the id, 30 had such
    postcodes and fell to the region level, weighed as a move); region equal;
    anything else. "Similar" is :func:`_address_similar_sql`: addresses
    keyed by hand differ by typos, abbreviations (``street``/``st``), a missing
    unit or house number and word order, and an exact comparison called all of
    those disagreement (31 of the 35 true pairs a public person-only benchmark
    missed had unequal addresses). A level below "similar" (Jaro-Winkler 0.85)
    added 0.0004 F1 on person files without an id and was dropped: each level
    is tested on every random pair u estimation samples.

    Household members share postcode and street, so treating them as independent
    evidence over-merged (precision 0.56 with two separate exact comparisons). The
    region is the last level before "all other": a person who moved usually stays
    in the region, and a separate region comparison would count it again for every
    pair that shares an address.
    """
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    have = spec.columns
    street = [c for c in ("postcode", "address") if c in have]
    if not street:
        raise TrainingError("a place comparison needs a postcode or a street address")
    levels = [cll.And(*[cll.NullLevel(c) for c in street]) if len(street) == 2 else cll.NullLevel(street[0])]
    postcode = '"postcode_l" = "postcode_r"'
    if len(street) == 2:
        levels.append(cll.And(cll.ExactMatchLevel("postcode"), cll.ExactMatchLevel("address")))
    if "address" in have:
        # A missing or mistyped postcode must not hide an equal street address.
        levels.append(cll.ExactMatchLevel("address"))
        similar = _address_similar_sql()
        if "postcode" in have:
            levels.append(cll.CustomLevel(f"CASE WHEN {postcode} THEN {similar} ELSE FALSE END",
                                          label_for_charts="postcode equal, street address similar"))
        levels.append(cll.CustomLevel(similar, label_for_charts="street address similar"))
        if "postcode" in have:
            # A house number mistyped ("12 oak road" keyed "02 oak road"); also the neighbours,
            # so it has its own m and u. Only within a postcode: the similarity is computed for
            # the few pairs that share one, not for every random pair of u estimation.
            levels.append(cll.CustomLevel(
                f'CASE WHEN {postcode} THEN jaro_winkler_similarity("address_l", "address_r") >= '
                f"{ADDRESS_SIMILAR_JW} ELSE FALSE END",
                label_for_charts="postcode equal, street address similar but for its numbers"))
    if "postcode" in have:
        levels.append(cll.ExactMatchLevel("postcode").configure(tf_adjustment_column="postcode"))
        levels.append(cll.CustomLevel(_postcode_typo_sql(), label_for_charts="postcode one character off or two swapped"))
    if "region" in have:
        levels.append(cll.ExactMatchLevel("region"))
    return cl.CustomComparison(
        output_column_name=spec.name,
        comparison_description=" and ".join(have).replace("address", "street address") + ", graded",
        comparison_levels=[*levels, cll.ElseLevel()],
    )


def _rule_sql_parts(rule: tuple[str, ...]) -> list[str]:
    out = []
    for part in rule:
        m = re.fullmatch(r"(\w+)\[:(\d+)\]", part)
        out.append(f"substr({m.group(1)}, 1, {m.group(2)})" if m else part)
    return out


def _side_counts_sql(table: str, exprs: list[str], keys: str) -> str:
    cols = ", ".join(f"{e} AS k{i}" for i, e in enumerate(exprs))
    not_null = " AND ".join(f"{e} IS NOT NULL" for e in exprs)
    return f"SELECT {cols}, COUNT(*) AS n FROM {table} WHERE {not_null} GROUP BY {keys}"


def rule_pair_counts(con, table: str, rules: list[tuple[str, ...]]) -> dict[tuple[str, ...], int]:
    """Record pairs each equi-join blocking rule generates on ``table``, from its value frequencies (no join)."""
    out = {}
    for rule in rules:
        if any("~" in part for part in rule):
            # Across two columns (l.a = r.b): pairs of a left-side key with an equal right-side key.
            left = _rule_sql_parts(tuple(p.split("~")[0] for p in rule))
            right = _rule_sql_parts(tuple(p.split("~")[-1] for p in rule))
            keys = ", ".join(f"k{i}" for i in range(len(left)))
            a, b = (_side_counts_sql(table, exprs, keys) for exprs in (left, right))
            sql = f"SELECT COALESCE(SUM(a.n * b.n) / 2, 0) FROM ({a}) a JOIN ({b}) b USING ({keys})"
        else:
            parts = _rule_sql_parts(rule)
            not_null = " AND ".join(f"{p} IS NOT NULL" for p in parts)
            sql = (f"SELECT COALESCE(SUM(n * (n - 1) / 2), 0) FROM (SELECT COUNT(*) AS n FROM {table} "
                   f"WHERE {not_null} GROUP BY {', '.join(parts)})")
        out[rule] = int(con.execute(sql).fetchall()[0][0])
    return out


def affordable_rules(con, table: str, columns: tuple[str, ...], records: int) -> list[tuple[str, ...]]:
    """The :data:`OPTIONAL_PREDICTION_RULES` over ``columns`` within the pair budget on ``table``.

    A rule holding every condition of a fixed or already chosen rule (``postcode`` and
    the last name's initial after ``postcode`` alone) finds no pair that rule does not;
    it is left out, as Splink would still join on it (1.6M pairs at 1.4M rich records).
    """
    candidates = _expand(OPTIONAL_PREDICTION_RULES, columns)
    budget = OPTIONAL_RULE_PAIRS_PER_RECORD * max(records, 1)
    counts = rule_pair_counts(con, table, candidates)
    chosen: list[tuple[str, ...]] = []
    fixed = _expand(PREDICTION_RULE_CANDIDATES, columns)
    for rule in candidates:
        if counts[rule] <= budget and not any(set(c) <= set(rule) for c in (*fixed, *chosen)):
            chosen.append(rule)
    return chosen


def build_settings(columns: tuple[str, ...] = BASE_COLUMNS, extra_rules: list[tuple[str, ...]] = ()):
    """Splink settings (comparisons and prediction blocking rules) over ``columns``, untrained.

    They hold no randomness. ``columns`` are the present linkage columns
    (:func:`present_columns`); rules and comparisons on absent columns are left out.
    ``extra_rules`` are prediction rules added after the fixed ones (:func:`affordable_rules`).
    """
    from splink import SettingsCreator

    specs = comparison_specs(columns)
    if not specs:
        raise TrainingError("no linkage column carries data")
    rules = _expand(PREDICTION_RULE_CANDIDATES, columns) + [r for r in extra_rules if _rule_columns(r) <= set(columns)]
    if not rules:
        raise TrainingError(f"no blocking rule can be built from the columns present ({', '.join(columns)})")
    return SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="unique_id",
        comparisons=[_comparison(s, columns) for s in specs],
        blocking_rules_to_generate_predictions=[_block_on(r) for r in rules],
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=False,
    )


def model_columns(model: dict[str, Any]) -> tuple[str, ...]:
    """The linkage columns a saved Splink model compares, in model order.

    Read from the model's own comparison SQL, so a model logged before the
    column set was recorded still reports it.
    """
    found: set[str] = set()
    for comparison in model.get("comparisons", []):
        for level in comparison.get("comparison_levels", []):
            found.update(re.findall(r'"?([A-Za-z0-9_]+)_[lr]"?', level.get("sql_condition", "")))
            if level.get("tf_adjustment_column"):
                found.add(level["tf_adjustment_column"])
    order = [*BASE_COLUMNS, *identifier_columns(found)]
    return tuple(c for c in order if c in found)


def _clean_text(values: pd.Series) -> pd.Series:
    import pyarrow as pa
    import pyarrow.compute as pc

    # Arrow kernels: pandas' regex replace runs Python's re per value (half the cost of
    # normalising 1.4M records).
    arr = pa.array(values.astype("string").to_numpy(dtype=object, na_value=None), type=pa.large_string())
    arr = pc.replace_substring_regex(pc.utf8_lower(pc.utf8_trim_whitespace(arr)), pattern=r"\s+", replacement=" ")
    s = pd.Series(arr.to_pandas(types_mapper=pd.ArrowDtype), index=values.index).astype("string")
    # pandas 3 keeps '' as a string and Splink would count '' = '' as agreement.
    return s.mask(s == "")


def normalise_identifier(values: pd.Series) -> pd.Series:
    """Identifier text for exact matching: upper case, without spaces, dots, dashes and slashes."""
    s = values.astype("string").str.upper().str.replace(r"[\s.\-/]+", "", regex=True)
    return s.mask(s == "")


def pivot_identifiers(identifiers: pd.DataFrame) -> pd.DataFrame:
    """Wide ``id_<type>`` columns, indexed by ``source_system:source_id``, from the long identifier table.

    ``identifiers`` has ``source_system``, ``source_id``, ``id_type``,
    ``id_value`` (the shape of ``stg_identity_identifiers``). Values are
    normalised by :func:`normalise_identifier`; when a record has several values
    of one type the smallest is kept (deterministic).
    """
    if identifiers.empty:
        return pd.DataFrame(index=pd.Index([], name="member"))
    frame = pd.DataFrame({
        "member": (identifiers["source_system"].astype(str) + ":" + identifiers["source_id"].astype(str)).to_numpy(),
        "column": identifiers["id_type"].map(id_column_name).to_numpy(),
        "value": normalise_identifier(identifiers["id_value"]).to_numpy(),
    }).dropna(subset=["value"])
    wide = frame.groupby(["member", "column"])["value"].min().unstack("column")
    wide.columns.name = None
    return wide.astype("string")


#: Optional column of staged identity records: the text of a date of birth extract nulled as no
#: calendar date (kept in ``field_issues``), compared as written (:func:`linkage_input`).
RAW_DATE_OF_BIRTH = "date_of_birth_text"


def _linkage_dob(dates: pd.Series, raw_text: pd.Series) -> pd.Series:
    """ISO text of each date of birth; where none parses, the year-first text it was keyed as."""
    dob = normalise_date(dates)
    missing = dob.isna().to_numpy()
    if missing.any():
        # Only the few records without a date: the text test would cost CPU on every record.
        text = raw_text[missing].astype("string").fillna(dates[missing].astype("string"))
        dob[missing] = date_text_for_linkage(text).to_numpy()
    return dob


def linkage_input(records: pd.DataFrame, identifiers: pd.DataFrame | None = None,
                  phone_country: str = "GB") -> pd.DataFrame:
    """Normalised linkage columns for staged identity records.

    Parameters
    ----------
    records
        Staged identity records; absent optional columns count as empty. Any
        ``id_*`` column is taken as an extra identifier.
    identifiers
        Extra identifiers in the long shape of ``stg_identity_identifiers``
        (pivoted by :func:`pivot_identifiers`), or ``None``.
    phone_country
        Country of phone numbers written without a calling code.

    Returns
    -------
    pandas.DataFrame
        ``unique_id`` (``source_system:source_id``), the :data:`BASE_COLUMNS`
        and every ``id_*`` column; email and phone (E.164) go through the same
        normalisers as the exact rule, dates of birth (date, ISO or
        ``YYYYMMDD`` text) become ISO text, every empty string becomes NULL.
        A date of birth that is no calendar date (``19450493``) is compared as
        the text it was keyed as (:func:`~include.identity.normalise.date_text_for_linkage`,
        from the column :data:`RAW_DATE_OF_BIRTH` when extract nulled it): a digit
        mistyped leaves it one edit from the person's date elsewhere, while NULL
        left the pair without its strongest evidence but the name (of 133 true pairs
        of 5,000 generated persons left apart, 82 lacked a date on one side; 7.1%
        of their dates were such text, FEBRL4's file B has 1.3%).
    """
    records = records.reset_index(drop=True)

    def col(name: str) -> pd.Series:
        return records[name] if name in records.columns else pd.Series(pd.NA, index=records.index, dtype="string")

    unique_id = (records["source_system"].astype(str) + ":" + records["source_id"].astype(str))
    out = pd.DataFrame({
        "unique_id": unique_id,
        "first_name": _clean_text(col("first_name")),
        "last_name": _clean_text(col("last_name")),
        "email": normalise_email(col("email")),
        "phone": normalise_phone(col("phone"), phone_country),
        "postcode": _clean_text(col("postcode")).str.replace(" ", "", regex=False),
        "address": _clean_text(col("address")),
        "region": _clean_text(col("region")),
        "dob": _linkage_dob(col("date_of_birth"), col(RAW_DATE_OF_BIRTH)),
        "device_id": _clean_text(col("device_id")),
    })
    for name in identifier_columns(records.columns):
        out[id_column_name(name)] = normalise_identifier(records[name])
    if identifiers is not None and not identifiers.empty:
        wide = pivot_identifiers(identifiers).reindex(unique_id.to_numpy())
        for name in wide.columns:
            values = pd.Series(wide[name].to_numpy(), index=out.index, dtype="string")
            out[name] = out[name].fillna(values) if name in out.columns else values
    return out.reset_index(drop=True)


def _db_api(threads: int, memory_limit: str | None):
    import duckdb
    from splink import DuckDBAPI

    from include.runtime.threads import current_budget as _thread_budget

    con = duckdb.connect(":memory:")
    con.execute(f"SET threads = {min(int(threads), _thread_budget())}")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    # Deterministic row order out of parallel operators (same input -> same clusters).
    con.execute("SET preserve_insertion_order = true")
    return DuckDBAPI(con)


def derived_select(columns) -> str:
    """``, <sql> AS <column>`` of the derived columns an input with ``columns`` gets ('' without address or postcode).

    :data:`DERIVED_COLUMNS` with an address, :data:`POSTCODE_DERIVED` with a postcode.
    Appended to a ``SELECT *`` over the input frame, after any filter: DuckDB computes a
    view's derived columns for every row before a join, so a subset is selected first.
    """
    derived = {**(DERIVED_COLUMNS if "address" in columns else {}),
               **(POSTCODE_DERIVED if "postcode" in columns else {})}
    return "".join(f", {sql} AS {col}" for col, sql in derived.items())


def _register_input(db_api, frame: pd.DataFrame, name: str = "identity_records"):
    """Register ``frame`` with its :data:`DERIVED_COLUMNS` as view ``name``; return Splink's handle of it.

    A view over the pandas frame, as Splink registers one: a table copy counted against
    DuckDB's memory limit and made prediction spill at 1.4M records (predict 47 CPU-s
    against 27). Splink materialises the view once per step (with term frequencies).
    """
    con = db_api.duckdb_con
    con.register(f"{name}_frame", frame)
    con.execute(f"CREATE VIEW {name} AS SELECT *{derived_select(frame.columns)} FROM {name}_frame").fetchall()
    return db_api.register(name, dataset_display_name=name)


def _linker(frame: pd.DataFrame, settings: Any, threads: int, memory_limit: str | None):
    from splink import Linker

    _splink_quiet()
    db_api = _db_api(threads, memory_limit)
    return Linker(_register_input(db_api, frame), settings)


def deterministic_rules(columns: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Deterministic rules for λ over ``columns``.

    Strong identifiers when any is present; otherwise equal name and date of
    birth (or name and postcode).
    """
    strong = [(c,) for c in (*STRONG_CONTACT_COLUMNS, *identifier_columns(columns)) if c in columns]
    if strong:
        return strong
    return [r for r in (("first_name", "last_name", "dob"), ("first_name", "last_name", "postcode"))
            if set(r) <= set(columns)]


def exact_agreement(model: dict[str, Any] | None, column: str) -> float:
    """P(two records of one person carry equal ``column`` values | both carry one), from the model's m.

    The sum of m over the levels that require ``column`` to be equal; 1.0 before
    training (or when no level tests it), an upper bound.
    """
    test = f'"{column}_l" = "{column}_r"'
    total, found = 0.0, False
    for comparison in (model or {}).get("comparisons", []):
        for level in comparison.get("comparison_levels", []):
            if test in level.get("sql_condition", "") and level.get("m_probability") is not None:
                total += level["m_probability"]
                found = True
    return min(total, 1.0) if found else 1.0


def rules_recall(frame: pd.DataFrame, rules: list[tuple[str, ...]], model: dict[str, Any] | None = None) -> float:
    """Share of true matches the deterministic ``rules`` find, estimated from the data without labels.

    A rule finds a matching pair when both records carry each of its columns
    (fill share squared) and the values are equal (:func:`exact_agreement`);
    columns are taken as independent and the union over rules is counted by
    inclusion–exclusion. A fixed guess (0.8) put λ 40% low when a national id
    is on 70% of records (true recall 0.49), which cost person-only recall.
    """
    share = {}
    for col in set().union(*(_rule_columns(r) for r in rules)):
        fill = float(frame[col].notna().mean()) if len(frame) else 0.0
        share[col] = fill * fill * exact_agreement(model, col)
    recall = 0.0
    for k in range(1, len(rules) + 1):
        for subset in itertools.combinations(rules, k):
            recall += (-1) ** (k + 1) * math.prod(share[c] for c in set().union(*(_rule_columns(r) for r in subset)))
    # Clamped: a rule found on a sliver of records would otherwise blow λ up.
    return float(min(max(recall, 0.05), 1.0))


def em_sessions(columns: tuple[str, ...]) -> list[tuple[str, ...]]:
    """EM blocking rules to try, in order, for a model over ``columns`` (see the module docstring)."""
    return _expand(EM_SESSION_CANDIDATES, columns)


def train_model(frame: pd.DataFrame, *, columns: tuple[str, ...] | None = None, seed: int = 42,
                u_max_pairs: float = 5e6, threads: int = 2, memory_limit: str | None = "3GB") -> dict[str, Any]:
    """Train the Fellegi–Sunter model without labels; return Splink's model JSON as a dict.

    Parameters
    ----------
    frame
        Output of :func:`linkage_input`.
    columns
        Linkage columns the model compares; ``None`` uses :func:`present_columns` of ``frame``.
    seed
        Seed of the u sampling (the only random step).
    u_max_pairs
        Record pairs sampled to estimate u.

    Raises
    ------
    TrainingError
        When no column carries data, λ or u cannot be estimated, or no EM
        session finds pairs to learn from; the message names the columns.
    """
    from splink.internals.exceptions import EMTrainingException, SplinkException

    columns = present_columns(frame) if columns is None else tuple(columns)
    where = f"{len(frame)} records, columns present: {', '.join(columns) or 'none'}"
    rules = deterministic_rules(columns)
    if not rules:
        raise TrainingError(f"{where}: no deterministic rule for λ (needs email, phone, device id, an id_* "
                            "column, or first name + last name with date of birth or postcode)")
    from splink import Linker

    _splink_quiet()
    db_api = _db_api(threads, memory_limit)
    sdf = _register_input(db_api, frame)
    extra = affordable_rules(db_api.duckdb_con, sdf.physical_name, columns, len(frame))
    linker = Linker(sdf, build_settings(columns, extra))
    training = linker.training
    specs = comparison_specs(columns)
    estimated: set[str] = set()
    done = 0
    try:
        initial_recall = rules_recall(frame, rules)
        training.estimate_probability_two_random_records_match([_block_on(r) for r in rules], recall=initial_recall)
        training.estimate_u_using_random_sampling(max_pairs=u_max_pairs, seed=seed)
    except (SplinkException, ZeroDivisionError, ValueError) as exc:
        # ValueError: more pairs agree on the rules than the estimated recall allows (tiny loads).
        raise TrainingError(f"{where}: {str(exc).splitlines()[0]}") from exc
    prior = linker._settings_obj._probability_two_random_records_match
    if not 0 < prior < 1:
        # No two records agree on any deterministic rule (a tiny or a fully deduplicated
        # load): there is no evidence of a match to start EM from, and Splink's EM would
        # take log2 of a zero prior.
        raise TrainingError(f"{where}: no record pairs agree on the deterministic rules "
                            f"({'; '.join('+'.join(r) for r in rules)}), so λ = {prior:g}")
    skipped = []
    for rule in em_sessions(columns):
        learns = {s.name for s in specs if not set(s.columns) & _rule_columns(rule)}
        if done >= 3 and estimated >= {s.name for s in specs}:
            break
        if not learns or (not (learns - estimated) and done >= 3):
            continue
        try:
            training.estimate_parameters_using_expectation_maximisation(_block_on(rule), max_pairs=EM_MAX_PAIRS)
        except (EMTrainingException, SplinkException, ZeroDivisionError) as exc:
            skipped.append(f"{'+'.join(rule)}: {str(exc).splitlines()[0]}")
            continue
        estimated |= learns
        done += 1
    if skipped:
        log.warning("identity training: EM sessions skipped: %s", "; ".join(skipped))
    if not done:
        raise TrainingError(f"{where}: no EM session had record pairs to learn from ({'; '.join(skipped)})")
    never = [s.name for s in specs if s.name not in estimated]
    if never:
        # Splink would score these with its default m values: a guess, not a model.
        raise TrainingError(f"{where}: no EM session can estimate {', '.join(never)} (each session must block "
                            "on other columns than the ones it estimates)")
    # λ again, now with the rules' recall from the trained m (typos and slips lower it).
    # EM sessions keep λ of their own blocks; the model's λ is this estimate only.
    recall = rules_recall(frame, rules, linker.misc.save_model_to_json())
    linker._settings_obj._probability_two_random_records_match = prior * initial_recall / recall
    return linker.misc.save_model_to_json()


class TrainingError(RuntimeError):
    """The records are too few or too uniform to estimate the Splink model."""


def untrained_levels(model: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Comparison levels whose m or u was never estimated: ``(blocking, minor)``.

    ``blocking`` lists comparisons whose strongest (exact) level lacks m or u:
    such a model is not accepted for reuse. ``minor`` lists rarer levels left
    at Splink's defaults because small data never showed them (e.g. dates of
    birth one edit apart among 9,000 records); they are reported, not fatal.
    """
    blocking, minor = [], []
    for comparison in model["comparisons"]:
        levels = [lv for lv in comparison["comparison_levels"] if not lv.get("is_null_level")]
        for i, level in enumerate(levels):
            for prob in ("m_probability", "u_probability"):
                if level.get(prob) is None:
                    label = f"{comparison['output_column_name']}: {level.get('label_for_charts')} ({prob})"
                    (blocking if i == 0 else minor).append(label)
    return blocking, minor


def m_u_table(model: dict[str, Any]) -> pd.DataFrame:
    """One row per comparison level: m, u, Bayes factor and match weight (no data values)."""
    rows = []
    for comparison in model["comparisons"]:
        for level in comparison["comparison_levels"]:
            if level.get("is_null_level"):
                continue
            m, u = level.get("m_probability"), level.get("u_probability")
            bf = m / u if m and u else np.nan
            rows.append({
                "comparison": comparison["output_column_name"],
                "level": level.get("label_for_charts"),
                "m_probability": m, "u_probability": u, "bayes_factor": bf,
                "match_weight": math.log2(bf) if bf and bf > 0 and np.isfinite(bf) else np.nan,
                "tf_adjustment": bool(level.get("tf_adjustment_column")),
            })
    return pd.DataFrame(rows)


def match_weights_chart_html(model: dict[str, Any]) -> str:
    """Splink's match-weights chart of ``model`` as a standalone HTML page.

    The chart holds only comparison labels and weights, never record values.
    """
    empty = {c: pd.Series(dtype="string") for c in ("unique_id", *BASE_COLUMNS, *model_columns(model))}
    linker = _linker(pd.DataFrame(empty), model, 1, None)
    # Inline vega libraries: the artifact opens offline from the MLflow UI.
    return linker.visualisations.match_weights_chart().to_html(inline=True)
