"""The column-driven Splink design: comparison levels, blocking rules and λ's recall, without training."""

import duckdb
import pandas as pd
import pytest

from include.identity import linkage as identity_splink


def _levels(name: str, columns: tuple[str, ...]) -> list[tuple[str, str]]:
    """(label, DuckDB SQL condition) of every level of the comparison ``name`` over ``columns``."""
    spec = next(s for s in identity_splink.comparison_specs(columns) if s.name == name)
    comparison = identity_splink._comparison(spec, columns).get_comparison("duckdb")
    return [(lv.label_for_charts, lv.sql_condition) for lv in comparison.comparison_levels]


def _first_level(levels: list[tuple[str, str]], pairs: pd.DataFrame) -> list[str]:
    """Label of the first level each row of ``pairs`` (``<col>_l``, ``<col>_r`` columns) falls in, as Splink's CASE."""
    case = " ".join(f"WHEN {sql} THEN '{label}'" if sql != "ELSE" else f"ELSE '{label}'" for label, sql in levels)
    con = duckdb.connect()
    con.register("pairs", pairs)
    return [r[0] for r in con.execute(f"SELECT CASE {case} END FROM pairs").fetchall()]


def test_dates_of_birth_with_two_digits_swapped_have_their_own_level():
    levels = _levels("dob", ("first_name", "dob"))
    pairs = pd.DataFrame({
        "dob_l": ["1980-03-12", "1980-03-12", "1980-03-12", "1980-03-12", "1980-03-12", "1980-03-12"],
        "dob_r": ["1980-03-12", "1980-03-21", "1908-03-12", "1980-12-03", "1980-03-28", "1980-03-13"],
    })
    got = _first_level(levels, pairs)
    assert got[:4] == ["Exact match on dob", "two digits swapped", "two digits swapped", "day and month swapped"]
    # Two edits that are no transposition (another day of the month) are weaker evidence: the year only.
    assert got[4] == "same year"
    assert got[5].startswith("Levenshtein")
    other_year = pd.DataFrame({"dob_l": ["1980-03-12"], "dob_r": ["1981-04-28"]})
    assert _first_level(levels, other_year) == ["All other comparisons"]


def test_a_date_of_birth_extract_nulled_is_compared_as_keyed():
    import datetime as dt

    records = pd.DataFrame({
        "source_system": ["a", "b", "b", "b"], "source_id": ["1", "1", "2", "3"],
        "date_of_birth": [dt.date(1945, 4, 3), None, None, None],
        identity_splink.RAW_DATE_OF_BIRTH: [None, "19450493", "03/04/1945", None],
    })
    dob = identity_splink.linkage_input(records)["dob"]
    assert dob[0] == "1945-04-03" and dob[1] == "1945-04-93"
    assert dob[2:].isna().all()  # day-first text is ambiguous; no text, no date
    # One mistyped digit: one edit from the valid date, not the "all other" level a NULL would have missed.
    got = _first_level(_levels("dob", ("first_name", "dob")), pd.DataFrame({"dob_l": [dob[0]], "dob_r": [dob[1]]}))
    assert got[0].startswith("Levenshtein")


def test_the_one_edit_level_is_levenshtein_at_most_one():
    left = ["AB123456C", "AB123456C", "AB123456C", "AB123456C", "AB123456C", "1980-03-12"]
    right = ["AB123456D", "AB12345C", "AB1234567C", "AB123465D", "XB123456D", "1980-03-13"]
    sql = identity_splink._one_edit_level("x").get_comparison_level("duckdb").sql_condition
    con = duckdb.connect()
    con.register("pairs", pd.DataFrame({"x_l": left, "x_r": right}))
    got = [r[0] for r in con.execute(f"SELECT {sql} FROM pairs").fetchall()]
    expected = [r[0] for r in con.execute("SELECT levenshtein(x_l, x_r) <= 1 FROM pairs").fetchall()]
    assert got == expected == [True, True, True, False, False, True]


def test_region_is_the_last_address_level_and_only_with_an_address():
    columns = ("first_name", "last_name", "postcode", "address", "region", "dob")
    labels = [label for label, _ in _levels("address", columns)]
    assert labels[-2:] == ["Exact match on region", "All other comparisons"]
    assert [s.name for s in identity_splink.comparison_specs(columns)].count("address") == 1
    assert "region" not in {c for s in identity_splink.comparison_specs(columns) if s.name != "address"
                            for c in s.columns}
    frame = pd.DataFrame({"first_name": ["a", "b", "c"], "email": ["x@y.z", "u@v.w", None],
                          "region": ["north", "south", "north"]})
    assert identity_splink.present_columns(frame) == ("first_name", "email")
    frame["postcode"] = ["n1", "s2", "n3"]
    assert identity_splink.present_columns(frame) == ("first_name", "email", "postcode", "region")


def test_swapped_names_rules_block_a_pair_in_both_orientations():
    rules = [r for r in identity_splink._expand(identity_splink.PREDICTION_RULE_CANDIDATES,
                                                ("first_name", "last_name", "dob")) if any("~" in p for p in r)]
    assert len(rules) == 2
    records = pd.DataFrame({"uid": [1, 2, 3], "first_name": ["ann", "lee", "lee"], "last_name": ["lee", "anne", "ann"],
                            "dob": ["1980-01-02", "1980-01-02", "1990-01-02"]})
    con = duckdb.connect()
    con.register("records", records)
    for left, right in ((1, 2), (2, 1)):
        hits = sum(con.execute(f"SELECT count(*) FROM records l, records r WHERE l.uid = {left} AND r.uid = {right} "
                               f"AND {identity_splink._block_on(rule).get_blocking_rule('duckdb').blocking_rule_sql}"
                               ).fetchone()[0] for rule in rules)
        assert hits == 1
    # A different date of birth is not blocked.
    sql = identity_splink._block_on(rules[0]).get_blocking_rule("duckdb").blocking_rule_sql
    assert con.execute(f"SELECT count(*) FROM records l, records r WHERE l.uid = 1 AND r.uid = 3 AND {sql}"
                       ).fetchone()[0] == 0


def test_postcode_rules_block_names_keyed_into_the_other_field():
    columns = ("first_name", "last_name", "postcode", "dob")
    rules = [r for r in identity_splink._expand(identity_splink.OPTIONAL_PREDICTION_RULES, columns)
             if "postcode" in r and any("~" in p for p in r)]
    assert len(rules) == 2
    # Swapped, with a typo in one name (no rule on equal or swapped names reaches it); another postcode.
    records = pd.DataFrame({"uid": [1, 2, 3], "first_name": ["ann", "leeson", "leeson"],
                            "last_name": ["leeson", "anne", "anne"], "postcode": ["2000", "2000", "3000"]})
    con = duckdb.connect()
    con.register("records", records)

    def hits(left: int, right: int) -> int:
        return sum(con.execute(f"SELECT count(*) FROM records l, records r WHERE l.uid = {left} AND r.uid = {right} "
                               f"AND {identity_splink._block_on(rule).get_blocking_rule('duckdb').blocking_rule_sql}"
                               ).fetchone()[0] for rule in rules)

    assert hits(1, 2) == 1 and hits(2, 1) == 1
    assert hits(1, 3) == 0 and hits(3, 1) == 0


def test_rules_recall_counts_fill_agreement_and_the_union_of_rules():
    n = 1000
    frame = pd.DataFrame({"id_national": [f"N{i}" if i % 10 < 7 else None for i in range(n)],
                          "email": [f"{i}@x.org" if i % 2 else None for i in range(n)]})
    assert identity_splink.rules_recall(frame, [("id_national",)]) == pytest.approx(0.49)
    model = {"comparisons": [{"comparison_levels": [
        {"sql_condition": '"id_national_l" = "id_national_r"', "m_probability": 0.9},
        {"sql_condition": "ELSE", "m_probability": 0.1}]}]}
    assert identity_splink.rules_recall(frame, [("id_national",)], model) == pytest.approx(0.49 * 0.9)
    # Either rule: 1 - (1 - 0.49)(1 - 0.25).
    assert identity_splink.rules_recall(frame, [("id_national",), ("email",)]) == pytest.approx(0.6175)
    # Rules sharing columns are not independent: names + dob or names + postcode.
    both = pd.DataFrame({c: ["v"] * n for c in ("first_name", "last_name", "dob", "postcode")})
    assert identity_splink.rules_recall(both, [("first_name", "last_name", "dob"),
                                               ("first_name", "last_name", "postcode")]) == pytest.approx(1.0)


def _address_pairs(levels, rows):
    """First level of each (postcode_l, postcode_r, address_l, address_r) row, with the derived columns."""
    frame = pd.DataFrame(rows, columns=["postcode_l", "postcode_r", "address_l", "address_r"])
    frame["region_l"] = frame["region_r"] = "north"
    con = duckdb.connect()
    con.register("raw", frame)
    derived = {**identity_splink.DERIVED_COLUMNS, **identity_splink.POSTCODE_DERIVED}
    cols = ", ".join(f"{sql.replace('address', f'address_{side}').replace('postcode', f'postcode_{side}')} "
                     f"AS {name}_{side}" for name, sql in derived.items() for side in ("l", "r"))
    table = con.sql(f"SELECT *, {cols} FROM raw").df()
    return _first_level(levels, table)


def test_addresses_are_graded_and_neighbours_are_not_similar():
    levels = _levels("address", ("first_name", "postcode", "address", "region"))
    got = _address_pairs(levels, [
        ("2000", "2000", "12 oak road north park", "12 oak road north park"),
        ("2000", "2001", "12 oak road north park", "12 oak road north park"),
        ("2000", "2000", "12 oak road north park", "12 oak rd north park"),  # abbreviated
        (None, "2000", "unit 4 12 oak road north park", "12 oak road north park"),  # a part missing
        ("2000", "2000", "12 oak road north park", "14 oak road north park"),  # the neighbour
        ("2000", "2000", "12 oak road north park", "north park oak road 12"),  # another word order
        ("3100", "2000", "12 oak road", "99 elm street"),  # (3000: one character off, a level of its own)
        ("2000", "2000", "12 oak road north park", "7 elm street"),  # another street of the postcode
    ])
    assert got[0].startswith("(Exact match on postcode) AND")
    assert got[1] == "Exact match on address"
    assert got[2] == "postcode equal, street address similar"
    assert got[3] == "street address similar"
    # Two house numbers on one street read alike but are two addresses (or one mistyped): not "similar",
    # a level of their own below it.
    assert got[4] == "postcode equal, street address similar but for its numbers"
    assert got[5] == "postcode equal, street address similar"
    assert got[6] == "Exact match on region"
    assert got[7] == "Exact match on postcode"


def test_a_postcode_one_character_off_or_two_swapped_is_a_level_above_the_region():
    levels = _levels("address", ("first_name", "postcode", "address", "region"))
    got = _address_pairs(levels, [
        ("2145", "2146", "79 oak road", "5 elm street"),  # one substituted
        ("3175", "3715", "79 oak road", "5 elm street"),  # two swapped
        ("SW1A1AA", "SW1A1A", "79 oak road", "5 elm street"),  # one dropped
        ("2145", "2164", "79 oak road", "5 elm street"),  # two different: another postcode
        ("2145", "2145", "79 oak road", "5 elm street"),
    ])
    typo = "postcode one character off or two swapped"
    assert got[:3] == [typo] * 3
    assert got[3] == "Exact match on region"
    assert got[4] == "Exact match on postcode"
    labels = [label for label, _ in levels]
    assert labels.index(typo) == labels.index("Exact match on postcode") + 1


def test_identifiers_with_two_characters_swapped_have_their_own_level():
    levels = _levels("id_national", ("first_name", "id_national"))
    pairs = pd.DataFrame({"id_national_l": ["AB123456C", "AB123456C", "AB123456C", "AB123456C"],
                          "id_national_r": ["AB123456C", "AB123465C", "AB123457C", "AB654321C"]})
    assert _first_level(levels, pairs) == ["Exact match on id_national", "two characters swapped",
                                           "Levenshtein distance of id_national <= 1", "All other comparisons"]


def test_optional_rules_are_used_only_within_the_pair_budget():
    con = duckdb.connect()
    n = 400
    frame = pd.DataFrame({"first_name": ["ann"] * n, "last_name": [f"l{i % 200}" for i in range(n)],
                          "address": [f"{i} high st" for i in range(n)], "region": ["north"] * n,
                          "postcode": [f"p{i}" for i in range(n)]})
    con.register("t", frame)
    counts = identity_splink.rule_pair_counts(con, "t", [("first_name",), ("last_name", "region"),
                                                         ("first_name~last_name", "last_name~first_name")])
    assert counts[("first_name",)] == n * (n - 1) // 2
    assert counts[("last_name", "region")] == 200
    assert counts[("first_name~last_name", "last_name~first_name")] == 0
    columns = ("first_name", "last_name", "postcode", "address", "region")
    chosen = identity_splink.affordable_rules(con, "t", columns, n)
    # Every first name is "ann": a first-name rule would pair everyone and is left out.
    assert ("first_name", "last_name[:1]") not in chosen and ("last_name", "region") in chosen
    # Every postcode is its own: the postcode alone is affordable, and a rule adding a condition to it is redundant.
    assert ("postcode",) in chosen and ("postcode", "last_name[:1]") not in chosen
    # One postcode for everyone: alone it pairs everyone; with the surname's initial (26 of them) it does not.
    con.register("t2", frame.assign(postcode="p", last_name=[f"{chr(97 + i % 26)}{i % 200}" for i in range(n)]))
    chosen = identity_splink.affordable_rules(con, "t2", columns, n)
    assert ("postcode",) not in chosen and ("postcode", "last_name[:1]") in chosen
