"""MBG/NBD: the BG/NBD variant in which a customer can drop out right after the first purchase.

BG/NBD (Fader, Hardie & Lee 2005) lets a customer drop out only after a
repeat purchase, so every customer without one has P(alive) = 1, however long
ago they were seen: on shops where half the customers buy once, churn risk is
0 for someone last seen 500 days ago. MBG/NBD (Batislam, Denizel & Filiztekin
2007) adds the dropout chance at time 0 (after the first purchase), which
makes a long-silent one-time buyer likely inactive. The pipeline fits both and
keeps the one with the lower holdout error each run (``include/clv/selection.py``).

Fitting maximises the likelihood of pymc-marketing's ``ModifiedBetaGeoNBD``
distribution with SciPy (``include/clv/likelihood.py``; flat priors, so the
MAP of pymc-marketing's ``ModifiedBetaGeoModel`` = maximum likelihood);
predictions use the closed forms below, in log space so that frequent buyers
do not overflow. ``tests/clv/test_mbgnbd.py`` checks fits and predictions
against pymc-marketing and lifetimes' ``ModifiedBetaGeoFitter``.

References
----------
Batislam, E. P., Denizel, M., Filiztekin, A. (2007). Empirical validation and
comparison of models for customer base analysis. International Journal of
Research in Marketing 24(3), 201-209.
Wagner, U., Hoppe, D. (2008). Erratum on the MBG/NBD model. International
Journal of Research in Marketing 25(3), 225-226.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special

from include.clv.likelihood import compress, maximise, mbgnbd_loglik
from include.clv.models import BetaGeoNBD


@dataclass
class ModifiedBetaGeoNBD:
    """MBG/NBD model of repeat purchases (Batislam et al. 2007; Wagner & Hoppe 2008).

    Parameters
    ----------
    r, alpha : float
        Gamma heterogeneity of the purchase rate.
    a, b : float
        Beta heterogeneity of the dropout probability (applied after every
        purchase, the first included).
    """

    r: float = np.nan
    alpha: float = np.nan
    a: float = np.nan
    b: float = np.nan

    #: Short name used in MLflow metric prefixes and the pyfunc ``kind``.
    KEY = "mbgnbd"
    #: Name stored with each ``customer_clv`` row (column ``clv_model``).
    LABEL = "MBG/NBD"

    @classmethod
    def fit(cls, summary: pd.DataFrame) -> ModifiedBetaGeoNBD:
        """Maximum-likelihood fit (flat priors: what pymc-marketing's ``ModifiedBetaGeoModel`` MAP finds).

        Parameters
        ----------
        summary
            ``frequency``, ``recency`` and ``t`` per customer (``recency <= t``),
            as ``sql/clv_summary.sql`` writes them; checked as for BG/NBD.
        """
        data, weights = compress(BetaGeoNBD.model_input(summary, "MBG/NBD summary"))
        return cls(**maximise(mbgnbd_loglik, ("r", "alpha", "a", "b"), data, weights, cls.LABEL).params)

    def params(self) -> dict[str, float]:
        return {"r": self.r, "alpha": self.alpha, "a": self.a, "b": self.b}

    def _log_odds_dead(self, x, tx, T):
        return (np.log(self.a) - np.log(self.b + x)
                + (self.r + x) * (np.log(self.alpha + T) - np.log(self.alpha + tx)))

    def p_alive(self, frequency, recency, t) -> np.ndarray:
        """P(customer still active | x, t_x, T) (Batislam et al. 2007, eq. 5).

        ``1 / (1 + a / (b + x) * ((alpha + T) / (alpha + t_x)) ** (r + x))``: below 1
        for one-time buyers too, falling as their silence ``T`` grows.
        """
        x, tx, T = (np.asarray(v, dtype=float) for v in (frequency, recency, t))
        return special.expit(-self._log_odds_dead(x, tx, T))

    def expected_purchases(self, frequency, recency, t, horizon) -> np.ndarray:
        """E[purchases in (T, T + horizon] | x, t_x, T] (Batislam et al. 2007, eq. 6 with Wagner & Hoppe's erratum)."""
        x, tx, T = (np.asarray(v, dtype=float) for v in (frequency, recency, t))
        h = np.asarray(horizon, dtype=float)
        a, b, r, alpha = self.a, self.b, self.r, self.alpha
        with np.errstate(over="ignore", invalid="ignore"):
            hyp = special.hyp2f1(r + x, b + x + 1, a + b + x, h / (alpha + T + h))
            still = np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + h)))
            numerator = (a + b + x) / (a - 1) * (1 - still * hyp)
        out = numerator * special.expit(-self._log_odds_dead(x, tx, T))
        return np.clip(np.nan_to_num(out, nan=0.0, posinf=0.0), 0.0, None)
