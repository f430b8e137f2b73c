"""The published labels against CLV: value order against mean CLV, lapsed names against P(alive).

CLV is a witness the labeller already heard (:func:`include.labels.build.clv_witness`): the claims
CLV contradicted were withheld there. This check records the final labels against CLV, so a
contradiction still standing is visible (table ``segment_clv_check``, task ``crosscheck_clv``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from include.clv.models import crosscheck_segments
from include.runtime.errors import WarehouseError
from include.segmentation.naming import LAPSED_MAX_ALIVE_SHARE

#: What the check reads of each label (``segment_labels``, one row per label).
LABEL_COLUMNS = ("segment_id", "segment_name", "customers", "revenue_per_customer", "value_standing", "standing")


@dataclass(frozen=True)
class LabelCheck:
    """One date's check: a row per label, the rank correlation, and the contradictions left standing."""

    rows: pd.DataFrame
    spearman: float
    unresolved: tuple[str, ...]  # "segment <id> '<name>': <reason>" for each label CLV still contradicts
    checked: bool


def check_labels(labels: pd.DataFrame, clv: pd.DataFrame | None, note: str | None) -> LabelCheck:
    """Check ``labels`` against the per-label CLV aggregates ``clv`` (``None``: no CLV, say why in ``note``).

    Parameters
    ----------
    labels : pandas.DataFrame
        The date's labels with :data:`LABEL_COLUMNS`; ``standing`` is the labeller's JSON (its
        ``recency`` word and the claims it ``withheld`` and why).
    clv : pandas.DataFrame or None
        Per ``segment_id``: ``mean_clv_365d``, ``total_clv_365d``, the band, ``mean_p_alive`` and
        ``alive_share`` (the share of members with P(alive) >= 0.5).
    note : str or None
        Why there is no CLV witness, when ``clv`` is ``None``.

    Returns
    -------
    LabelCheck
        A "lapsed" label with more than :data:`LAPSED_MAX_ALIVE_SHARE` of its members alive by the
        model, or a value claim CLV contradicts (:func:`include.clv.models.crosscheck_segments`), is
        unresolved; a claim the labeller withheld on CLV's word is flagged with the reason, resolved.
    """
    missing = [c for c in LABEL_COLUMNS if c not in labels.columns]
    if missing:
        raise WarehouseError(f"segment_labels is missing column(s) {', '.join(missing)}")
    profiles = labels.rename(columns={"revenue_per_customer": "monetary"})
    if clv is None:
        rows = profiles[["segment_id", "segment_name", "customers"]].copy()
        rows["value_rank"] = profiles["monetary"].rank(ascending=False, method="first").astype(int)
        rows["flag"], rows["reason"] = False, f"could not check: {note}"
        return LabelCheck(rows, float("nan"), (), False)
    rows, spearman = crosscheck_segments(
        profiles[["segment_id", "segment_name", "customers", "monetary", "value_standing"]], clv)
    rows["alive_share"] = rows["segment_id"].map(clv.set_index("segment_id")["alive_share"])
    standing = {int(r.segment_id): json.loads(r.standing) for r in labels.itertuples()}
    reasons, flags, unresolved = [], [], []
    for r in rows.itertuples():
        st = standing[int(r.segment_id)]
        reason = [r.reason] if isinstance(r.reason, str) else []
        if st.get("recency") == "lapsed" and pd.notna(r.alive_share) and r.alive_share > LAPSED_MAX_ALIVE_SHARE:
            reason.append(f"called lapsed but {r.alive_share:.0%} of members have P(alive) >= 0.5")
        withdrawn = [f"'{claim}' withheld by the labeller ({why})" for claim, why in
                     (st.get("withheld") or {}).items() if why.startswith("CLV")]
        flags.append(bool(reason or withdrawn))
        reasons.append("; ".join([*reason, *withdrawn]) or None)
        if reason:
            unresolved.append(f"segment {r.segment_id} '{r.segment_name}': {'; '.join(reason)}")
    rows["flag"], rows["reason"] = flags, reasons
    return LabelCheck(rows, spearman, tuple(unresolved), True)
