"""Scoring record pairs with a trained Splink model: everyone at once, or only new records.

One :class:`LinkageSession` holds the linkage input of a run in DuckDB and the
model. It scores

- every blocked pair (:meth:`LinkageSession.score_all`, a full re-link), or
- only what a weekly run must decide (:meth:`LinkageSession.score_incremental`):
  new and changed records against every record and against each other
  (Splink 5's ``predict_between`` and ``predict_within``), plus the unchanged
  records of clusters that lost a record, among themselves (their old links
  may have run through the record that left).

Both return the links at or above the match threshold and the sums the
truth-free quality estimate needs (:mod:`include.identity.quality`), over the
pairs they scored with a match probability of at least :data:`PAIR_FLOOR`
(the many pairs below it add almost nothing to any sum and would cost memory).

Equal strong identifiers (``id_*``: a national id, a customer number) are not
left apart by the model's arithmetic alone: a pair with an equal ``id_*``
value that scores below the threshold is linked anyway unless *everything
else contradicts it*, i.e. every other comparison with data on both sides is
at its "all other" level and at least one has data (then the pair stays apart
and is counted: :attr:`ScoredPairs.equal_ids_contradicted`). The 10 pairs with
equal ids a public person-only benchmark left apart were such pairs: several
other fields re-keyed, none flatly contradicting.

Term frequencies are computed over all of the run's records in both modes,
so a new record is scored as it would be in a full re-link.
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from include.identity import linkage as splink_linkage

log = logging.getLogger(__name__)

#: Pairs scored below this match probability are not kept (they do not count in the sums).
PAIR_FLOOR = 0.001
#: Half-width, in match weight (bits), of the band around the threshold counted as "near".
NEAR_THRESHOLD_BITS = 2.0
_TOTALS = ("pairs_scored", "links", "expected_true_links", "expected_matches", "links_near_threshold",
           "non_links_near_threshold")


@dataclass
class ScoredPairs:
    """What one scoring pass found.

    Attributes
    ----------
    links
        ``unique_id_l``, ``unique_id_r``, ``match_probability`` and ``kind``
        (``model``: at or above the threshold; ``equal_id``: an equal strong id
        the model scored below it, linked by the rule in the module docstring).
    totals
        Over the pairs scored at or above :data:`PAIR_FLOOR`: ``pairs_scored``;
        ``links`` and ``expected_true_links`` (their count and summed match
        probability, the model's own expectation of how many are true);
        ``expected_matches`` (summed probability of all of them);
        ``links_near_threshold`` / ``non_links_near_threshold`` (within
        :data:`NEAR_THRESHOLD_BITS` bits above / below the threshold's weight).
    equal_ids_contradicted
        Pairs with an equal strong id kept apart because everything else contradicts them.
    equal_id_pairs
        Pairs with an equal strong id that were scored.
    """

    links: pd.DataFrame
    totals: dict[str, float] = field(default_factory=lambda: dict.fromkeys(_TOTALS, 0.0))
    equal_ids_contradicted: int = 0
    equal_id_pairs: int = 0


def _threshold_weight(threshold: float) -> float:
    import math

    return math.log2(threshold / (1 - threshold))


def _symmetric(rule_sql: str) -> bool:
    """Whether a blocking rule stays the same with ``l`` and ``r`` swapped (``l.x = r.x AND ...``).

    Compared as sets of equalities, each side order-free; anything else counts as not symmetric.
    """
    def equalities(sql: str) -> set[tuple[str, ...]] | None:
        out = set()
        for part in re.split(r"\bAND\b", sql, flags=re.IGNORECASE):
            sides = re.sub(r"[()\s]", "", part).split("=")
            if len(sides) != 2:
                return None
            out.add(tuple(sorted(sides)))
        return out

    swapped = re.sub(r"\b([lr])\.", lambda m: "r." if m.group(1) == "l" else "l.", rule_sql)
    mine = equalities(rule_sql)
    return mine is not None and mine == equalities(swapped)


class LinkageSession:
    """The linkage input of one run in DuckDB, with ``model`` ready to score it.

    Parameters
    ----------
    frame
        Output of :func:`include.identity.linkage.linkage_input` (every record of the run).
    model
        A trained Splink model JSON.
    threshold
        Match probability at which two records are linked.
    """

    def __init__(self, frame: pd.DataFrame, model: dict[str, Any], threshold: float, *, threads: int = 2,
                 memory_limit: str | None = "3GB") -> None:
        from splink import Linker

        if not 0 < threshold < 1:
            raise ValueError(f"identity match threshold must be in (0, 1), got {threshold}")
        splink_linkage._splink_quiet()
        self.threshold = float(threshold)
        self.db_api = splink_linkage._db_api(threads, memory_limit)
        self.con = self.db_api.duckdb_con
        self.records = splink_linkage._register_input(self.db_api, frame)
        self._frame = f"{self.records.physical_name}_frame"
        self._derived = splink_linkage.derived_select(frame.columns)
        self.linker = Linker(self.records, model)
        self.strong_ids = splink_linkage.identifier_columns(splink_linkage.model_columns(model))
        self._id_linker = None
        if self.strong_ids:
            # The same model, blocking on the strong ids only and keeping each comparison's level
            # (gamma), to tell "everything else contradicts them" from the rest.
            settings = copy.deepcopy(model)
            settings["retain_matching_columns"] = True
            settings["retain_intermediate_calculation_columns"] = False
            rules = [splink_linkage._block_on((c,)).create_blocking_rule_dict("duckdb") for c in self.strong_ids]
            settings["blocking_rules_to_generate_predictions"] = rules
            self._id_linker = Linker(self.records, settings)
        self._others = [c["output_column_name"] for c in model["comparisons"]
                        if c["output_column_name"] not in self.strong_ids]
        self._tf_ready = False

    # -- helpers -------------------------------------------------------------------
    def _sql(self, sql: str) -> pd.DataFrame:
        return self.con.sql(sql).df()

    def _subset(self, name: str, ids: pd.Series):
        """Register the records whose ``unique_id`` is in ``ids`` as table ``name``."""
        frame = pd.DataFrame({"unique_id": pd.Series(ids, dtype="string").to_numpy()})
        self.con.register(f"{name}_ids", frame)
        self._select_records(name, f"SEMI JOIN {name}_ids i USING (unique_id)")
        self.con.unregister(f"{name}_ids")
        return self.db_api.register(name, dataset_display_name=name)

    def _select_records(self, name: str, joins: str) -> None:
        """Create table ``name`` from the input frame's rows ``joins`` keeps, with the derived columns.

        The derived columns are computed after the filter (the input view computes them for
        every record first: 1.9 CPU-s per subset at 1M records).
        """
        self.con.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT f.*{self._derived} FROM {self._frame} f "
                         f"{joins}").fetchall()

    def _ensure_tf(self) -> None:
        # predict_within / predict_between read registered term-frequency tables; computed
        # over every record of the run, as a full re-link computes them, with Splink's own
        # formula, by one GROUP BY on the input frame: Splink's compute_tf_table materialises
        # the whole input with its derived address columns first (most of an incremental
        # run's cost at 870k records).
        if self._tf_ready:
            return
        frame = self._frame
        done: dict[str, Any] = {}
        for linker in (self.linker, self._id_linker):
            if linker is None:
                continue
            for col in linker._settings_obj._term_frequency_columns:
                name, tf_name = col.unquote().name, col.unquote().tf_name
                if name not in done:
                    table = f"__identity_tf_{name}"
                    self.con.execute(
                        f'CREATE OR REPLACE TABLE {table} AS SELECT "{name}", CAST(COUNT(*) AS FLOAT8) / '
                        f'(SELECT COUNT("{name}") FROM {frame}) AS "{tf_name}" FROM {frame} '
                        f'WHERE "{name}" IS NOT NULL GROUP BY "{name}"').fetchall()
                    done[name] = self.db_api.register(table, dataset_display_name=table)
                linker.table_management.register_term_frequency_lookup(done[name], name)
        self._tf_ready = True

    def _base_candidates(self, new: str) -> str:
        """Register table ``old_records``: the other records that share a blocking key with a record of ``new``.

        Every pair ``predict_between(new, old)`` can block satisfies one of the blocking
        rules, so only records that satisfy one with some new record (either side) can be
        in a pair: the same pairs as against every record, without deriving the address
        columns and concatenating the whole base for each step (semi-joins on the input
        frame, the new records being the small side).
        """
        rules = []
        for linker in (self.linker, self._id_linker):
            if linker is not None:
                rules += [br.blocking_rule_sql for br in linker._settings_obj._blocking_rules_to_generate_predictions]
        # One scan of the input frame into a native table (each scan of the pandas frame
        # converts its strings again), then a join per rule, the new records the small side;
        # both orientations only for rules that are not symmetric (names the wrong way round).
        self.con.execute(f"CREATE OR REPLACE TEMP TABLE base_keys AS SELECT * FROM {self._frame}").fetchall()
        found = []
        for rule in dict.fromkeys(rules):
            found.append(f"SELECT r.unique_id FROM base_keys r JOIN {new} l ON ({rule})")
            if not _symmetric(rule):
                found.append(f"SELECT l.unique_id FROM base_keys l JOIN {new} r ON ({rule})")
        self._select_records("old_records", f"SEMI JOIN ({' UNION '.join(found)}) c USING (unique_id) "
                                            f"ANTI JOIN {new} n USING (unique_id)")
        self.con.execute("DROP TABLE base_keys").fetchall()
        return "old_records"

    def _collect(self, predictions: list[str], same_group: str | None = None) -> tuple[pd.DataFrame, dict]:
        """Links and totals of prediction tables (``same_group``: keep pairs whose ``grp`` is equal)."""
        union = " UNION ALL ".join(f"SELECT unique_id_l, unique_id_r, match_weight, match_probability FROM {t}"
                                   for t in predictions)
        if same_group:
            union = (f"SELECT p.* FROM ({union}) p JOIN {same_group} a ON a.unique_id = p.unique_id_l "
                     f"JOIN {same_group} b ON b.unique_id = p.unique_id_r WHERE a.grp = b.grp")
        tw = _threshold_weight(self.threshold)
        t = self.threshold
        totals = self._sql(f"""
            SELECT COUNT(*) AS pairs_scored,
                   COUNT(*) FILTER (WHERE match_probability >= {t}) AS links,
                   COALESCE(SUM(match_probability) FILTER (WHERE match_probability >= {t}), 0) AS expected_true_links,
                   COALESCE(SUM(match_probability), 0) AS expected_matches,
                   COUNT(*) FILTER (WHERE match_probability >= {t} AND match_weight < {tw + NEAR_THRESHOLD_BITS})
                       AS links_near_threshold,
                   COUNT(*) FILTER (WHERE match_probability < {t} AND match_weight >= {tw - NEAR_THRESHOLD_BITS})
                       AS non_links_near_threshold
            FROM ({union})""").iloc[0].astype(float).to_dict()
        links = self._sql(f"SELECT unique_id_l, unique_id_r, match_probability FROM ({union}) "
                          f"WHERE match_probability >= {t}")
        return links.assign(kind="model"), totals

    def _equal_id_links(self, predictions: list[str], same_group: str | None = None) -> tuple[pd.DataFrame, int, int]:
        """Equal-id pairs below the threshold that nothing else contradicts, the contradicted count, all equal-id pairs."""
        equal = " OR ".join(f'"{c}_l" = "{c}_r"' for c in self.strong_ids)
        gammas = [f'"gamma_{c}"' for c in self._others]
        contradicted = f"GREATEST({', '.join(gammas)}) = 0" if gammas else "FALSE"
        cols = "unique_id_l, unique_id_r, match_probability, " + (", ".join(gammas) + ", " if gammas else "")
        union = " UNION ALL ".join(f"SELECT {cols}{equal} AS equal_id FROM {t}" for t in predictions)
        if same_group:
            union = (f"SELECT p.* FROM ({union}) p JOIN {same_group} a ON a.unique_id = p.unique_id_l "
                     f"JOIN {same_group} b ON b.unique_id = p.unique_id_r WHERE a.grp = b.grp")
        frame = self._sql(f"""
            SELECT unique_id_l, unique_id_r, match_probability, {contradicted} AS contradicted
            FROM ({union}) WHERE equal_id""")
        below = frame[frame["match_probability"] < self.threshold]
        keep = below[~below["contradicted"].astype(bool)]
        links = keep[["unique_id_l", "unique_id_r", "match_probability"]].assign(kind="equal_id")
        return links, int(below["contradicted"].astype(bool).sum()), len(frame)

    @staticmethod
    def _merge(parts: list[ScoredPairs]) -> ScoredPairs:
        links = pd.concat([p.links for p in parts], ignore_index=True) if parts else pd.DataFrame(
            columns=["unique_id_l", "unique_id_r", "match_probability", "kind"])
        totals = {k: float(sum(p.totals.get(k, 0.0) for p in parts)) for k in _TOTALS}
        return ScoredPairs(links, totals, sum(p.equal_ids_contradicted for p in parts),
                           sum(p.equal_id_pairs for p in parts))

    def _pass(self, model_tables: list[str], id_tables: list[str], same_group: str | None = None) -> ScoredPairs:
        links, totals = self._collect(model_tables, same_group)
        contradicted = pairs = 0
        if id_tables:
            extra, contradicted, pairs = self._equal_id_links(id_tables, same_group)
            links = pd.concat([links, extra], ignore_index=True)
        return ScoredPairs(links, totals, contradicted, pairs)

    # -- scoring -------------------------------------------------------------------
    def score_all(self) -> ScoredPairs:
        """Every blocked pair of the run's records (a full re-link)."""
        model = self.linker.inference.predict(threshold_match_probability=PAIR_FLOOR).physical_name
        ids = [self._id_linker.inference.predict().physical_name] if self._id_linker is not None else []
        return self._pass([model], ids)

    def score_incremental(self, new_ids: pd.Series, regroup: pd.DataFrame | None = None) -> ScoredPairs:
        """Pairs a weekly run must decide.

        Parameters
        ----------
        new_ids
            ``unique_id`` of the new and changed records: scored against every
            other record and against each other.
        regroup
            ``unique_id`` and ``grp`` of unchanged records whose cluster lost a
            record: scored among themselves, pairs within one ``grp`` kept.
        """
        self._ensure_tf()
        parts = []
        new_ids = pd.Series(new_ids, dtype="string")
        if len(new_ids):
            new = self._subset("new_records", new_ids)
            old = self.db_api.register(self._base_candidates("new_records"), dataset_display_name="old_records")
            inference = self.linker.inference
            model = [inference.predict_between(new, old, threshold_match_probability=PAIR_FLOOR,
                                               warning_mode="never").physical_name,
                     inference.predict_within(new, threshold_match_probability=PAIR_FLOOR,
                                              warning_mode="never").physical_name]
            ids = []
            if self._id_linker is not None:
                ids = [self._id_linker.inference.predict_between(new, old, warning_mode="never").physical_name,
                       self._id_linker.inference.predict_within(new, warning_mode="never").physical_name]
            parts.append(self._pass(model, ids))
        if regroup is not None and len(regroup):
            self.con.register("regroup_frame", pd.DataFrame({"unique_id": regroup["unique_id"].astype("string").to_numpy(),
                                                             "grp": regroup["grp"].astype(str).to_numpy()}))
            self.con.execute("CREATE OR REPLACE TABLE regroup_groups AS SELECT * FROM regroup_frame").fetchall()
            self.con.unregister("regroup_frame")
            again = self._subset("regroup_records", regroup["unique_id"])
            model = [self.linker.inference.predict_within(again, threshold_match_probability=PAIR_FLOOR,
                                                          warning_mode="never").physical_name]
            ids = ([self._id_linker.inference.predict_within(again, warning_mode="never").physical_name]
                   if self._id_linker is not None else [])
            parts.append(self._pass(model, ids, same_group="regroup_groups"))
        return self._merge(parts)
