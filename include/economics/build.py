"""Segment economics, profit concentration and the per-customer intervention priority.

All money is over the 365 days up to the as-of date (the RFM monetary window);
definitions are in ``sql/economics.sql``:

- revenue: paid minus returned; discount spend: markdowns given on those orders;
- gross margin: revenue x ``gross_margin``; left at its default the rate is
  an assumption, and ``segment_economics.gross_margin_assumed`` says so (the
  report and the summary state it beside every margin and profit figure:
  "assumed 35% gross margin: set gross_margin");
- cost-to-serve: support contacts x cost per contact by channel (the feature
  stage's ``cost_to_serve``) + a yearly servicing cost per customer + a
  servicing cost per order (both configurable, 0 by default). With no support
  contact data and no servicing cost configured the cost is unknown:
  ``cost_known`` is false and cost-to-serve and profit are NULL, so no
  segment is said to lose money on costs nobody supplied;
- profit: gross margin - cost-to-serve;
- repeat retention: of a segment's customers who ordered in the window before
  last, (d-2w, d-w], the share who ordered again in the last one, (d-w, d]
  (w = ``retention_window_days``); alive share: the share with CLV P(alive) >= 0.5;
- label stability: the share of last run's segment members still published in
  it now (what hysteresis keeps high; it says nothing about customers buying).

Profit concentration (only when cost is known) is the Lorenz-style curve of customers sorted by profit,
highest first: the cumulative share of customers against the cumulative share
of total profit. Where the curve peaks above 100% the rest of the base is
loss-making; the share of customers at which it first reaches 100% is "the top
x% who pay for everyone" of seed 000.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from include.features.build import feature_params
from include.runtime.errors import NoRowsError
from include.runtime.settings import DEFAULT_GROSS_MARGIN
from include.runtime.warehouse import Warehouse, load_sql

log = logging.getLogger(__name__)

DEFAULT_PLAYBOOK = Path(__file__).with_name("playbook.toml")
PRIORITY_ORDER = ("critical", "high", "medium", "low")


@dataclass(frozen=True)
class EconomicsSettings:
    """Money settings of the economics stage.

    ``gross_margin_assumed``: the margin is the settings' default, not the
    business's own figure (stored with the rows, stated wherever it is used);
    when not given, whether ``gross_margin`` is the default.
    """

    gross_margin: float = DEFAULT_GROSS_MARGIN
    gross_margin_assumed: bool | None = None
    servicing_cost_per_customer: float = 0.0
    servicing_cost_per_order: float = 0.0
    retention_window_days: int = 90
    currency_code: str = "GBP"
    currency_symbol: str = "£"

    def __post_init__(self) -> None:
        if self.gross_margin_assumed is None:  # not said: assumed exactly when it is the default
            object.__setattr__(self, "gross_margin_assumed", self.gross_margin == DEFAULT_GROSS_MARGIN)


def build_segment_economics(wh: Warehouse, as_of_date: dt.date, settings: EconomicsSettings) -> pd.DataFrame:
    """Replace ``customer_economics`` and ``segment_economics`` for ``as_of_date``; return the latter.

    In one transaction; on a warehouse bound by :meth:`Warehouse.transaction` the writes join it.
    """
    with wh.transaction() as tx:
        return _segment_economics(tx, as_of_date, settings)


def _segment_economics(tx: Warehouse, as_of_date: dt.date, settings: EconomicsSettings) -> pd.DataFrame:
    # Reads go through ``tx`` so they see the transaction's own uncommitted writes.
    if not tx.scalar("SELECT COUNT(*) FROM customer_segments WHERE as_of_date = :d", {"d": as_of_date}):
        raise NoRowsError(f"customer_segments has no published labels for as_of_date={as_of_date}; "
                         "run publish_segments first")
    if settings.retention_window_days < 1:
        raise ValueError(f"retention_window_days must be at least 1, got {settings.retention_window_days}")
    params = feature_params(as_of_date)
    window = dt.timedelta(days=settings.retention_window_days)
    params.update(margin=settings.gross_margin, margin_assumed=settings.gross_margin_assumed,
                  per_customer=settings.servicing_cost_per_customer,
                  per_order=settings.servicing_cost_per_order, window_start_ts=params["cutoff_ts"] - window,
                  previous_window_start_ts=params["cutoff_ts"] - 2 * window,
                  currency_code=settings.currency_code, currency_symbol=settings.currency_symbol)
    tx.run_script(load_sql("economics.sql"), params)
    return tx.query_df("SELECT * FROM segment_economics WHERE as_of_date = :d "
                       "ORDER BY profit DESC NULLS LAST, revenue DESC", {"d": as_of_date})


def model_and_published_moves(wh: Warehouse, as_of_date: dt.date) -> pd.DataFrame:
    """Segment moves since the previous published date: what the model said beside what was published.

    For each (previous published segment, segment now) pair: ``model_customers``
    whose raw model segment now (``raw_segment_id``) is that segment, and
    ``published_customers`` whose published label is. With hysteresis the
    published moves lag the model's; a table whose off-diagonal is empty in
    both columns means the customers really stayed. Empty when there is no
    previous date.
    """
    return wh.query_df(
        """
        WITH prev_date AS (
            SELECT MAX(as_of_date) AS d FROM customer_segments WHERE as_of_date < :d
        ), names AS (
            SELECT segment_id, MIN(segment_name) AS segment_name FROM customer_segments
            WHERE as_of_date IN (:d, (SELECT d FROM prev_date)) GROUP BY segment_id
        ), pairs AS (
            SELECT p.segment_id AS from_segment_id, n.raw_segment_id AS model_to, n.segment_id AS published_to
            FROM customer_segments p
            JOIN customer_segments n ON n.customer_key = p.customer_key AND n.as_of_date = :d
            WHERE p.as_of_date = (SELECT d FROM prev_date)
        ), counts AS (
            SELECT from_segment_id, model_to AS to_segment_id, COUNT(*) AS model_customers,
                0 AS published_customers FROM pairs WHERE model_to IS NOT NULL GROUP BY ALL
            UNION ALL
            SELECT from_segment_id, published_to, 0, COUNT(*) FROM pairs GROUP BY ALL
        )
        SELECT c.from_segment_id, COALESCE(f.segment_name, 'segment ' || CAST(c.from_segment_id AS VARCHAR)) AS from_segment,
            c.to_segment_id, COALESCE(t.segment_name, 'segment ' || CAST(c.to_segment_id AS VARCHAR)) AS to_segment,
            CAST(SUM(c.model_customers) AS BIGINT) AS model_customers,
            CAST(SUM(c.published_customers) AS BIGINT) AS published_customers
        FROM counts c
        LEFT JOIN names f ON f.segment_id = c.from_segment_id
        LEFT JOIN names t ON t.segment_id = c.to_segment_id
        GROUP BY ALL
        ORDER BY c.from_segment_id, c.to_segment_id
        """, {"d": as_of_date})


def profit_concentration(profit: pd.Series, points: int = 100) -> tuple[pd.DataFrame, float]:
    """Cumulative profit share against customer share, customers sorted by profit (highest first).

    Returns the curve at ``points`` evenly spaced customer shares (plus 0) and
    the smallest customer share whose cumulative profit reaches the total
    profit (1.0 when only the whole base does; NaN when total profit is not positive).
    """
    values = np.sort(profit.to_numpy(dtype=float))[::-1]
    n, total = len(values), float(values.sum())
    if n and np.isnan(values).any():
        # Profit is unknown (no cost data): there is no concentration to speak of, not a zero one.
        return pd.DataFrame(columns=["customer_share", "profit_share"], dtype=float), float("nan")
    if n == 0:
        return pd.DataFrame({"customer_share": [0.0], "profit_share": [0.0]}), float("nan")
    cum = np.cumsum(values)
    share = np.arange(1, n + 1) / n
    grid = np.linspace(0, 1, points + 1)
    idx = np.clip(np.ceil(grid * n).astype(int) - 1, 0, n - 1)
    curve = pd.DataFrame({"customer_share": grid,
                          "profit_share": np.where(grid == 0, 0.0, cum[idx] / total if total else np.nan)})
    if total <= 0:
        return curve, float("nan")
    reach = np.flatnonzero(cum >= total * (1 - 1e-12))
    return curve, float(share[reach[0]])


#: Standing keys a playbook rule may test (see include/segmentation/naming.py and playbook.toml).
SEGMENT_KEYS = ("value", "recency", "frequency", "tenure", "basket", "trait")
#: The customer's own keys: lifecycle state (customer_features.lifecycle_state) and whether they bought again.
CUSTOMER_KEYS = ("state", "buyer")
RULE_KEYS = (*SEGMENT_KEYS, *CUSTOMER_KEYS)
#: Values the customer's keys take.
STATE_VALUES = ("new", "active", "lapsing", "lapsed")
BUYER_VALUES = ("one-time", "repeat")
#: Action tiers a rule may claim (``claim``); each is checked by every run's backtest (include/backtest).
ACTION_CLAIMS = ("account team", "deprioritise", "exclude")
#: Claims that only a customer whose own state is lapsed may get.
LAPSED_ONLY_CLAIMS = ("deprioritise", "exclude")
#: How an action's text names a claimed tier when the rule has no ``claim`` (older playbooks).
_CLAIM_WORDS = (("exclude", re.compile(r"\bexclude", re.I)), ("deprioritise", re.compile(r"depriorit[iy][sz]e", re.I)),
                ("account team", re.compile(r"account team", re.I)))
#: The segment standing's "recency" of older warehouses: "recent" is the lifecycle standing "active" now.
_RECENCY_ALIASES = {"recent": "active"}


def _as_set(value: Any) -> set[str]:
    return {str(v) for v in value} if isinstance(value, list) else {str(value)}


def action_claim(entry: dict[str, Any]) -> str | None:
    """The action tier an entry claims: its ``claim``, else the tier its action text names, else ``None``."""
    if entry.get("claim"):
        return str(entry["claim"])
    for claim, words in _CLAIM_WORDS:
        if words.search(str(entry.get("action", ""))):
            return claim
    return None


def load_playbook(path: str | Path | None = None) -> dict[str, Any]:
    """Read and check the playbook TOML (default ``include/economics/playbook.toml``).

    Each rule gets ``claim`` (:func:`action_claim`) and, where the playbook leaves it implicit,
    the state condition its claim requires: ``deprioritise`` / ``exclude`` only for customers
    whose own state is lapsed, an account team or value tier ``high`` never for them (an older
    playbook without ``state`` conditions keeps working, restricted so).

    Raises
    ------
    ValueError
        Naming the rule and field: an unknown condition key or value, value tier or claim, a
        missing action, a priority outside :data:`PRIORITY_ORDER`, an account team or ``high`` tier
        that a lapsed customer could reach, or a claim whose state condition contradicts it.
    """
    path = Path(path) if path else DEFAULT_PLAYBOOK
    with open(path, "rb") as fh:
        book = tomllib.load(fh)
    tiers = set(book.get("priority", {}))
    if "default" not in book:
        raise ValueError(f"playbook {path}: no [default] entry")
    entries = [(f"rules[{i}] {rule.get('when', {})}", rule) for i, rule in enumerate(book.get("rules", []))]
    for where, entry in [*entries, ("[default]", book["default"])]:
        if entry.get("value_tier") not in tiers:
            raise ValueError(f"playbook {path}: {where} has value_tier {entry.get('value_tier')!r}, "
                             f"expected one of {sorted(tiers)}")
        if not entry.get("action"):
            raise ValueError(f"playbook {path}: {where} has no action")
        when = entry.get("when", {})
        unknown = sorted(set(when) - set(RULE_KEYS))
        if unknown:
            raise ValueError(f"playbook {path}: {where} tests unknown key(s) {unknown}; known: {list(RULE_KEYS)}")
        for key, allowed in (("state", STATE_VALUES), ("buyer", BUYER_VALUES)):
            bad = sorted(_as_set(when[key]) - set(allowed)) if key in when else []
            if bad:
                raise ValueError(f"playbook {path}: {where} tests {key} = {bad}; known: {list(allowed)}")
        if entry.get("claim") is not None and entry["claim"] not in ACTION_CLAIMS:
            raise ValueError(f"playbook {path}: {where} claims {entry['claim']!r}; known: {list(ACTION_CLAIMS)}")
        claim = action_claim(entry)
        if where == "[default]":
            if entry["value_tier"] == "high" or claim is not None:
                raise ValueError(f"playbook {path}: [default] gives {claim or 'value_tier high'!r} to every customer, "
                                 "lapsed ones too; the default must be a neutral action")
            continue
        entry["claim"] = claim
        states = _as_set(when["state"]) if "state" in when else None
        if claim in LAPSED_ONLY_CLAIMS:
            if states is not None and states != {"lapsed"}:
                raise ValueError(f"playbook {path}: {where} claims {claim!r} for state(s) {sorted(states)}: "
                                 "only customers whose own state is lapsed may be told that")
            entry["when"] = {**when, "state": "lapsed"}
        elif claim == "account team" or entry["value_tier"] == "high":
            if states is not None and "lapsed" in states:
                raise ValueError(f"playbook {path}: {where} gives {claim or 'value_tier high'!r} to lapsed "
                                 "customers; add a state condition without 'lapsed'")
            if states is None:
                entry["when"] = {**when, "state": [s for s in STATE_VALUES if s != "lapsed"]}
    for tier, row in book["priority"].items():
        for band in ("high", "medium", "low"):
            if row.get(band) not in PRIORITY_ORDER:
                raise ValueError(f"playbook {path}: priority.{tier}.{band} must be one of {PRIORITY_ORDER}")
    return book


def playbook_entry(book: dict[str, Any], standing: dict[str, Any] | None, state: str | None = None,
                   buyer: str | None = None, withheld: Any = ()) -> dict[str, str]:
    """The first playbook rule whose every condition the segment's standing and the customer meet, else ``[default]``.

    ``standing`` is the segment's standing (parsed JSON); ``None`` (no standing recorded)
    matches no segment condition. ``state`` and ``buyer`` are the customer's own
    (``None``: unknown, matching no condition on them). A customer whose first matching rule
    claims a tier in ``withheld`` (a claim a backtest found false) drops to the next matching rule
    that claims nothing, never to another claim (whose backtest spoke of other customers). The
    returned entry carries ``rule`` (which rule matched, and what was withheld) and ``claim``.
    """
    have: dict[str, set[str]] = {}
    if standing:
        have = {k: _as_set(standing.get(k)) for k in SEGMENT_KEYS if k != "trait"}
        have["recency"] = {_RECENCY_ALIASES.get(v, v) for v in have["recency"]}
        have["trait"] = {t[0] if isinstance(t, list) else str(t) for t in standing.get("traits", [])}
    if state is not None:
        have["state"] = {str(state)}
    if buyer is not None:
        have["buyer"] = {str(buyer)}
    withheld = set(withheld or ())
    dropped = None  # the withheld claim of the first rule that matched: only a neutral rule may follow it
    for i, rule in enumerate(book.get("rules", [])):
        when = rule.get("when", {})
        wanted = {k: {_RECENCY_ALIASES.get(v, v) for v in _as_set(v)} if k == "recency" else _as_set(v)
                  for k, v in when.items()}
        if not all(have.get(k, set()) & v for k, v in wanted.items()):
            continue
        text = " and ".join(f"{k} = {v}" for k, v in when.items()) or f"rules[{i}]"
        if rule.get("claim") in withheld or (dropped and rule.get("claim")):
            dropped = dropped or rule["claim"]
            continue
        return {"value_tier": rule["value_tier"], "action": rule["action"], "claim": rule.get("claim"),
                "rule": text + (f" ('{dropped}' withheld)" if dropped else "")}
    return {"value_tier": book["default"]["value_tier"], "action": book["default"]["action"], "claim": None,
            "rule": ("default" if standing else "default (no standing recorded for this segment)")
            + (f" ('{dropped}' withheld)" if dropped else "")}


#: Risk band of a customer CLV did not score, from their own lifecycle state (``customer_features``).
STATE_RISK_BAND = {"new": "low", "active": "low", "lapsing": "medium", "lapsed": "high"}


def intervention_priority(customers: pd.DataFrame, book: dict[str, Any],
                          standings: dict[int, dict[str, Any]] | None = None, withheld: Any = ()) -> pd.DataFrame:
    """Priority and action of each customer from its segment's standing, its own state and churn risk.

    Parameters
    ----------
    customers
        ``customer_key``, ``segment_id``, ``segment_name``, ``p_alive`` (NaN when the CLV stage
        did not score the customer: churn risk unknown, band from :data:`STATE_RISK_BAND`), and the customer's own
        ``lifecycle_state`` and ``repeat_buyer`` when known (absent or NULL: unknown, which no
        state condition matches).
    book
        :func:`load_playbook` output.
    standings
        Standing of each segment id (see :func:`segment_standings`).
    withheld
        Action claims (:data:`ACTION_CLAIMS`) a backtest found false: rules claiming them are skipped.

    Returns
    -------
    ``customer_key``, ``segment_id``, ``segment_name``, ``churn_risk``, ``risk_band``,
    ``value_tier``, ``action``, ``priority``, ``priority_rank``, ``lifecycle_state``,
    ``action_claim`` (the tier the action claims, NULL for none) and ``playbook_rule``.
    """
    standings = standings or {}
    bands = book["risk_bands"]
    out = customers[["customer_key", "segment_id", "segment_name"]].copy()
    n = len(out)
    state = (customers["lifecycle_state"] if "lifecycle_state" in customers.columns
             else pd.Series([None] * n, index=customers.index))
    state = state.astype(object).where(state.notna(), None)
    # Churn risk is 1 - P(alive) where CLV scored the customer, else unknown (NULL, never a made-up 1.0);
    # the risk band then comes from the customer's own lifecycle state, and is high only when that is
    # unknown too.
    out["churn_risk"] = (1.0 - customers["p_alive"].astype(float)).clip(0, 1)
    by_state = state.map(STATE_RISK_BAND).fillna("high").to_numpy()
    out["risk_band"] = np.where(out["churn_risk"].isna(), by_state,
                                np.where(out["churn_risk"] >= bands["high_risk"], "high",
                                         np.where(out["churn_risk"] >= bands["medium_risk"], "medium", "low")))
    if "repeat_buyer" in customers.columns:
        repeat = customers["repeat_buyer"].astype(float)
        buyer = pd.Series(np.where(repeat.isna(), None, np.where(repeat > 0, "repeat", "one-time")),
                          index=customers.index, dtype=object)
    else:
        buyer = pd.Series([None] * n, index=customers.index, dtype=object)
    keys = pd.DataFrame({"segment_id": out["segment_id"].astype("int64").to_numpy(),
                         "state": state.to_numpy(), "buyer": buyer.to_numpy()})
    # One playbook lookup per distinct (segment, state, buyer), spread to the customers by group code: a
    # handful of combinations, so no per-customer Python (about 5 CPU-s for 480k customers).
    entry = _per_combination(keys, out.index, lambda seg, st, by: playbook_entry(book, standings.get(int(seg)),
                                                                                  st, by, withheld))
    out["value_tier"] = entry("value_tier")
    out["action"] = entry("action")
    tiers = pd.DataFrame({"tier": out["value_tier"].to_numpy(), "band": out["risk_band"].to_numpy()})
    out["priority"] = _per_combination(tiers, out.index, lambda t, b: {"priority": book["priority"][t][b]})("priority")
    out["priority_rank"] = out["priority"].map({p: i + 1 for i, p in enumerate(PRIORITY_ORDER)}).astype("int64")
    out["lifecycle_state"] = state.to_numpy()
    out["action_claim"] = entry("claim")
    out["playbook_rule"] = entry("rule")
    return out


def _per_combination(keys: pd.DataFrame, index: pd.Index, lookup: Any) -> Any:
    """``lookup(*row)`` once per distinct row of ``keys``; returns ``field -> Series on index, rows' order``.

    Missing values (``None``) form their own combination, as in a row-by-row lookup. A field's Series
    holds the same set of values as the row-by-row list would, so pandas infers the same dtype.
    """
    codes = keys.groupby(list(keys.columns), sort=False, dropna=False).ngroup().to_numpy()
    # ngroup(sort=False) numbers the combinations in order of first appearance, as drop_duplicates lists them.
    found = [lookup(*row) for row in keys.drop_duplicates().itertuples(index=False, name=None)]

    def field(name: str) -> pd.Series:
        return pd.Series([f[name] for f in found]).take(codes).set_axis(index)

    return field


def segment_standings(wh: Warehouse, as_of_date: dt.date) -> dict[int, dict[str, Any]]:
    """The standing of every segment published on ``as_of_date``.

    Taken from the labels (``segment_labels``) of the model run whose labels are published (a
    date whose gate failed carries an earlier run's labels), else the latest label of that
    segment id on or before the date. Warehouses labelled before ``segment_labels`` existed (and
    hand-built ones) are read from ``segment_profiles.standing`` the same way.
    """
    import json

    query = (
        "WITH published AS (SELECT DISTINCT segment_id, model_run_id FROM customer_segments WHERE as_of_date = :d) "
        "SELECT p.segment_id, p.standing FROM (SELECT sp.segment_id, sp.standing, ROW_NUMBER() OVER ("
        "PARTITION BY sp.segment_id ORDER BY CASE WHEN sp.model_run_id = pub.model_run_id THEN 0 ELSE 1 END, "
        "sp.as_of_date DESC) AS rn FROM {table} sp JOIN published pub ON pub.segment_id = sp.segment_id "
        "WHERE sp.as_of_date <= :d AND sp.standing IS NOT NULL) p WHERE p.rn = 1")
    for table in ("segment_labels", "segment_profiles"):
        if not wh.has_table(table) or "standing" not in (wh.table_columns(table) or []):
            continue
        rows = wh.query_df(query.format(table=table), {"d": as_of_date})
        if len(rows):
            return {int(r.segment_id): json.loads(r.standing) for r in rows.itertuples()}
    return {}


def withheld_action_claims(wh: Warehouse, as_of_date: dt.date) -> dict[str, str]:
    """Action claims the date's backtest found false (``label_runs.claims_withheld``): ``{claim: reason}``."""
    import json

    if not wh.has_table("label_runs"):
        return {}
    rows = wh.query_df("SELECT claims_withheld FROM label_runs WHERE as_of_date = :d", {"d": as_of_date})
    if rows.empty or rows["claims_withheld"].isna().all():
        return {}
    return {c: why for c, why in json.loads(rows["claims_withheld"].iloc[0]).items() if c in ACTION_CLAIMS}


def clv_unavailable_reason(wh: Warehouse, as_of_date: dt.date) -> str | None:
    """Why the date has no CLV (``clv_runs.status = 'unavailable'``), else ``None`` (CLV ran, or no record of it)."""
    if not wh.has_table("clv_runs"):
        return None
    row = wh.query_df("SELECT status, reason FROM clv_runs WHERE as_of_date = :d", {"d": as_of_date})
    if len(row) and row["status"].iloc[0] == "unavailable":
        return str(row["reason"].iloc[0] or "no reason recorded")
    return None


def clv_failed_check(wh: Warehouse, as_of_date: dt.date) -> bool:
    """Whether the date's CLV figures come from a fit that failed its holdout check (``clv_runs.status = 'fitted'``)."""
    if not wh.has_table("clv_runs"):
        return False
    status = wh.query_df("SELECT status FROM clv_runs WHERE as_of_date = :d", {"d": as_of_date})
    return bool(len(status)) and status["status"].iloc[0] == "fitted"


def _concentration_and_priority(wh: Warehouse, as_of_date: dt.date, seg: pd.DataFrame,
                                book: dict[str, Any]) -> tuple[bool, float | None, pd.DataFrame]:
    """Write ``profit_concentration`` and ``customer_priority`` of one date (``wh``: inside the stage's transaction)."""
    cost_known = bool(seg["cost_known"].all())
    # The customer's own lifecycle state decides the action with the segment's standing.
    per_customer = wh.query_df(
                         "SELECT e.customer_key, e.segment_id, e.segment_name, e.profit, e.p_alive, f.lifecycle_state, "
                         "f.repeat_buyer FROM customer_economics e LEFT JOIN customer_features f "
                         "ON f.as_of_date = e.as_of_date AND f.customer_key = e.customer_key "
                         "WHERE e.as_of_date = :d ORDER BY e.customer_key", {"d": as_of_date})
    if cost_known:
        curve, payers_share = profit_concentration(per_customer["profit"])
        curve.insert(0, "as_of_date", as_of_date)
    else:
        # Without costs there is no profit to concentrate: the date's curve is emptied, not guessed.
        curve, payers_share = pd.DataFrame({"as_of_date": [], "customer_share": [], "profit_share": []}), None
    wh.replace_partition("profit_concentration", curve, {"as_of_date": as_of_date})
    withheld = withheld_action_claims(wh, as_of_date)
    for claim, why in withheld.items():
        log.warning("economics %s: action tier '%s' %s; its customers get the next rule that matches",
                    as_of_date, claim, why)
    if clv_failed_check(wh, as_of_date):
        # P(alive) of a fit that failed its holdout check is not acted on as true: risk from each own state.
        log.warning("economics %s: the CLV fit failed its holdout check: churn risk is unknown, risk bands "
                    "come from each customer's lifecycle state", as_of_date)
        per_customer["p_alive"] = np.nan
    priority = intervention_priority(per_customer, book, segment_standings(wh, as_of_date), withheld)
    priority.insert(0, "as_of_date", as_of_date)
    wh.replace_partition("customer_priority", priority, {"as_of_date": as_of_date})
    return cost_known, payers_share, priority


def build_economics(wh: Warehouse, as_of_date: dt.date, settings: EconomicsSettings,
                    playbook_path: str | Path | None = None) -> dict[str, Any]:
    """Economics, concentration curve and priorities for ``as_of_date`` and every later published date.

    Publishing a date republishes the later ones, so their economics are
    recomputed too: all dates are written in one transaction and no
    ``customer_economics`` or ``customer_priority`` row disagrees with its
    date's published labels. Returns the headline figures of ``as_of_date``.

    Figures that need costs (profit, cost-to-serve, loss-making segments, the
    share of customers paying for all) are ``None`` when cost is unknown.
    """
    wh.ensure_schema()
    # Publishing this date republished every later one: their economics follow in the same transaction.
    dates = [pd.Timestamp(d).date() for d in wh.query_df(
        "SELECT DISTINCT as_of_date FROM customer_segments WHERE as_of_date > :d ORDER BY as_of_date",
        {"d": as_of_date})["as_of_date"]]
    book = load_playbook(playbook_path)
    with wh.transaction() as tx:
        for date in reversed([as_of_date, *dates]):  # as_of_date last: its frames are the ones reported
            seg = build_segment_economics(tx, date, settings)
            cost_known, payers_share, priority = _concentration_and_priority(tx, date, seg, book)
    if dates:
        log.info("economics recomputed for the later dates publishing rewrote: %s",
                 ", ".join(d.isoformat() for d in dates))
    top = seg.iloc[0]  # highest profit, or highest revenue when cost is unknown
    loss = seg[seg["profit"] < 0] if cost_known else None
    base = seg["retention_base"].sum()
    figures = {
        "customers": int(seg["customers"].sum()),
        "revenue": float(seg["revenue"].sum()),
        "cost_known": cost_known,
        "profit": float(seg["profit"].sum()) if cost_known else None,
        "cost_to_serve": float(seg["cost_to_serve"].sum()) if cost_known else None,
        "share_of_customers_paying_for_all": payers_share,
        "top_segment": str(top["segment_name"]),
        "top_segment_customer_share": float(top["customer_share"]),
        "top_segment_profit_share": float(top["profit_share"]) if pd.notna(top["profit_share"]) else None,
        "loss_making_segments": int(len(loss)) if cost_known else None,
        "cost_to_serve_loss_making": float(loss["cost_to_serve"].sum()) if cost_known else None,
        "repeat_retention": float((seg["repeat_retention"].fillna(0) * seg["retention_base"]).sum() / base)
        if base else None,
        "alive_share": float((seg["alive_share"] * seg["customers"]).sum() / seg["customers"].sum())
        if seg["alive_share"].notna().all() else None,
        "critical_customers": int((priority["priority"] == "critical").sum()),
        "gross_margin_rate": settings.gross_margin,
        "gross_margin_assumed": settings.gross_margin_assumed,
    }
    clv_unavailable = clv_unavailable_reason(wh, as_of_date)
    figures["clv_available"] = clv_unavailable is None
    if clv_unavailable is not None:
        log.warning("economics %s: CLV not available: %s. Alive share, mean and total CLV are unknown (NULL) "
                    "in segment_economics", as_of_date, clv_unavailable)
    if settings.gross_margin_assumed:
        log.warning("economics %s: assumed %s gross margin (the default; set gross_margin): every margin and "
                    "profit figure rests on it", as_of_date, f"{settings.gross_margin:.0%}")
    if cost_known:
        log.info("economics %s: profit %.0f; %.1f%% of customers produce 100%% of it; top segment %s has "
                 "%.1f%% of customers and %.1f%% of profit; %d loss-making segments cost %.0f to serve",
                 as_of_date, figures["profit"], 100 * (payers_share if payers_share is not None else float("nan")),
                 figures["top_segment"], 100 * figures["top_segment_customer_share"],
                 100 * (figures["top_segment_profit_share"] or float("nan")), figures["loss_making_segments"],
                 figures["cost_to_serve_loss_making"])
    else:
        log.warning("economics %s: no support cost data and no servicing cost configured: cost-to-serve and "
                    "profit are unknown (NULL); set servicing_cost_per_customer/_per_order or load "
                    "raw_support_contacts to report them", as_of_date)
    log.info("economics %s: revenue %.0f; repeat retention %s, alive share %s", as_of_date, figures["revenue"],
             "n/a" if figures["repeat_retention"] is None else f"{figures['repeat_retention']:.1%}",
             "n/a" if figures["alive_share"] is None else f"{figures['alive_share']:.1%}")
    return figures
