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
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

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


def build_segment_economics(wh: Warehouse, as_of_date: dt.date, settings: EconomicsSettings,
                            conn: sa.Connection | None = None) -> pd.DataFrame:
    """Replace ``customer_economics`` and ``segment_economics`` for ``as_of_date``; return the latter.

    With ``conn`` (from :meth:`Warehouse.begin`) the writes join that transaction.
    """
    if conn is None:
        with wh.begin() as c:
            return build_segment_economics(wh, as_of_date, settings, c)
    if not _read(conn, "SELECT COUNT(*) AS n FROM customer_segments WHERE as_of_date = :d",
                 {"d": as_of_date})["n"].iloc[0]:
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
    wh.run_script(load_sql("economics.sql"), params, conn=conn)
    return _read(conn, "SELECT * FROM segment_economics WHERE as_of_date = :d "
                 "ORDER BY profit DESC NULLS LAST, revenue DESC", {"d": as_of_date})


def _read(conn: sa.Connection, sql: str, params: dict[str, Any]) -> pd.DataFrame:
    """A query on ``conn``, so it sees the transaction's own uncommitted writes."""
    frame = pd.read_sql(sa.text(sql), conn, params=params)
    frame.columns = [str(c).lower() for c in frame.columns]
    return frame


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
RULE_KEYS = ("value", "recency", "frequency", "tenure", "basket", "trait")


def _as_set(value: Any) -> set[str]:
    return {str(v) for v in value} if isinstance(value, list) else {str(value)}


def load_playbook(path: str | Path | None = None) -> dict[str, Any]:
    """Read and check the playbook TOML (default ``include/economics/playbook.toml``).

    Raises
    ------
    ValueError
        Naming the rule and field: an unknown condition key or value tier, a
        missing action, a priority outside :data:`PRIORITY_ORDER`, or a
        ``high`` tier that a lapsed segment could reach.
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
        if entry["value_tier"] == "high" and (where == "[default]" or "lapsed" in _as_set(when.get("recency", "lapsed"))):
            raise ValueError(f"playbook {path}: {where} gives value_tier 'high' to segments that may be lapsed; "
                             "add a recency condition without 'lapsed'")
    for tier, row in book["priority"].items():
        for band in ("high", "medium", "low"):
            if row.get(band) not in PRIORITY_ORDER:
                raise ValueError(f"playbook {path}: priority.{tier}.{band} must be one of {PRIORITY_ORDER}")
    return book


def playbook_entry(book: dict[str, Any], standing: dict[str, Any] | None) -> dict[str, str]:
    """The first playbook rule whose every condition the segment's standing meets, else ``[default]``.

    ``standing`` is the segment's standing (``segment_profiles.standing``,
    parsed); ``None`` (no standing recorded) gets the default. The returned
    entry carries ``rule``: which rule matched, for the report.
    """
    if standing:
        have = {k: _as_set(standing.get(k)) for k in RULE_KEYS if k != "trait"}
        have["trait"] = {t[0] if isinstance(t, list) else str(t) for t in standing.get("traits", [])}
        for i, rule in enumerate(book.get("rules", [])):
            when = rule.get("when", {})
            if all(have[k] & _as_set(v) for k, v in when.items()):
                return {"value_tier": rule["value_tier"], "action": rule["action"],
                        "rule": " and ".join(f"{k} = {v}" for k, v in when.items()) or f"rules[{i}]"}
    return {"value_tier": book["default"]["value_tier"], "action": book["default"]["action"],
            "rule": "default" if standing else "default (no standing recorded for this segment)"}


def intervention_priority(customers: pd.DataFrame, book: dict[str, Any],
                          standings: dict[int, dict[str, Any]] | None = None) -> pd.DataFrame:
    """Priority and action of each customer from its segment's standing and churn risk.

    Parameters
    ----------
    customers
        ``customer_key``, ``segment_id``, ``segment_name``, ``p_alive`` (NaN when
        the CLV stage did not score the customer: treated as high risk).
    book
        :func:`load_playbook` output.
    standings
        Standing of each segment id (see :func:`segment_standings`).
    """
    standings = standings or {}
    bands = book["risk_bands"]
    out = customers[["customer_key", "segment_id", "segment_name"]].copy()
    out["churn_risk"] = (1.0 - customers["p_alive"].astype(float)).fillna(1.0).clip(0, 1)
    out["risk_band"] = np.where(out["churn_risk"] >= bands["high_risk"], "high",
                                np.where(out["churn_risk"] >= bands["medium_risk"], "medium", "low"))
    entries = {int(s): playbook_entry(book, standings.get(int(s))) for s in out["segment_id"].unique()}
    out["value_tier"] = out["segment_id"].map({k: v["value_tier"] for k, v in entries.items()})
    out["action"] = out["segment_id"].map({k: v["action"] for k, v in entries.items()})
    out["priority"] = [book["priority"][t][b] for t, b in zip(out["value_tier"], out["risk_band"], strict=True)]
    out["priority_rank"] = out["priority"].map({p: i + 1 for i, p in enumerate(PRIORITY_ORDER)}).astype("int64")
    return out


def segment_standings(wh: Warehouse, as_of_date: dt.date) -> dict[int, dict[str, Any]]:
    """The standing of every segment published on ``as_of_date``.

    Taken from the profiles of the model run whose labels are published (a
    date whose gate failed carries an earlier run's labels), else the latest
    profile of that segment id on or before the date.
    """
    import json

    if not wh.has_table("segment_profiles") or "standing" not in (wh.table_columns("segment_profiles") or []):
        return {}
    rows = wh.query_df(
        "WITH published AS (SELECT DISTINCT segment_id, model_run_id FROM customer_segments WHERE as_of_date = :d) "
        "SELECT p.segment_id, p.standing FROM (SELECT sp.segment_id, sp.standing, ROW_NUMBER() OVER ("
        "PARTITION BY sp.segment_id ORDER BY CASE WHEN sp.model_run_id = pub.model_run_id THEN 0 ELSE 1 END, "
        "sp.as_of_date DESC) AS rn FROM segment_profiles sp JOIN published pub ON pub.segment_id = sp.segment_id "
        "WHERE sp.as_of_date <= :d AND sp.standing IS NOT NULL) p WHERE p.rn = 1", {"d": as_of_date})
    return {int(r.segment_id): json.loads(r.standing) for r in rows.itertuples()}


def clv_unavailable_reason(wh: Warehouse, as_of_date: dt.date) -> str | None:
    """Why the date has no CLV (``clv_runs.status = 'unavailable'``), else ``None`` (CLV ran, or no record of it)."""
    if not wh.has_table("clv_runs"):
        return None
    row = wh.query_df("SELECT status, reason FROM clv_runs WHERE as_of_date = :d", {"d": as_of_date})
    if len(row) and row["status"].iloc[0] == "unavailable":
        return str(row["reason"].iloc[0] or "no reason recorded")
    return None


def _concentration_and_priority(wh: Warehouse, conn: sa.Connection, as_of_date: dt.date, seg: pd.DataFrame,
                                book: dict[str, Any]) -> tuple[bool, float | None, pd.DataFrame]:
    """Write ``profit_concentration`` and ``customer_priority`` of one date inside ``conn``'s transaction."""
    cost_known = bool(seg["cost_known"].all())
    per_customer = _read(conn,
                         "SELECT customer_key, segment_id, segment_name, profit, p_alive FROM customer_economics "
                         "WHERE as_of_date = :d ORDER BY customer_key", {"d": as_of_date})
    if cost_known:
        curve, payers_share = profit_concentration(per_customer["profit"])
        curve.insert(0, "as_of_date", as_of_date)
    else:
        # Without costs there is no profit to concentrate: the date's curve is emptied, not guessed.
        curve, payers_share = pd.DataFrame({"as_of_date": [], "customer_share": [], "profit_share": []}), None
    wh.replace_partition("profit_concentration", curve, {"as_of_date": as_of_date}, conn=conn)
    priority = intervention_priority(per_customer, book, segment_standings(wh, as_of_date))
    priority.insert(0, "as_of_date", as_of_date)
    wh.replace_partition("customer_priority", priority, {"as_of_date": as_of_date}, conn=conn)
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
    with wh.begin() as conn:
        for date in reversed([as_of_date, *dates]):  # as_of_date last: its frames are the ones reported
            seg = build_segment_economics(wh, date, settings, conn)
            cost_known, payers_share, priority = _concentration_and_priority(wh, conn, date, seg, book)
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
