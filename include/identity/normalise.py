"""Normalisers shared by the exact rule and the Splink linkage input.

Phone numbers become E.164 (``+447700900123``). The ``phonenumbers`` library
(Google's libphonenumber) is not in the project's environment, so
:func:`normalise_phone` is a small vectorised normaliser with the calling code,
trunk prefix and national number lengths of a handful of countries
(:data:`PHONE_COUNTRIES`) and generic E.164 rules for every other number:

- ``+`` or the international prefix (``00``; ``011`` for North America)
  followed by 8-15 digits is already international;
- otherwise the number is national to the default country: its trunk prefix
  (``0`` in most of Europe and Australia, ``1`` in North America) is dropped and
  the calling code put in front, when the remaining digits have a plausible
  national length and first digit for that country (2-9 in North America);
- a national number written with its calling code but no ``+``
  (``447700900123``) is accepted when the rest has a plausible length;
- a stray trunk ``0`` after the calling code (``+44 (0)20 ...``, ``+44 020 ...``)
  is dropped, except in Italy where the leading 0 is part of the number;
- anything else (too short, too long, letters only) becomes NULL.

It does not know numbering plans (which area codes exist), so a well-formed but
unassigned number passes: enough for matching, where both records must carry
the same number to agree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

_EMAIL = re.compile(r"^[a-z0-9._%+'-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$")


def normalise_email(values: pd.Series) -> pd.Series:
    """Lower-case and trim; anything not shaped like an address becomes NULL."""
    s = values.astype("string").str.strip().str.lower()
    s = s.mask(s == "")
    return s.where(s.str.match(_EMAIL.pattern).fillna(False).astype(bool))


@dataclass(frozen=True)
class PhoneCountry:
    """What a national phone number of one country looks like."""

    calling_code: str
    trunk_prefix: str  # dropped from national numbers ("" when none)
    min_digits: int  # national significant number length, without the trunk prefix
    max_digits: int
    international_prefix: str = "00"
    keeps_leading_zero: bool = False  # Italy: the 0 of landlines is part of the E.164 number
    first_digits: str = "1-9"  # digits a national significant number can start with (regex class)


#: Countries the default-country setting (``phone_country``) accepts, by ISO 3166 alpha-2 code.
PHONE_COUNTRIES: dict[str, PhoneCountry] = {
    "GB": PhoneCountry("44", "0", 9, 10),
    "IE": PhoneCountry("353", "0", 7, 9),
    "US": PhoneCountry("1", "1", 10, 10, international_prefix="011", first_digits="2-9"),
    "CA": PhoneCountry("1", "1", 10, 10, international_prefix="011", first_digits="2-9"),
    "DE": PhoneCountry("49", "0", 6, 13),
    "AT": PhoneCountry("43", "0", 4, 13),
    "CH": PhoneCountry("41", "0", 9, 9),
    "FR": PhoneCountry("33", "0", 9, 9),
    "BE": PhoneCountry("32", "0", 8, 9),
    "NL": PhoneCountry("31", "0", 9, 9),
    "ES": PhoneCountry("34", "", 9, 9),
    "IT": PhoneCountry("39", "", 6, 11, keeps_leading_zero=True, first_digits="0-9"),
    "AU": PhoneCountry("61", "0", 9, 9, international_prefix="0011"),
    "NZ": PhoneCountry("64", "0", 8, 10),
}

_EXTENSION = re.compile(r"\s*(?:ext\.?|extension|x|#)\s*\d{1,6}\s*$", re.IGNORECASE)


def phone_country(code: str) -> PhoneCountry:
    """The :class:`PhoneCountry` of an ISO alpha-2 ``code`` (case-insensitive); ValueError if unknown."""
    found = PHONE_COUNTRIES.get(str(code).strip().upper())
    if found is None:
        raise ValueError(f"phone_country {code!r} is not supported; use one of {', '.join(sorted(PHONE_COUNTRIES))}")
    return found


def _length_between(s: pd.Series, lo: int, hi: int) -> pd.Series:
    return s.str.len().between(lo, hi).fillna(False).astype(bool)


def _per_distinct_value(normalise, values: pd.Series, *args) -> pd.Series:
    """Apply a vectorised normaliser to the distinct non-null values only and map the result back.

    Identity records repeat values (a person's records share a phone; 1.4M dates
    of birth hold about 20,000 distinct days), so this is several times faster.
    """
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    if len(uniques) == 0:
        return normalise(pd.Series(values, dtype=object).reset_index(drop=True), *args).set_axis(values.index)
    done = normalise(pd.Series(uniques, dtype=object), *args).to_numpy(dtype=object, na_value=None)
    out = np.where(codes >= 0, done[np.maximum(codes, 0)], None)
    return pd.Series(out, index=values.index, dtype="string")


def normalise_phone(values: pd.Series, country: str = "GB") -> pd.Series:
    """E.164 form (``+<calling code><number>``) of each phone number; NULL when not a phone number.

    Parameters
    ----------
    values
        Phone numbers as written (spaces, dots, dashes, brackets, ``+``/``00``
        prefixes, ``ext. 12`` extensions are all fine).
    country
        ISO 3166 alpha-2 code of the country national numbers belong to
        (setting ``phone_country``); see :data:`PHONE_COUNTRIES`.
    """
    phone_country(country)  # an unknown country fails even when there is nothing to normalise
    return _per_distinct_value(_phone_e164, values, country)


def _phone_e164(values: pd.Series, country: str) -> pd.Series:
    home = phone_country(country)
    text = values.astype("string").str.strip()
    text = text.str.replace(_EXTENSION.pattern, "", regex=True, flags=re.IGNORECASE)
    text = text.str.replace(r"\(0\)", "", regex=True)
    digits = text.str.replace(r"\D", "", regex=True)
    prefixes = sorted({"00", home.international_prefix}, key=len, reverse=True)
    plus = text.str.startswith("+").fillna(False).astype(bool)
    intl_prefix = pd.Series(False, index=values.index)
    for prefix in prefixes:
        intl_prefix |= ~plus & ~intl_prefix & digits.str.startswith(prefix).fillna(False).astype(bool)
    stripped = digits.copy()
    for prefix in prefixes:
        hit = intl_prefix & digits.str.startswith(prefix).fillna(False).astype(bool)
        stripped = stripped.mask(hit, digits.str.slice(len(prefix)))
    international = plus | intl_prefix
    # A trunk 0 written after a known calling code ("+44 020 ...") is not part of the number.
    trunk_zero = sorted({c.calling_code for c in PHONE_COUNTRIES.values()
                         if c.trunk_prefix == "0" and not c.keeps_leading_zero}, key=len, reverse=True)
    stripped = stripped.mask(international, stripped.str.replace(f"^({'|'.join(trunk_zero)})0", r"\1", regex=True))
    e164 = ("+" + stripped).where(international & _length_between(stripped, 8, 15))

    national = digits.where(~international)
    if home.trunk_prefix:
        has_trunk = national.str.startswith(home.trunk_prefix).fillna(False).astype(bool)
        nsn = national.mask(has_trunk, national.str.slice(len(home.trunk_prefix)))
        # North America: the trunk "1" is optional, so a 10-digit number is already national.
        if home.trunk_prefix == "1":
            nsn = nsn.mask(has_trunk & ~_length_between(national, home.max_digits + 1, home.max_digits + 1),
                           national)
    else:
        nsn = national
    def plausible(number: pd.Series) -> pd.Series:
        starts = number.str.match(f"^[{home.first_digits}]").fillna(False).astype(bool)
        return starts & _length_between(number, home.min_digits, home.max_digits)

    ok_national = plausible(nsn)
    with_code = national.str.startswith(home.calling_code).fillna(False).astype(bool)
    ok_with_code = ~ok_national & with_code & plausible(national.str.slice(len(home.calling_code)))
    e164 = e164.mask(ok_national, "+" + home.calling_code + nsn)
    e164 = e164.mask(ok_with_code, "+" + national)
    return e164.astype("string")


_DATE_FORMATS = ("%Y-%m-%d", "%Y%m%d", "%Y/%m/%d", "%Y-%m-%d %H:%M:%S")


def normalise_date(values: pd.Series) -> pd.Series:
    """ISO ``YYYY-MM-DD`` text of dates given as dates, timestamps, ISO text or ``YYYYMMDD`` text.

    Unparsable values (and day-first or month-first text, which is ambiguous)
    become NULL.
    """
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.dt.strftime("%Y-%m-%d").astype("string")
    return _per_distinct_value(_iso_date, values)


_DATE_TEXT = r"^(\d{4})[-/]?(\d{2})[-/]?(\d{2})$"


def date_text_for_linkage(values: pd.Series) -> pd.Series:
    """``YYYY-MM-DD`` text of year-first date text whether or not it is a calendar date.

    For comparing, never for storing: a date of birth keyed as ``19450493`` (a digit
    mistyped) is no date, and extract nulls it, but it is one edit from the person's
    ``1945-04-03`` elsewhere. Anything else (day-first or month-first text, which is
    ambiguous, other lengths, letters) becomes NULL.
    """
    parts = values.astype("string").str.strip().str.extract(_DATE_TEXT)
    return (parts[0] + "-" + parts[1] + "-" + parts[2]).astype("string")


def _iso_date(values: pd.Series) -> pd.Series:
    text = values.astype("string").str.strip()
    # DATE columns arrive as datetime.date objects; their str() is ISO.
    parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[s]")
    for fmt in _DATE_FORMATS:
        missing = parsed.isna()
        if not missing.any():
            break
        parsed = parsed.mask(missing, pd.to_datetime(text.where(missing), format=fmt, errors="coerce"))
    return parsed.dt.strftime("%Y-%m-%d").astype("string")
