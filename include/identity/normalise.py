"""Normalisers shared by the exact rule and the Splink linkage input."""

from __future__ import annotations

import re

import pandas as pd

_EMAIL = re.compile(r"^[a-z0-9._%+'-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$")


def normalise_email(values: pd.Series) -> pd.Series:
    """Lower-case and trim; anything not shaped like an address becomes NULL."""
    s = values.astype("string").str.strip().str.lower()
    s = s.mask(s == "")
    return s.where(s.str.match(_EMAIL.pattern).fillna(False).astype(bool))


def normalise_phone(values: pd.Series) -> pd.Series:
    """Digits only, with a UK ``+44``/``0044`` prefix turned into a leading 0.

    Numbers that are not 10 or 11 digits long afterwards become NULL.
    """
    s = values.astype("string").str.replace(r"\D", "", regex=True)
    s = s.str.replace(r"^(00)?44", "0", regex=True)
    s = s.mask(s == "")
    ok = s.str.len().between(10, 11).fillna(False).astype(bool)
    return s.where(ok)
