"""Demo CDP data generator with planted ground truth.

Simulates a subscription/retail business over ``--years`` years (default 3)
ending at ``--end-date``, for ``--customers`` persons, deterministically by
``--seed``::

    python -m include.demo.generate --customers 5000 --seed 7

What it plants (the ``truth_*`` tables; the pipeline never reads them):

- each person's latent behavioural archetype (:data:`ARCHETYPES`): a small
  high-value core (8% of persons, most of the profit) and a long tail that
  costs more to serve than it earns;
- the person behind every identity record (web, app and call-centre ids with
  typos, missing emails/phones, moved and shared household addresses, several
  ids per person);
- orders after the observation end (``truth_future_orders``), for CLV holdouts;
- the bad rows planted in the raw tables and the reason each should be
  quarantined with (``truth_planted_errors``);
- with a ``policy_date`` (off by default), the effects of the segment playbook
  on the treated, so the lift measurement has a truth to recover (see
  :meth:`DemoGenerator.plant_policy_effects`): ``truth_policy`` per person
  (expected customer key, holdout, effect) and ``truth_policy_changes`` (the
  orders added and the support contacts removed).

Purchases follow a buy-till-you-die process (Fader, Hardie & Lee 2005): a
person buys at their own Poisson rate and, after each purchase, drops out with
their own probability.

Size: one deterministic generator (archetypes, orders, support, usage, email, plans,
identity profiles and noise, truth tables); every table draws from the same person frame and seed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm import tqdm

from include.demo.legacy import legacy_label_tables

log = logging.getLogger(__name__)

SOURCES = ("web", "app", "call_centre")
CHANNELS = ("web", "app", "store")
CATEGORIES = ("grocery", "home", "electronics", "fashion", "beauty")
PLANS = ("basic", "standard", "premium")
REGIONS = ("north", "south", "east", "west", "central")
SUPPORT_COST = {"phone": 8.5, "chat": 3.2, "email": 2.1}
#: What the identity records hold (``--identity-profile``); see :meth:`DemoGenerator.profile_records`.
IDENTITY_PROFILES = ("rich", "person_only", "contact_only")


@dataclass(frozen=True)
class Archetype:
    name: str
    share: float
    weekly_rate: float  # purchases per week while alive
    dropout: float  # probability of dropping out after each purchase
    order_value: float
    discount_prob: float
    discount_depth: float
    return_prob: float
    support_per_year: float
    phone_share: float
    sessions_per_month: float
    open_rate: float
    click_rate: float
    plan_weights: tuple[float, float, float]
    channel_weights: tuple[float, float, float]
    category_weights: tuple[float, float, float, float, float]


ARCHETYPES: tuple[Archetype, ...] = (
    Archetype("high_value_core", 0.08, 0.60, 0.004, 180, 0.08, 0.10, 0.03, 2.0, 0.3, 25, 0.55, 0.20,
              (0.05, 0.25, 0.70), (0.35, 0.50, 0.15), (0.2, 0.2, 0.3, 0.2, 0.1)),
    Archetype("loyal_regular", 0.20, 0.25, 0.008, 55, 0.12, 0.10, 0.05, 1.5, 0.3, 12, 0.35, 0.08,
              (0.20, 0.60, 0.20), (0.40, 0.40, 0.20), (0.4, 0.2, 0.1, 0.2, 0.1)),
    Archetype("big_spender", 0.08, 0.04, 0.03, 320, 0.08, 0.10, 0.06, 1.0, 0.4, 4, 0.25, 0.05,
              (0.20, 0.40, 0.40), (0.50, 0.10, 0.40), (0.05, 0.3, 0.5, 0.1, 0.05)),
    Archetype("discount_driven", 0.14, 0.15, 0.015, 45, 0.80, 0.35, 0.20, 2.0, 0.3, 6, 0.45, 0.15,
              (0.50, 0.45, 0.05), (0.60, 0.30, 0.10), (0.2, 0.2, 0.1, 0.4, 0.1)),
    Archetype("lapsed", 0.15, 0.20, 0.35, 60, 0.20, 0.15, 0.07, 1.5, 0.4, 3, 0.10, 0.01,
              (0.40, 0.50, 0.10), (0.40, 0.30, 0.30), (0.3, 0.2, 0.2, 0.2, 0.1)),
    Archetype("costly_tail", 0.35, 0.08, 0.02, 25, 0.30, 0.20, 0.15, 7.0, 0.75, 2, 0.12, 0.02,
              (0.80, 0.20, 0.00), (0.20, 0.10, 0.70), (0.5, 0.2, 0.05, 0.15, 0.1)),
)

FIRST_NAMES = (
    "james mary john patricia robert jennifer michael linda william elizabeth david barbara "
    "richard susan joseph jessica thomas sarah charles karen chris lisa daniel nancy matthew "
    "betty anthony margaret mark sandra donald ashley steven kimberly paul emily andrew donna "
    "joshua michelle kenneth carol kevin amanda brian dorothy george melissa timothy deborah "
    "ronald stephanie edward rebecca jason sharon jeffrey laura ryan cynthia jacob kathleen"
).split()
LAST_NAMES = (
    "smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez lopez "
    "gonzalez wilson anderson thomas taylor moore jackson martin lee perez thompson white harris "
    "sanchez clark ramirez lewis robinson walker young allen king wright scott torres nguyen hill "
    "flores green adams nelson baker hall rivera campbell mitchell carter roberts gomez phillips "
    "evans turner diaz parker cruz edwards collins reyes stewart morris morales murphy cook rogers "
    "gutierrez ortiz morgan cooper peterson bailey reed kelly howard ramos kim cox ward richardson"
).split()
STREETS = (
    "high street|station road|main street|park road|church lane|victoria road|green lane|"
    "manor road|church street|park avenue|queens road|new road|grange road|kings road|mill lane"
).split("|")
EMAIL_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "icloud.com", "proton.me")


def _typo(rng: np.random.Generator, words: np.ndarray, rate: float) -> np.ndarray:
    """Swap two adjacent letters or drop one in a ``rate`` share of ``words``."""
    out = words.astype(object).copy()
    hit = np.flatnonzero(rng.random(len(out)) < rate)
    for i in hit:
        w = out[i]
        if not isinstance(w, str) or len(w) < 4:
            continue
        j = int(rng.integers(1, len(w) - 2))
        out[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:] if rng.random() < 0.6 else w[:j] + w[j + 1:]
    return out


_STREET_PARTS = ("ash", "bar", "beech", "brook", "church", "elm", "fern", "glen", "hazel", "holly", "king", "lark",
                 "maple", "mill", "oak", "park", "queen", "rose", "stone", "thorn", "wood", "york", "west", "north")
_STREET_ENDS = ("field", "ford", "gate", "ham", "hill", "hurst", "ley", "mead", "moor", "ton", "wick", "well")
_STREET_TYPES = ("road", "street", "lane", "avenue", "close", "drive", "way", "grove")


def _street_names(rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` distinct street names such as ``oakfield drive`` (24 x 12 x 8 possible)."""
    every = np.array([f"{a}{b} {c}" for a in _STREET_PARTS for b in _STREET_ENDS for c in _STREET_TYPES])
    return rng.permutation(every)[:count]


def _fmt_ts(values: np.ndarray) -> np.ndarray:
    return pd.Series(values).dt.strftime("%Y-%m-%d %H:%M:%S").to_numpy(dtype=object)


@dataclass(frozen=True)
class PolicyEffects:
    """Effects the playbook has on treated persons from ``policy_date`` on (holdouts get none).

    Who is treated: the generator computes each person's expected customer key
    as the identity stage does (:func:`include.identity.resolve.customer_key_for`
    of the person's earliest record by creation time, ties by ``system:id``)
    and the holdout of :func:`include.experiment.holdout.holdout_draw` under
    ``experiment_name`` and ``holdout_share``.

    Attributes
    ----------
    policy_date
        First day the treatment acts (the day after the policy's first run).
    retention_effect
        Added repeat retention of treated ``retention_archetype`` persons, in
        points (0.06: the seeds' "top-segment retention improved 6 points"),
        over ``retention_window_days`` windows ending after the policy date.
        Planted by keeping a share of them buying: from the policy date on, a
        kept person with no order of their own in a block of
        ``min(28, retention_window_days // 2)`` days gets one. The share kept is
        ``retention_effect / (1 - baseline retention)`` of the archetype, so
        the effect on the metric is the one asked for, at most ``1 - baseline``
        (``truth_policy.retention_effect_planted`` says what was planted).
    cost_effect
        Relative cut of support contacts (and so of support cost-to-serve) of
        treated ``cost_archetypes`` persons from the policy date (0.18: the
        seeds' "service costs fell 18%"): each later contact is removed with
        this probability.
    """

    policy_date: dt.date
    retention_effect: float = 0.06
    cost_effect: float = 0.18
    retention_archetype: str = "high_value_core"
    cost_archetypes: tuple[str, ...] = ("costly_tail",)
    experiment_name: str = "segment-playbook"
    holdout_share: float = 0.10
    retention_window_days: int = 90

    def __post_init__(self) -> None:
        if not 0.0 <= self.retention_effect < 1.0:
            raise ValueError(f"retention_effect must be in [0, 1), got {self.retention_effect}")
        if not 0.0 <= self.cost_effect <= 1.0:
            raise ValueError(f"cost_effect must be in [0, 1], got {self.cost_effect}")
        if not 0.0 <= self.holdout_share < 1.0:
            raise ValueError(f"holdout_share must be in [0, 1), got {self.holdout_share}")


def expected_customer_keys(records: pd.DataFrame) -> pd.Series:
    """Person id -> the customer key the identity stage gives a perfectly resolved person.

    The key of a cluster is :func:`~include.identity.resolve.customer_key_for`
    its earliest record (creation time, ties by ``system:id``). ``records``
    needs ``person_id``, ``source_system``, ``source_id`` and ``_created``.
    """
    from include.identity.resolve import customer_key_for

    member = records["source_system"].astype(str) + ":" + records["source_id"].astype(str)
    first = (records.assign(_member=member).sort_values(["_created", "_member"], kind="stable")
             .drop_duplicates("person_id"))
    return pd.Series([customer_key_for(m) for m in first["_member"]], index=first["person_id"].to_numpy())


class DemoGenerator:
    """Generate the raw CDP tables and the ground truth as DataFrames.

    Parameters
    ----------
    customers
        Number of persons (the identity records are about 1.8 per person).
    seed
        Seed of every random draw: the same seed gives identical tables.
    end_date
        Last day of observed data; orders up to a year later go to
        ``truth_future_orders``.
    years
        Length of the observed history.
    identity_profile
        Which identifiers the identity records carry (:data:`IDENTITY_PROFILES`).
    archetypes
        The behavioural archetypes and their shares (default :data:`ARCHETYPES`);
        benchmarks pass variants (another core share, one archetype left out).
    policy
        Planted effects of the segment playbook from a date on
        (:class:`PolicyEffects`); ``None`` (default) plants nothing and the
        output is exactly what it was before this option existed.
    """

    def __init__(self, customers: int, seed: int = 7, end_date: dt.date = dt.date(2026, 11, 14),
                 years: float = 3.0, future_days: int = 365, chunk_size: int = 50_000,
                 identity_profile: str = "rich", archetypes: tuple[Archetype, ...] = ARCHETYPES,
                 policy: PolicyEffects | None = None) -> None:
        if customers < 10:
            raise ValueError("customers must be at least 10")
        if identity_profile not in IDENTITY_PROFILES:
            raise ValueError(f"identity_profile must be one of {', '.join(IDENTITY_PROFILES)}, "
                             f"got {identity_profile!r}")
        if not archetypes:
            raise ValueError("archetypes must name at least one archetype")
        self.identity_profile = identity_profile
        self.archetypes = tuple(archetypes)
        self.policy = policy
        if policy is not None:
            known = {a.name for a in self.archetypes}
            unknown = sorted({policy.retention_archetype, *policy.cost_archetypes} - known)
            if unknown:
                raise ValueError(f"policy names unknown archetype(s) {unknown}; known: {sorted(known)}")
        self.n = customers
        self.seed = seed
        self.end = np.datetime64(end_date, "s") + np.timedelta64(86399, "s")
        self.start = np.datetime64(end_date - dt.timedelta(days=int(365.25 * years)), "s")
        self.future_end = self.end + np.timedelta64(future_days * 86400, "s")
        self.chunk_size = chunk_size
        self.rng = np.random.default_rng(seed)

    # -- persons ---------------------------------------------------------
    def persons(self) -> pd.DataFrame:
        rng, n = self.rng, self.n
        archetypes = self.archetypes
        shares = np.array([a.share for a in archetypes])
        arche = rng.choice(len(archetypes), size=n, p=shares / shares.sum())
        span = (self.end - self.start).astype(np.int64) - 14 * 86400
        # Lapsed persons joined in the first two thirds of the window, so they had time to leave.
        lapsed = np.array([a.name == "lapsed" for a in archetypes])[arche]
        frac = np.where(lapsed, rng.random(n) * 0.5, rng.random(n) ** 1.3)
        birth = self.start + (frac * span).astype("timedelta64[s]")
        rate = np.array([a.weekly_rate for a in archetypes])[arche] * rng.gamma(6.0, 1 / 6.0, n)
        p = np.array([a.dropout for a in archetypes])[arche]
        dropout = np.clip(rng.beta(4.0, 4.0 * (1 - p) / p), 1e-4, 0.95)
        aov = np.array([a.order_value for a in archetypes])[arche] * rng.lognormal(0, 0.2, n)
        region = rng.choice(len(REGIONS), size=n, p=[0.22, 0.2, 0.18, 0.15, 0.25])
        return pd.DataFrame({
            "person_id": np.arange(n, dtype=np.int64),
            "archetype": np.array([a.name for a in archetypes])[arche],
            "archetype_idx": arche,
            "birth_at": birth,
            "purchase_rate_per_week": rate,
            "dropout_prob": dropout,
            "mean_order_value": aov,
            "region": np.array(REGIONS)[region],
        })

    # -- identity ----------------------------------------------------------
    def identity_records(self, persons: pd.DataFrame) -> pd.DataFrame:
        rng, n = self.rng, self.n
        first = np.array(FIRST_NAMES)[rng.integers(0, len(FIRST_NAMES), n)]
        last = np.array(LAST_NAMES)[rng.integers(0, len(LAST_NAMES), n)]
        house_no = rng.integers(1, 300, n)
        street = np.array(STREETS)[rng.integers(0, len(STREETS), n)]
        postcode_n = rng.integers(0, 20_000, n)
        phone_n = rng.integers(0, 10**9, n)
        # Households: 6% of persons live with another person (same address, often same
        # surname, sometimes a shared landline): the classic over-merge trap.
        house = np.flatnonzero(rng.random(n) < 0.06)
        partner = rng.integers(0, n, len(house))
        house_no[house], street[house], postcode_n[house] = house_no[partner], street[partner], postcode_n[partner]
        same_name = rng.random(len(house)) < 0.5
        last[house[same_name]] = last[partner[same_name]]
        shared_phone = rng.random(len(house)) < 0.2
        phone_n[house[shared_phone]] = phone_n[partner[shared_phone]]
        dob = np.datetime64("1950-01-01") + rng.integers(0, 365 * 55, n).astype("timedelta64[D]")
        email_user = np.char.add(np.char.add(first.astype(str), "."), last.astype(str))
        email_user = np.char.add(email_user, np.where(rng.random(n) < 0.5, rng.integers(1, 99, n).astype(str), ""))
        domain = np.array(EMAIL_DOMAINS)[rng.integers(0, 5, n)]
        # An address belongs to one person: a namesake who drew the same address
        # gets the person number appended, as mail providers force a new username.
        taken = pd.Series(np.char.add(np.char.add(email_user, "@"), domain)).duplicated().to_numpy()
        email_user = np.where(taken, np.char.add(email_user, np.arange(n).astype(str)), email_user)
        email = np.char.add(np.char.add(email_user, "@"), domain)
        device = np.char.add("dev-", rng.integers(10**11, 10**12, n).astype(str))
        moved = rng.random(n) < 0.08

        has = np.stack([rng.random(n) < 0.85, rng.random(n) < 0.55, rng.random(n) < 0.35], axis=1)
        has[~has.any(axis=1), 0] = True
        second_web = rng.random(n) < 0.05
        rows = []
        for s_idx, system in enumerate(SOURCES):
            who = np.flatnonzero(has[:, s_idx])
            if system == "web":
                who = np.concatenate([who, np.flatnonzero(second_web & has[:, 0])])
            rows.append(pd.DataFrame({"person_id": who, "source_system": system}))
        rec = pd.concat(rows, ignore_index=True)
        m = len(rec)
        pid = rec["person_id"].to_numpy()
        system = rec["source_system"].to_numpy()
        prefix = {"web": "W", "app": "A", "call_centre": "C"}
        ids = np.empty(m, dtype=object)
        for s in SOURCES:
            sel = np.flatnonzero(system == s)
            nums = rng.permutation(10 * m)[: len(sel)] + 10_000_000
            ids[sel] = [f"{prefix[s]}{x}" for x in nums]
        birth = persons["birth_at"].to_numpy()[pid]
        lag = (rng.exponential(40, m) * 86400).astype("timedelta64[s]")
        # Each person's first record exists from sign-up; half of the others appear later.
        first_rec = ~pd.Series(pid).duplicated().to_numpy()
        later_rec = ~first_rec & (rng.random(m) < 0.5)
        created = np.minimum(birth + np.where(later_rec, lag, np.timedelta64(0, "s")), self.end)
        miss = {"web": (0.05, 0.35, 0.40), "app": (0.25, 0.20, 0.60), "call_centre": (0.45, 0.03, 0.10)}
        email_r, phone_r, dob_r = (np.array([miss[s][k] for s in system]) for k in range(3))
        e = email[pid].astype(object)
        e[rng.random(m) < email_r] = None
        ph = phone_n[pid].copy()
        # Some persons change number: their later records carry the new one.
        new_number = later_rec & (rng.random(m) < 0.06)
        ph[new_number] = rng.integers(0, 10**9, int(new_number.sum()))
        phone_fmt = np.where(
            system == "web", np.char.add("+44 7", np.char.zfill(ph.astype(str), 9)),
            np.where(system == "app", np.char.add("07", np.char.zfill(ph.astype(str), 9)),
                     np.char.add("(07) ", np.char.zfill(ph.astype(str), 9))))
        phone = phone_fmt.astype(object)
        phone[rng.random(m) < phone_r] = None
        d = dob[pid].astype(object)
        d[rng.random(m) < dob_r] = None
        addr_no = house_no[pid].copy()
        post = postcode_n[pid].copy()
        later = moved[pid] & (created > birth)
        addr_no[later] = rng.integers(1, 300, later.sum())
        post[later] = rng.integers(0, 20_000, later.sum())
        dev = np.where(np.isin(system, ["app", "web"]) & (rng.random(m) < np.where(system == "app", 0.95, 0.4)),
                       device[pid], None)
        region = persons["region"].to_numpy()[pid]
        frame = pd.DataFrame({
            "source_system": system,
            "source_id": ids,
            "first_name": _typo(rng, first[pid], 0.05),
            "last_name": _typo(rng, last[pid], 0.04),
            "email": _typo(rng, e, 0.01),
            "phone": phone,
            "address": [f"{a} {s}" for a, s in zip(addr_no, street[pid], strict=True)],
            "postcode": [f"{r[0].upper()}{x // 1000:02d} {x % 1000:03d}" for r, x in zip(region, post, strict=True)],
            "date_of_birth": d,
            "device_id": dev,
            "region": region,
            "created_at": _fmt_ts(created),
            "loaded_at": _fmt_ts(created + np.timedelta64(3600, "s")),
            "person_id": pid,
        })
        frame["_created"] = created
        # Person-level values before typos and gaps, for the other identity profiles.
        self._identity_truth = {"first": first, "last": last, "dob": dob}
        return frame

    def profile_records(self, records: pd.DataFrame) -> pd.DataFrame:
        """The identity records as a business with ``identity_profile`` would hold them.

        ``rich`` returns ``records`` unchanged. ``person_only`` keeps names,
        street address, postcode, region and creation times, re-draws the
        errors a registration file has (see :meth:`_person_only`) and adds a
        national id (``id_national``) and a ``YYYYMMDD`` date of birth; there is
        no email, phone or device id. ``contact_only`` keeps first name, email,
        phone and device id (a mailing list or app audience). Other tables of
        the run (orders, activity) are the same for every profile. Uses its own
        random stream, so the rich tables do not depend on the profile.
        """
        if self.identity_profile == "rich":
            return records
        if self.identity_profile == "contact_only":
            keep = ["source_system", "source_id", "first_name", "email", "phone", "device_id", "region",
                    "created_at", "loaded_at"]
            return records[keep + [c for c in ("person_id", "_created") if c in records.columns]].copy()
        return self._person_only(records)

    def _person_only(self, records: pd.DataFrame) -> pd.DataFrame:
        """Person-only records: typos, first/last name swaps, missing fields, mistyped dates and ids.

        Street names are local to a postcode area (see the comment below).
        Error rates per record: first name 4% typo and 2% missing, last name 4%
        typo and 1% missing, names swapped 1.5%, street address 3% typo and 5%
        missing, postcode 1% mistyped character and 4% missing, date of birth
        7% missing and 3% mistyped (two digits transposed, or day and month
        swapped), national id on 70% of records with 0.5% of those one digit off.
        """
        rng = np.random.default_rng([self.seed, 13])
        truth = self._identity_truth
        pid = records["person_id"].to_numpy()
        m = len(records)

        def blank(values: np.ndarray, rate: float) -> np.ndarray:
            out = values.astype(object).copy()
            out[rng.random(m) < rate] = None
            return out

        # Street names: the rich profile's 15 streets repeat in every postcode area, so at
        # 500,000 records thousands of namesakes share "12 high street". A street belongs to
        # its area here: each (postcode, street) gets one of 3,000 street names, so
        # household members still share an address and a person who moved gets a new one.
        area_street = records["postcode"].astype(str) + "|" + records["address"].str.split(" ", n=1).str[1]
        code, _ = pd.factorize(area_street)
        pool = _street_names(np.random.default_rng([self.seed, 14]), 3000)
        house_no = records["address"].str.split(" ", n=1).str[0].to_numpy()
        local = pool[rng.integers(0, len(pool), code.max() + 1)][code]
        records = records.assign(address=np.char.add(np.char.add(house_no.astype(str), " "), local.astype(str)))
        first = _typo(rng, truth["first"][pid], 0.04)
        last = _typo(rng, truth["last"][pid], 0.04)
        swap = rng.random(m) < 0.015
        first[swap], last[swap] = last[swap], first[swap]
        address = _typo(rng, records["address"].to_numpy(), 0.03)
        postcode = records["postcode"].to_numpy().astype(object).copy()
        bad_pc = np.flatnonzero(rng.random(m) < 0.01)
        for i in bad_pc:
            code = postcode[i]
            j = int(rng.integers(1, len(code)))
            if code[j].isdigit():
                postcode[i] = code[:j] + str((int(code[j]) + 1 + int(rng.integers(0, 8))) % 10) + code[j + 1:]
        dob = pd.Series(truth["dob"][pid]).dt.strftime("%Y%m%d").to_numpy(dtype=object)
        for i in np.flatnonzero(rng.random(m) < 0.03):
            d = dob[i]
            if rng.random() < 0.5 and int(d[6:]) <= 12 and d[4:6] != d[6:]:
                dob[i] = d[:4] + d[6:] + d[4:6]  # day and month swapped
            else:
                j = int(rng.integers(2, 7))
                dob[i] = d[:j] + d[j + 1] + d[j] + d[j + 2:]  # two digits transposed
        # UK National Insurance number shape: two letters, six digits, a suffix letter.
        n_persons = len(truth["first"])
        letters = np.array(list("ABCEGHJKLMNPRSTWXYZ"))
        # Distinct per person: drawn without replacement from every prefix and number.
        code = rng.choice(len(letters) ** 2 * 10**6, n_persons, replace=False)
        prefix = np.char.add(letters[code // 10**6 // len(letters)], letters[code // 10**6 % len(letters)])
        national = np.char.add(np.char.add(prefix, np.char.zfill((code % 10**6).astype(str), 6)),
                               np.array(list("ABCD"))[rng.integers(0, 4, n_persons)]).astype(object)[pid]
        for i in np.flatnonzero(rng.random(m) < 0.005):
            j = int(rng.integers(2, 8))
            national[i] = national[i][:j] + str((int(national[i][j]) + 1) % 10) + national[i][j + 1:]
        frame = pd.DataFrame({
            "source_system": records["source_system"].to_numpy(),
            "source_id": records["source_id"].to_numpy(),
            "first_name": blank(first, 0.02),
            "last_name": blank(last, 0.01),
            "address": blank(address, 0.05),
            "postcode": blank(postcode, 0.04),
            "region": records["region"].to_numpy(),
            "date_of_birth": blank(dob, 0.07),
            "id_national": blank(national, 0.30),
            "created_at": records["created_at"].to_numpy(),
            "loaded_at": records["loaded_at"].to_numpy(),
        })
        for col in ("person_id", "_created"):
            if col in records.columns:
                frame[col] = records[col].to_numpy()
        return frame

    # -- orders ------------------------------------------------------------
    def orders(self, persons: pd.DataFrame, records: pd.DataFrame, progress: tqdm) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Buy-till-you-die orders: returns (observed orders, future orders)."""
        rng = self.rng
        observed, future = [], []
        primary = self._records_by_channel(records)
        for lo in range(0, self.n, self.chunk_size):
            chunk = persons.iloc[lo: lo + self.chunk_size]
            k = len(chunk)
            birth = chunk["birth_at"].to_numpy()
            span_days = (self.future_end - birth).astype(np.int64) / 86400
            n_window = rng.poisson(chunk["purchase_rate_per_week"].to_numpy() / 7 * span_days)
            # Repeat purchases before dropping out: geometric, counting the first purchase.
            repeats = rng.geometric(chunk["dropout_prob"].to_numpy()) - 1
            rep = np.repeat(np.arange(k), n_window)
            t = rng.random(len(rep)) * span_days[rep]
            order = np.lexsort((t, rep))
            rep, t = rep[order], t[order]
            starts = np.concatenate([[0], np.cumsum(n_window)[:-1]])
            rank = np.arange(len(rep)) - starts[rep]
            keep = rank < repeats[rep]
            rep, t = rep[keep], t[keep]
            # The first purchase happens at sign-up.
            rep = np.concatenate([np.arange(k), rep])
            t = np.concatenate([np.zeros(k), t])
            ts = birth[rep] + (t * 86400).astype("timedelta64[s]")
            arche = chunk["archetype_idx"].to_numpy()[rep]
            aov = chunk["mean_order_value"].to_numpy()[rep]
            amount = np.round(rng.gamma(6.0, aov / 6.0), 2)
            a = self.archetypes
            disc_p = np.array([x.discount_prob for x in a])[arche]
            depth = np.array([x.discount_depth for x in a])[arche] * rng.uniform(0.6, 1.4, len(rep))
            discount = np.round(np.where(rng.random(len(rep)) < disc_p, amount * depth, 0.0), 2)
            ret_p = np.array([x.return_prob for x in a])[arche]
            returned = np.where(rng.random(len(rep)) < ret_p, amount * np.where(rng.random(len(rep)) < 0.7, 1.0, 0.5), 0.0)
            cw = np.array([x.channel_weights for x in a])[arche]
            channel = (rng.random(len(rep))[:, None] > np.cumsum(cw, axis=1)).sum(axis=1)
            kw = np.array([x.category_weights for x in a])[arche]
            category = (rng.random(len(rep))[:, None] > np.cumsum(kw, axis=1)).sum(axis=1)
            channel = np.minimum(channel, 2)
            category = np.minimum(category, 4)
            pid = chunk["person_id"].to_numpy()[rep]
            src_sys, src_id = self._source_for(pid, np.array(CHANNELS)[channel], primary, ts)
            frame = pd.DataFrame({
                "person_id": pid, "order_ts": ts, "amount": amount, "discount": discount,
                "returned_amount": np.round(returned, 2), "channel": np.array(CHANNELS)[channel],
                "category": np.array(CATEGORIES)[category], "source_system": src_sys, "source_id": src_id,
            })
            observed.append(frame[frame["order_ts"] <= self.end])
            future.append(frame[(frame["order_ts"] > self.end) & (frame["order_ts"] <= self.future_end)])
            progress.update(k)
        obs = pd.concat(observed, ignore_index=True).sort_values(["order_ts", "person_id"], kind="stable")
        obs.insert(0, "order_id", [f"O{i:09d}" for i in range(len(obs))])
        lag = (rng.exponential(6, len(obs)) * 3600).astype("timedelta64[s]")
        obs["loaded_at"] = obs["order_ts"].to_numpy() + lag
        fut = pd.concat(future, ignore_index=True)[["person_id", "order_ts", "amount"]]
        return obs.reset_index(drop=True), fut.sort_values(["person_id", "order_ts"]).reset_index(drop=True)

    @staticmethod
    def _records_by_channel(records: pd.DataFrame) -> dict[str, pd.Series]:
        """Map person -> one source id per system (first record), for attributing events."""
        first = records.drop_duplicates(["person_id", "source_system"])
        out = {}
        for s in SOURCES:
            sel = first[first["source_system"] == s]
            out[s] = pd.Series(sel["source_id"].to_numpy(), index=sel["person_id"].to_numpy())
            out[s + "_created"] = pd.Series(sel["_created"].to_numpy(), index=sel["person_id"].to_numpy())
        any_rec = records.drop_duplicates("person_id")
        out["any"] = pd.Series(any_rec["source_system"].to_numpy(), index=any_rec["person_id"].to_numpy())
        out["any_id"] = pd.Series(any_rec["source_id"].to_numpy(), index=any_rec["person_id"].to_numpy())
        return out

    @staticmethod
    def _source_for(pid: np.ndarray, wanted: np.ndarray, primary: dict[str, pd.Series],
                    at: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Attribute each event to the person's record in the wanted system, else their first record.

        With ``at`` (event times), a record created after the event is not used.
        """
        systems = primary["any"].reindex(pid).to_numpy().astype(object)
        ids = primary["any_id"].reindex(pid).to_numpy().astype(object)
        for want, system in (("web", "web"), ("app", "app"), ("phone", "call_centre"), ("store", "call_centre")):
            sel = np.flatnonzero(wanted == want)
            if len(sel) == 0:
                continue
            found = primary[system].reindex(pid[sel]).to_numpy()
            ok = pd.notna(found)
            if at is not None:
                created = primary[system + "_created"].reindex(pid[sel]).to_numpy()
                ok &= ~(created > at[sel])
            systems[sel[ok]] = system
            ids[sel[ok]] = found[ok]
        return systems, ids

    # -- engagement, support, plans -----------------------------------------
    def activity(self, persons: pd.DataFrame, records: pd.DataFrame, orders: pd.DataFrame) -> dict[str, pd.DataFrame]:
        rng, a = self.rng, self.archetypes
        primary = self._records_by_channel(records)
        arche = persons["archetype_idx"].to_numpy()
        birth = persons["birth_at"].to_numpy()
        last_order = orders.groupby("person_id")["order_ts"].max().reindex(persons["person_id"]).to_numpy()
        # A person is active until shortly after their last observed purchase when they dropped out.
        dropped = (self.end - last_order) > np.timedelta64(120 * 86400, "s")
        active_end = np.where(dropped, last_order + np.timedelta64(30 * 86400, "s"), self.end)
        active_days = np.maximum((active_end - birth).astype(np.int64) / 86400, 1.0)

        # Support contacts.
        n_contacts = rng.poisson(np.array([x.support_per_year for x in a])[arche] * active_days / 365.25)
        rep = np.repeat(np.arange(self.n), n_contacts)
        cts = birth[rep] + (rng.random(len(rep)) * active_days[rep] * 86400).astype("timedelta64[s]")
        phone_share = np.array([x.phone_share for x in a])[arche][rep]
        u = rng.random(len(rep))
        ch = np.where(u < phone_share, "phone", np.where(u < phone_share + (1 - phone_share) * 0.6, "chat", "email"))
        base = np.vectorize(SUPPORT_COST.get)(ch) if len(ch) else np.array([])
        sys_, ids = self._source_for(rep, ch, primary, cts)
        support = pd.DataFrame({
            "contact_id": [f"S{i:09d}" for i in range(len(rep))],
            "source_system": sys_, "source_id": ids, "contact_ts": _fmt_ts(cts), "channel": ch,
            "cost": np.round(base * rng.lognormal(0, 0.15, len(rep)), 2),
            "loaded_at": _fmt_ts(cts + np.timedelta64(7200, "s")),
        })

        # Monthly product usage while active, on the app record when there is one.
        months = ((active_end - birth).astype(np.int64) // (30 * 86400) + 1).astype(np.int64)
        rep = np.repeat(np.arange(self.n), months)
        k = np.arange(len(rep)) - np.repeat(np.cumsum(months) - months, months)
        month = (birth[rep].astype("datetime64[M]") + k.astype("timedelta64[M]")).astype("datetime64[D]")
        sessions = rng.poisson(np.array([x.sessions_per_month for x in a])[arche][rep] * rng.gamma(4, 0.25, len(rep)))
        sys_, ids = self._source_for(rep, np.full(len(rep), "app"), primary, month.astype("datetime64[s]"))
        usage = pd.DataFrame({"source_system": sys_, "source_id": ids, "usage_date": month, "sessions": sessions})
        usage = usage[(usage["sessions"] > 0) & (usage["usage_date"] <= self.end.astype("datetime64[D]"))]
        usage["loaded_at"] = _fmt_ts(usage["usage_date"].to_numpy().astype("datetime64[s]") + np.timedelta64(40 * 86400, "s"))

        # Monthly email activity from sign-up to the end; engagement fades after dropping out.
        # Emails go to the address on the person's first record that has one.
        has_email = records.dropna(subset=["email"]).drop_duplicates("person_id")
        who = has_email["person_id"].to_numpy()
        # Sends start the month after the address was recorded.
        first_month = has_email["_created"].to_numpy().astype("datetime64[M]") + np.timedelta64(1, "M")
        months = np.maximum((self.end.astype("datetime64[M]") - first_month).astype(np.int64) + 1, 0)
        rep_idx = np.repeat(np.arange(len(who)), months)
        rep = who[rep_idx]
        k = np.arange(len(rep)) - np.repeat(np.cumsum(months) - months, months)
        period = (first_month[rep_idx] + k.astype("timedelta64[M]")).astype("datetime64[D]")
        sends = rng.poisson(4, len(rep)) + 1
        alive = period.astype("datetime64[s]") <= active_end[rep]
        open_rate = np.array([x.open_rate for x in a])[arche][rep] * np.where(alive, 1.0, 0.3)
        opens = rng.binomial(sends, np.clip(open_rate, 0, 1))
        click_rate = np.array([x.click_rate for x in a])[arche][rep] / np.maximum(np.array([x.open_rate for x in a])[arche][rep], 1e-6)
        clicks = rng.binomial(opens, np.clip(click_rate, 0, 1))
        src = pd.Series(has_email["source_system"].to_numpy(), index=who)
        sid = pd.Series(has_email["source_id"].to_numpy(), index=who)
        email = pd.DataFrame({
            "source_system": src.reindex(rep).to_numpy(), "source_id": sid.reindex(rep).to_numpy(),
            "period_start": period, "sends": sends, "opens": opens, "clicks": clicks,
        })
        email = email[email["period_start"] <= self.end.astype("datetime64[D]")]
        email["loaded_at"] = _fmt_ts(email["period_start"].to_numpy().astype("datetime64[s]") + np.timedelta64(35 * 86400, "s"))

        # Plans: one at sign-up, 15% change once later.
        pw = np.array([x.plan_weights for x in a])[arche]
        plan = np.minimum((rng.random(self.n)[:, None] > np.cumsum(pw, axis=1)).sum(axis=1), 2)
        change = np.flatnonzero(rng.random(self.n) < 0.15)
        change_at = birth[change] + (rng.random(len(change)) * (self.end - birth[change]).astype(np.int64)).astype("timedelta64[s]")
        new_plan = np.clip(plan[change] + rng.choice([-1, 1], len(change)), 0, 2)
        pid = np.concatenate([np.arange(self.n), change])
        sys_, ids = self._source_for(pid, np.full(len(pid), "web"), primary,
                                     np.concatenate([birth, change_at]))
        subs = pd.DataFrame({
            "source_system": sys_, "source_id": ids,
            "plan_tier": np.array(PLANS)[np.concatenate([plan, new_plan])],
            "valid_from": np.concatenate([birth, change_at]).astype("datetime64[D]"),
        })
        subs = subs.drop_duplicates(["source_system", "source_id", "valid_from"])
        subs["loaded_at"] = _fmt_ts(subs["valid_from"].to_numpy().astype("datetime64[s]") + np.timedelta64(3600, "s"))
        return {"raw_support_contacts": support, "raw_product_usage": usage,
                "raw_email_activity": email, "raw_subscriptions": subs}

    # -- planted policy effects -------------------------------------------------
    def plant_policy_effects(self, persons: pd.DataFrame, records: pd.DataFrame, orders: pd.DataFrame,
                             support: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, pd.DataFrame]]:
        """Add the retention effect's orders and remove the cost effect's contacts (treated persons only).

        Draws from its own random stream, so every other table is what it is
        without the policy. Returns the orders, the support contacts and the
        truth tables ``truth_policy`` and ``truth_policy_changes``.
        """
        from include.experiment.holdout import holdout_draw

        policy = self.policy
        rng = np.random.default_rng([self.seed, 19])
        start = np.datetime64(policy.policy_date, "s")
        keys = expected_customer_keys(records).reindex(persons["person_id"].to_numpy())
        holdout = np.array([holdout_draw(policy.experiment_name, k) < policy.holdout_share for k in keys])
        archetype = persons["archetype"].to_numpy()
        treated_top = ~holdout & (archetype == policy.retention_archetype)
        treated_costly = ~holdout & np.isin(archetype, policy.cost_archetypes)

        # Retention: keep a share of treated top persons buying at least once a block (<= 28 days).
        baseline = self._retention_after(orders, np.flatnonzero(archetype == policy.retention_archetype), start,
                                         policy.retention_window_days)
        keep_share = min(1.0, policy.retention_effect / max(1e-9, 1.0 - baseline)) if policy.retention_effect else 0.0
        kept = treated_top & (rng.random(self.n) < keep_share)
        added = []
        # Any retention window holds a whole block, so a kept person is always retained.
        block = max(1, min(28, policy.retention_window_days // 2)) * 86400
        blocks = max(0, int(np.ceil((self.end - start).astype(np.int64) / block)))
        order_pid, order_ts = orders["person_id"].to_numpy(), orders["order_ts"].to_numpy()
        for b in range(blocks):
            lo = start + np.timedelta64(b * block, "s")
            hi = lo + np.timedelta64(block, "s")
            # Only a kept person with no order of their own in the block gets one.
            bought = np.zeros(self.n, dtype=bool)
            bought[order_pid[(order_ts >= lo) & (order_ts < hi)]] = True
            who = np.flatnonzero(kept & ~bought)
            ts = lo + (rng.random(len(who)) * block).astype("timedelta64[s]")
            ok = ts <= self.end
            added.append(pd.DataFrame({"person_id": who[ok], "order_ts": ts[ok]}))
        extra = pd.concat(added, ignore_index=True) if added else pd.DataFrame({"person_id": [], "order_ts": []})
        extra = extra.sort_values(["order_ts", "person_id"], kind="stable").reset_index(drop=True)
        primary = self._records_by_channel(records)
        pid = extra["person_id"].to_numpy(dtype=np.int64)
        aov = persons["mean_order_value"].to_numpy()[pid]
        amount = np.round(rng.gamma(6.0, aov / 6.0), 2)
        ts = extra["order_ts"].to_numpy().astype("datetime64[s]")
        src_sys, src_id = self._source_for(pid, np.full(len(pid), "web"), primary, ts)
        extra_orders = pd.DataFrame({
            "order_id": [f"P{i:09d}" for i in range(len(pid))], "person_id": pid, "order_ts": ts,
            "amount": amount, "discount": 0.0, "returned_amount": 0.0, "channel": "web",
            "category": np.array(CATEGORIES)[rng.integers(0, len(CATEGORIES), len(pid))],
            "source_system": src_sys, "source_id": src_id,
            "loaded_at": ts + (rng.exponential(6, len(pid)) * 3600).astype("timedelta64[s]")})
        orders = pd.concat([orders, extra_orders[orders.columns]], ignore_index=True)

        # Cost-to-serve: remove each later support contact of treated costly persons with cost_effect.
        person_of = pd.Series(records["person_id"].to_numpy(),
                              index=records["source_system"].astype(str) + ":" + records["source_id"].astype(str))
        contact_person = person_of.reindex(support["source_system"].astype(str) + ":"
                                           + support["source_id"].astype(str)).to_numpy()
        after = pd.to_datetime(support["contact_ts"]).to_numpy() >= start
        eligible = after & treated_costly[contact_person.astype(np.int64)]
        removed = eligible & (rng.random(len(support)) < policy.cost_effect)
        changes = pd.concat([
            pd.DataFrame({"change": "order_added", "person_id": pid, "event_id": extra_orders["order_id"],
                          "event_ts": ts, "amount": amount}),
            pd.DataFrame({"change": "contact_removed", "person_id": contact_person[removed].astype(np.int64),
                          "event_id": support["contact_id"].to_numpy()[removed],
                          "event_ts": pd.to_datetime(support["contact_ts"]).to_numpy()[removed],
                          "amount": support["cost"].to_numpy()[removed]}),
        ], ignore_index=True)
        truth = pd.DataFrame({"person_id": persons["person_id"].to_numpy(), "archetype": archetype,
                              "expected_customer_key": keys.to_numpy(), "holdout": holdout,
                              "retention_treated": treated_top, "kept": kept, "cost_treated": treated_costly,
                              "policy_date": policy.policy_date, "retention_effect": policy.retention_effect,
                              "retention_baseline": baseline, "keep_share": keep_share,
                              # What can be planted: a retention of 97% leaves room for 3 points, not 6.
                              "retention_effect_planted": keep_share * (1.0 - baseline),
                              "cost_effect": policy.cost_effect})
        log.info("policy effects from %s: %d of %d treated %s persons kept buying (baseline retention %.3f); "
                 "%d support contacts removed", policy.policy_date, int(kept.sum()), int(treated_top.sum()),
                 policy.retention_archetype, baseline, int(removed.sum()))
        return orders, support[~removed].reset_index(drop=True), {"truth_policy": truth,
                                                                  "truth_policy_changes": changes}

    def _retention_after(self, orders: pd.DataFrame, people: np.ndarray, start: np.datetime64,
                         window_days: int) -> float:
        """Repeat retention of ``people`` averaged over weekly dates from ``start`` to the end (no policy)."""
        sub = orders[orders["person_id"].isin(people)]
        ts, pid = sub["order_ts"].to_numpy(), sub["person_id"].to_numpy()
        w = np.timedelta64(window_days * 86400, "s")
        rates = []
        d = start + np.timedelta64(7 * 86400, "s")
        while d <= self.end:
            before = set(pid[(ts >= d - 2 * w) & (ts < d - w)])
            now = set(pid[(ts >= d - w) & (ts < d)])
            if before:
                rates.append(len(before & now) / len(before))
            d += np.timedelta64(7 * 86400, "s")
        return float(np.mean(rates)) if rates else 0.0

    # -- planted errors ------------------------------------------------------
    def plant_order_errors(self, orders: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Turn ``orders`` into raw text rows and append bad rows of every kind."""
        rng = self.rng
        raw = pd.DataFrame({
            "order_id": orders["order_id"],
            "source_system": orders["source_system"],
            "source_id": orders["source_id"],
            "order_ts": _fmt_ts(orders["order_ts"].to_numpy()),
            "amount": orders["amount"].map("{:.2f}".format),
            "discount": orders["discount"].map("{:.2f}".format),
            "returned_amount": orders["returned_amount"].map("{:.2f}".format),
            "channel": orders["channel"],
            "category": orders["category"],
            "loaded_at": _fmt_ts(orders["loaded_at"].to_numpy()),
        })
        per_kind = max(3, len(raw) // 1000)
        # Bad rows were loaded early in the window so every demo as-of date sees them.
        early = raw[raw["loaded_at"] < str(self.start + np.timedelta64(400 * 86400, "s"))]
        base = early.sample(n=min(6 * per_kind, len(early)), random_state=self.seed).reset_index(drop=True)
        chunks = np.array_split(np.arange(len(base)), 6)
        planted, truth = [], []
        kinds = ("unparsable_date", "non_numeric_value", "negative_value",
                 "unknown_customer_id", "future_date", "duplicate_key")
        next_id = len(raw)
        for kind, idx in zip(kinds, chunks, strict=True):
            bad = base.iloc[idx].copy()
            if kind != "duplicate_key":
                bad["order_id"] = [f"O{next_id + i:09d}" for i in range(len(bad))]
                next_id += len(bad)
            if kind == "unparsable_date":
                bad["order_ts"] = rng.choice(["2025-02-30 10:00:00", "not a date", "31/12/2024"], len(bad))
            elif kind == "non_numeric_value":
                bad["amount"] = rng.choice(["N/A", "12,50", "abc"], len(bad))
            elif kind == "negative_value":
                bad["amount"] = (-rng.uniform(1, 200, len(bad))).round(2).astype(str)
            elif kind == "unknown_customer_id":
                bad["source_id"] = [f"W{9 * 10**9 + i}" for i in range(len(bad))]
            elif kind == "future_date":
                bad["order_ts"] = _fmt_ts(np.full(len(bad), self.future_end + np.timedelta64(400 * 86400, "s")))
            planted.append(bad)
            truth.append(pd.DataFrame({"source_table": "raw_orders", "source_key": bad["order_id"], "reason": kind}))
        raw = pd.concat([raw, *planted], ignore_index=True)
        return raw, pd.concat(truth, ignore_index=True)

    # -- everything ------------------------------------------------------------
    def generate(self, show_progress: bool = True) -> dict[str, pd.DataFrame]:
        """Return every table, raw and truth, keyed by table name."""
        with tqdm(total=self.n * 2, desc="generating", unit="person", disable=not show_progress) as bar:
            persons = self.persons()
            records = self.identity_records(persons)
            bar.update(self.n // 2)
            orders, future = self.orders(persons, records, bar)
            activity = self.activity(persons, records, orders)
            policy_tables = {}
            if self.policy is not None:
                orders, activity["raw_support_contacts"], policy_tables = self.plant_policy_effects(
                    persons, records, orders, activity["raw_support_contacts"])
            raw_orders, planted = self.plant_order_errors(orders)
            bar.update(self.n - self.n // 2)
        truth_identity = records[["source_system", "source_id", "person_id"]].copy()
        tables = {
            "raw_identity_records": self.profile_records(records).drop(columns=["person_id", "_created"]),
            "raw_orders": raw_orders,
            **activity,
            "truth_persons": persons.drop(columns=["archetype_idx"]),
            "truth_identity": truth_identity,
            "truth_future_orders": future,
            "truth_planted_errors": planted,
            **policy_tables,
        }
        tables.update(legacy_label_tables(persons, records, orders, planted, self.end, self.seed))
        return tables


def write_demo_data(url: str, customers: int, seed: int = 7, end_date: dt.date = dt.date(2026, 11, 14),
                    show_progress: bool = True, identity_profile: str = "rich",
                    policy: PolicyEffects | None = None) -> dict[str, int]:
    """Generate the demo dataset into the warehouse at ``url``; return row counts."""
    from include.runtime.warehouse import Warehouse

    tables = DemoGenerator(customers, seed=seed, end_date=end_date,
                           identity_profile=identity_profile, policy=policy).generate(show_progress)
    counts = {}
    with Warehouse(url) as wh:
        for name, frame in tqdm(tables.items(), desc="writing", unit="table", disable=not show_progress):
            wh.replace_table(name, frame)
            counts[name] = len(frame)
    return counts


def main(argv: list[str] | None = None) -> None:
    from include.runtime.paths import default_warehouse_url

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=5000, help="number of persons (default 5000)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--end-date", type=dt.date.fromisoformat, default=dt.date(2026, 11, 14))
    parser.add_argument("--warehouse-url", default=None, help="SQLAlchemy URL (default: embedded DuckDB)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--identity-profile", choices=IDENTITY_PROFILES, default="rich",
                        help="identifiers of the identity records: rich (default: names, email, phone, address, "
                             "date of birth, device), person_only (names, address, YYYYMMDD date of birth, "
                             "national id as id_national), contact_only (first name, email, phone, device)")
    parser.add_argument("--policy-date", type=dt.date.fromisoformat, default=None,
                        help="plant the playbook's effects on treated persons from this date (default: none)")
    parser.add_argument("--retention-effect", type=float, default=0.06,
                        help="added repeat retention of treated high-value-core persons (default 0.06)")
    parser.add_argument("--cost-effect", type=float, default=0.18,
                        help="relative cut of support contacts of treated costly persons (default 0.18)")
    parser.add_argument("--experiment-name", default="segment-playbook", help="holdout experiment name")
    parser.add_argument("--holdout-share", type=float, default=0.10, help="holdout share (default 0.10)")
    args = parser.parse_args(argv)
    url = args.warehouse_url or default_warehouse_url()
    policy = None if args.policy_date is None else PolicyEffects(
        args.policy_date, retention_effect=args.retention_effect, cost_effect=args.cost_effect,
        experiment_name=args.experiment_name, holdout_share=args.holdout_share)
    counts = write_demo_data(url, args.customers, args.seed, args.end_date, not args.quiet, args.identity_profile,
                             policy)
    for name, rows in counts.items():
        print(f"{name:24s} {rows:>12,d} rows")


if __name__ == "__main__":
    main()
