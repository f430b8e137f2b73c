"""Person-only registration files with planted duplicates, in the shape of FEBRL data sets.

The demo's identity records (:mod:`include.demo.generate`) come from web, app
and call-centre accounts with emails and phones. Many businesses hold none of
that: a registry, an insurer or a membership file keeps names, an address
written in parts, a date of birth and a national or customer id, and its
duplicates come from re-keying by hand. This generator builds such files, in
the shape of the FEBRL generator's data sets (Christen 2008, "Febrl: a
freely available record linkage system with a graphical user interface"):
``given_name, surname, street_number, address_1, address_2, suburb,
postcode, state, date_of_birth (YYYYMMDD), soc_sec_id``. It is its own data,
not a copy: names and places are drawn from syllables with a Zipf-like
frequency, errors from the list below.

Layouts (:func:`person_files`):

- ``two_files``: file A holds every person's original record, file B one
  duplicate of each (link two files, one to one);
- ``one_file``: one file of originals and their duplicates, 0 to 5 per
  person (deduplicate one file).

What a duplicate may carry (each duplicate has 1-5 modifications, at most 2
per field, fields drawn by weight):

- typing errors: a letter or digit inserted, deleted, substituted (keyboard
  neighbours more often) or two neighbours transposed; OCR confusions
  (``rn``/``m``, ``l``/``1``, ``o``/``0``); phonetic spellings (``ph``/``f``,
  ``ck``/``k``, doubled letters);
- missing values, given name and surname swapped, a nickname or a shortened
  name;
- street types abbreviated (``street``/``st``), address words swapped;
- dates of birth with a digit mistyped (sometimes giving an invalid date such
  as ``19801332``), two digits transposed, or day and month swapped;
- national ids with one digit mistyped or two neighbouring digits swapped;
- a move: a new street number, street, unit, suburb and postcode (the state
  kept four times in five);
- and, across persons, households: some persons share an address (half of
  them also the surname) with another person, the over-merge trap.

:func:`contract_records` turns the files into ``raw_identity_records`` rows
(address parts joined into ``address``, ``state`` as ``region``, the id as
``id_national``), as a mapping query would stage them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import numpy as np
import pandas as pd

LAYOUTS = ("two_files", "one_file")
FIELDS = ("given_name", "surname", "street_number", "address_1", "address_2", "suburb", "postcode", "state",
          "date_of_birth", "soc_sec_id")
#: How often a modification hits each field (normalised).
FIELD_WEIGHTS = {"given_name": 0.18, "surname": 0.15, "street_number": 0.08, "address_1": 0.12, "address_2": 0.06,
                 "suburb": 0.10, "postcode": 0.08, "state": 0.03, "date_of_birth": 0.10, "soc_sec_id": 0.10}
#: Share of duplicates with 1, 2, 3, 4, 5 modifications.
MODIFICATIONS_PER_RECORD = (0.40, 0.30, 0.17, 0.09, 0.04)
#: Share of duplicates whose person moved (a new address besides the modifications).
MOVE_SHARE = 0.05
#: Share of persons living with another person (same address; half also share the surname).
HOUSEHOLD_SHARE = 0.05
STATES = ("nsw", "vic", "qld", "wa", "sa", "tas", "act", "nt")
STATE_SHARES = (0.32, 0.26, 0.20, 0.10, 0.07, 0.02, 0.02, 0.01)
STREET_TYPES = ("street", "road", "avenue", "place", "crescent", "circuit", "drive", "close", "court", "parade")
ABBREVIATIONS = {"street": "st", "road": "rd", "avenue": "ave", "place": "pl", "crescent": "cres",
                 "circuit": "cct", "drive": "dr", "close": "cl", "court": "ct", "parade": "pde"}
BUILDINGS = ("villa", "court", "gardens", "house", "lodge", "manor", "park", "towers", "village", "retirement home")
NICKNAMES = {"william": "bill", "robert": "bob", "elizabeth": "liz", "margaret": "maggie", "james": "jim",
             "katherine": "kate", "richard": "dick", "thomas": "tom", "jennifer": "jenny", "michael": "mick",
             "christopher": "chris", "alexander": "alex", "rebecca": "becky", "samuel": "sam", "joseph": "joe",
             "matthew": "matt", "benjamin": "ben", "daniel": "dan", "patricia": "trish", "susan": "sue"}
_GIVEN = ("james william robert elizabeth margaret katherine richard thomas jennifer michael christopher "
          "alexander rebecca samuel joseph matthew benjamin daniel patricia susan emily jack olivia lachlan "
          "chloe joshua isabella ryan jessica liam sophie noah grace ethan hannah lucas zoe mia charlotte "
          "harry ella oscar ruby mitchell amelia jordan lily nathan georgia tyler sienna blake madison").split()
_SURNAME = ("smith jones williams brown wilson taylor johnson white martin anderson thompson nguyen thomas "
            "walker harris lee ryan robinson kelly king davis wright evans roberts green hall wood jackson "
            "clarke patel khan lewis james phillips mitchell campbell murphy bailey cooper parker miller "
            "young allen scott stewart turner edwards morris").split()
_ONSETS = ("b bl br c ch cl cr d dr f fl fr g gl gr h j k kl l m n p pl pr r s sh sk sl sm st sw t th tr v w y z "
           "").split(" ")
_NUCLEI = "a e i o u ai ea ee ie oo ou ay ey".split()
_CODAS = ("n r l s t m d k th ng nd rd st rt ll ss ck nt".split() + [""] * 4)
_SUBURB_ENDS = ("ville", "field", "ton", " heights", " park", "wood", "dale", " hill", "vale", "bury", " creek",
                " beach", "brook", "ford", " north", " west")
_OCR = (("rn", "m"), ("m", "rn"), ("l", "1"), ("o", "0"), ("i", "l"), ("cl", "d"), ("vv", "w"))
_PHONETIC = (("ph", "f"), ("f", "ph"), ("ck", "k"), ("c", "k"), ("ie", "y"), ("y", "ie"), ("ll", "l"),
             ("tt", "t"), ("ee", "ea"), ("s", "z"), ("ou", "ow"), ("th", "t"))
_KEYBOARD = {c: n for c, n in zip("qwertyuiopasdfghjklzxcvbnm",
                                  ("wa qes wrd eft rgy tuh yij uko ilp o asq wsdz edfx rfgc tghv yhjb ujkn ikml olk "
                                   "asx zdcs xfvd cgbf vhng bjm nk").split(), strict=True)}


def _syllable_words(rng: np.random.Generator, count: int, syllables: tuple[int, int]) -> list[str]:
    """``count`` distinct pronounceable words of ``syllables`` (min, max) syllables."""
    out: dict[str, None] = {}
    while len(out) < count:
        k = int(rng.integers(syllables[0], syllables[1] + 1))
        word = "".join(str(rng.choice(_ONSETS)) + str(rng.choice(_NUCLEI)) for _ in range(k)) + str(rng.choice(_CODAS))
        if len(word) >= 3:
            out[word] = None
    return list(out)


def _zipf_pick(rng: np.random.Generator, values: list[str], size: int, exponent: float = 1.0) -> np.ndarray:
    """``size`` draws from ``values`` with frequency proportional to rank^-exponent."""
    weights = 1.0 / np.arange(1, len(values) + 1) ** exponent
    return np.array(values, dtype=object)[rng.choice(len(values), size=size, p=weights / weights.sum())]


# -- errors on one value ----------------------------------------------------------
def _typo(rng: np.random.Generator, value: str) -> str:
    """Insert, delete, substitute (keyboard neighbours twice as often) or transpose one character."""
    if len(value) < 2:
        return value + str(rng.choice(list("aeiou")))
    j = int(rng.integers(0, len(value)))
    kind = rng.random()
    digits = value.isdigit()
    alphabet = "0123456789" if digits else "abcdefghijklmnopqrstuvwxyz"
    if kind < 0.25:  # insert
        return value[:j] + str(rng.choice(list(alphabet))) + value[j:]
    if kind < 0.45 and len(value) > 3:  # delete
        return value[:j] + value[j + 1:]
    if kind < 0.75:  # substitute
        near = _KEYBOARD.get(value[j]) if not digits and rng.random() < 0.67 else None
        new = str(rng.choice(list(near))) if near else str(rng.choice([c for c in alphabet if c != value[j]]))
        return value[:j] + new + value[j + 1:]
    j = min(j, len(value) - 2)  # transpose two neighbours
    return value[:j] + value[j + 1] + value[j] + value[j + 2:] if value[j] != value[j + 1] else value[:j] + value[j + 1:]


def _replace_one(rng: np.random.Generator, value: str, table: tuple[tuple[str, str], ...]) -> str:
    hits = [(a, b) for a, b in table if a in value]
    if not hits:
        return _typo(rng, value)
    a, b = hits[int(rng.integers(0, len(hits)))]
    return value.replace(a, b, 1)


def _digit_typo(rng: np.random.Generator, value: str) -> str:
    j = int(rng.integers(0, len(value)))
    return value[:j] + str((int(value[j]) + int(rng.integers(1, 10))) % 10) + value[j + 1:]


def _transpose_digits(rng: np.random.Generator, value: str) -> str:
    """Two neighbouring, different characters swapped (a substitution when all are equal)."""
    spots = [j for j in range(len(value) - 1) if value[j] != value[j + 1]]
    if not spots:
        return _digit_typo(rng, value)
    j = spots[int(rng.integers(0, len(spots)))]
    return value[:j] + value[j + 1] + value[j] + value[j + 2:]


def _name_error(rng: np.random.Generator, value: str) -> str:
    u = rng.random()
    if u < 0.55:
        return _typo(rng, value)
    if u < 0.65:
        return _replace_one(rng, value, _OCR)
    if u < 0.85:
        return _replace_one(rng, value, _PHONETIC)
    if value in NICKNAMES:
        return NICKNAMES[value]
    return value[: max(3, len(value) - int(rng.integers(1, 3)))]  # shortened


def _street_error(rng: np.random.Generator, value: str) -> str:
    words = value.split()
    u = rng.random()
    if u < 0.35 and words[-1] in ABBREVIATIONS:
        return " ".join([*words[:-1], ABBREVIATIONS[words[-1]]])
    if u < 0.45 and len(words) > 1:
        return " ".join(words[::-1])
    if u < 0.55:
        return _replace_one(rng, value, _PHONETIC)
    return _typo(rng, value)


def _date_error(rng: np.random.Generator, value: str) -> str:
    u = rng.random()
    if u < 0.35:
        return value[:4] + _digit_typo(rng, value[4:])  # month or day digit: may be invalid
    if u < 0.45:
        return _digit_typo(rng, value[:4])[:4] + value[4:]  # a year digit
    if u < 0.75:
        return _transpose_digits(rng, value)
    if value[4:6] != value[6:] and int(value[6:]) <= 12:
        return value[:4] + value[6:] + value[4:6]  # day and month swapped
    return _transpose_digits(rng, value)


def _id_error(rng: np.random.Generator, value: str) -> str:
    return _digit_typo(rng, value) if rng.random() < 0.45 else _transpose_digits(rng, value)


_ERRORS: dict[str, Callable[[np.random.Generator, str], str]] = {
    "given_name": _name_error, "surname": _name_error, "suburb": _name_error,
    "street_number": lambda rng, v: _digit_typo(rng, v) if rng.random() < 0.6 else _transpose_digits(rng, v),
    "address_1": _street_error, "address_2": _street_error,
    "postcode": lambda rng, v: _digit_typo(rng, v) if rng.random() < 0.7 else _transpose_digits(rng, v),
    "date_of_birth": _date_error, "soc_sec_id": _id_error,
}
#: Chance that a modification of a field blanks it instead of altering it.
_MISSING = {"given_name": 0.12, "surname": 0.08, "street_number": 0.3, "address_1": 0.15, "address_2": 0.6,
            "suburb": 0.2, "postcode": 0.2, "state": 0.5, "date_of_birth": 0.15, "soc_sec_id": 0.15}


class _Places:
    """Suburbs (each with a postcode and a state) and street names, drawn once per generator."""

    def __init__(self, rng: np.random.Generator, persons: int) -> None:
        n_suburbs = int(np.clip(persons // 4, 200, 6000))
        stems = _syllable_words(rng, n_suburbs, (1, 2))
        self.suburb = np.array([s + str(rng.choice(_SUBURB_ENDS)) for s in stems], dtype=object)
        self.state = np.array(STATES, dtype=object)[rng.choice(len(STATES), n_suburbs, p=STATE_SHARES)]
        base = {"nsw": 2000, "act": 2600, "vic": 3000, "qld": 4000, "sa": 5000, "wa": 6000, "tas": 7000, "nt": 800}
        # Postcodes cluster by state; a few suburbs share one.
        self.postcode = np.array([f"{base[s] + int(rng.integers(0, 900)):04d}" for s in self.state], dtype=object)
        self.weights = 1.0 / np.arange(1, n_suburbs + 1) ** 0.8
        self.weights /= self.weights.sum()
        self.streets = _syllable_words(rng, int(np.clip(persons // 2, 500, 40000)), (1, 3))

    def draw(self, rng: np.random.Generator, size: int) -> dict[str, np.ndarray]:
        idx = rng.choice(len(self.suburb), size=size, p=self.weights)
        street = _zipf_pick(rng, self.streets, size, 0.6)
        kind = np.array(STREET_TYPES, dtype=object)[rng.integers(0, len(STREET_TYPES), size)]
        unit = rng.random(size)
        address_2 = np.where(unit < 0.2, [f"unit {k}" for k in rng.integers(1, 40, size)],
                             np.where(unit < 0.35, [f"{w} {b}" for w, b in zip(
                                 _zipf_pick(rng, self.streets, size), rng.choice(BUILDINGS, size), strict=True)],
                                      None))
        return {
            "street_number": np.char.mod("%d", np.clip(rng.lognormal(3.2, 1.0, size), 1, 999).astype(int)).astype(object),
            "address_1": np.array([f"{s} {k}" for s, k in zip(street, kind, strict=True)], dtype=object),
            "address_2": address_2.astype(object),
            "suburb": self.suburb[idx], "postcode": self.postcode[idx], "state": self.state[idx],
        }


def _originals(rng: np.random.Generator, n: int, places: _Places) -> pd.DataFrame:
    given_pool = _GIVEN + _syllable_words(rng, max(500, n // 5), (1, 3))
    surname_pool = _SURNAME + _syllable_words(rng, max(1000, n // 2), (2, 3))
    frame = pd.DataFrame({
        "person_id": np.arange(n, dtype=np.int64),
        "given_name": _zipf_pick(rng, given_pool, n, 0.9),
        "surname": _zipf_pick(rng, surname_pool, n, 0.8),
        **places.draw(rng, n),
    })
    born = np.datetime64("1930-01-01") + rng.integers(0, 365 * 75, n).astype("timedelta64[D]")
    frame["date_of_birth"] = pd.Series(born).dt.strftime("%Y%m%d").to_numpy(dtype=object)
    frame["soc_sec_id"] = np.char.mod("%07d", rng.choice(9_000_000, n, replace=False) + 1_000_000).astype(object)
    house = np.flatnonzero(rng.random(n) < HOUSEHOLD_SHARE)
    partner = rng.integers(0, n, len(house))
    for col in ("street_number", "address_1", "address_2", "suburb", "postcode", "state"):
        frame.loc[house, col] = frame[col].to_numpy()[partner]
    same_name = rng.random(len(house)) < 0.5
    frame.loc[house[same_name], "surname"] = frame["surname"].to_numpy()[partner[same_name]]
    # Originals are not clean either: a few fields are missing at the source.
    for col, rate in (("given_name", 0.02), ("surname", 0.01), ("street_number", 0.03), ("address_1", 0.02),
                      ("suburb", 0.01), ("postcode", 0.01), ("state", 0.01), ("date_of_birth", 0.02),
                      ("soc_sec_id", 0.01)):
        frame.loc[rng.random(n) < rate, col] = None
    return frame


def _duplicate(rng: np.random.Generator, original: dict, places: _Places) -> dict:
    """One modified copy of ``original`` (see the module docstring)."""
    rec = dict(original)
    if rng.random() < MOVE_SHARE:
        moved = {k: v[0] for k, v in places.draw(rng, 1).items()}
        if rng.random() < 0.8 and isinstance(original["state"], str):
            moved["state"] = original["state"]
        rec.update(moved)
    fields = list(FIELD_WEIGHTS)
    weights = np.array([FIELD_WEIGHTS[f] for f in fields])
    count = int(rng.choice(len(MODIFICATIONS_PER_RECORD), p=MODIFICATIONS_PER_RECORD)) + 1
    done: dict[str, int] = {}
    for _ in range(count):
        free = np.array([done.get(f, 0) < 2 for f in fields])
        field = fields[int(rng.choice(len(fields), p=weights * free / (weights * free).sum()))]
        done[field] = done.get(field, 0) + 1
        value = rec[field]
        if field in ("given_name", "surname") and rng.random() < 0.08:
            rec["given_name"], rec["surname"] = rec["surname"], rec["given_name"]
        elif not isinstance(value, str) or rng.random() < _MISSING[field]:
            rec[field] = None
        elif field == "state":
            rec[field] = str(rng.choice([s for s in STATES if s != value]))
        else:
            rec[field] = _ERRORS[field](rng, str(value))
    return rec


def person_files(persons: int, *, layout: str = "two_files", seed: int = 5,
                 start: dt.date = dt.date(2024, 1, 1)) -> pd.DataFrame:
    """Person records in parts with planted duplicates; one row per record, ``person_id`` is the truth.

    Parameters
    ----------
    persons
        Number of persons (originals).
    layout
        ``two_files`` (file A: originals, file B: one duplicate each) or
        ``one_file`` (originals and 0-5 duplicates each, 1.5 per person on average).
    seed
        Seed of every draw.
    start
        Creation times spread over the year from ``start``; duplicates are created after their original.

    Returns
    -------
    pandas.DataFrame
        ``source_system`` (``file_a``/``file_b`` or ``registry``), ``source_id``,
        the :data:`FIELDS`, ``created_at`` and ``person_id``.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    if persons < 10:
        raise ValueError(f"persons must be at least 10, got {persons}")
    rng = np.random.default_rng(seed)
    places = _Places(rng, persons)
    originals = _originals(rng, persons, places)
    if layout == "two_files":
        copies = np.ones(persons, dtype=int)
    else:
        # Zipf-like: most persons have none or one duplicate, a few up to five.
        copies = rng.choice(6, size=persons, p=(0.20, 0.40, 0.20, 0.10, 0.06, 0.04))
    rows = originals.astype(object).where(originals.notna(), None).to_dict("records")
    dups = [_duplicate(rng, rows[i], places) for i in np.repeat(np.arange(persons), copies)]
    created0 = np.datetime64(start, "s") + (rng.random(persons) * 365 * 86400).astype("timedelta64[s]")
    orig = originals.assign(_created=created0)
    dup = pd.DataFrame(dups, columns=originals.columns)
    lag = (rng.exponential(60, len(dup)) * 86400 + 3600).astype("timedelta64[s]")
    dup["_created"] = created0[dup["person_id"].to_numpy()] + lag
    if layout == "two_files":
        orig["source_system"], dup["source_system"] = "file_a", "file_b"
        orig["source_id"] = [f"a-{i}" for i in range(len(orig))]
        dup["source_id"] = [f"b-{i}" for i in range(len(dup))]
        out = pd.concat([orig, dup], ignore_index=True)
    else:
        out = pd.concat([orig, dup], ignore_index=True)
        out = out.iloc[rng.permutation(len(out))].reset_index(drop=True)
        out["source_system"] = "registry"
        out["source_id"] = [f"r-{i}" for i in range(len(out))]
    out["created_at"] = pd.Series(out.pop("_created")).dt.strftime("%Y-%m-%d %H:%M:%S")
    return out[["source_system", "source_id", *FIELDS, "created_at", "person_id"]]


def contract_records(files: pd.DataFrame, with_id: bool = True) -> pd.DataFrame:
    """``raw_identity_records`` rows of :func:`person_files` output, as a mapping query would stage them.

    The address parts are joined with spaces into ``address`` (street number,
    street, unit or building, suburb; missing parts left out), ``state``
    becomes ``region``, the date of birth stays ``YYYYMMDD`` text (invalid
    dates are extract's to null) and ``soc_sec_id`` becomes ``id_national``
    (left out when ``with_id`` is false). ``person_id`` is kept for scoring.
    """
    parts = files[["street_number", "address_1", "address_2", "suburb"]]
    address = parts.apply(lambda r: " ".join(str(v) for v in r if isinstance(v, str) and v), axis=1)
    out = pd.DataFrame({
        "source_system": files["source_system"], "source_id": files["source_id"],
        "first_name": files["given_name"], "last_name": files["surname"],
        "address": address.where(address != "", None), "postcode": files["postcode"], "region": files["state"],
        "date_of_birth": files["date_of_birth"], "created_at": files["created_at"],
        "loaded_at": files["created_at"], "person_id": files["person_id"],
    })
    if with_id:
        out.insert(9, "id_national", files["soc_sec_id"])
    return out
