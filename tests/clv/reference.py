"""pymc-marketing's own fit, the reference the pipeline's maximum-likelihood fits are checked against.

The pipeline maximises the same likelihoods with SciPy (``include/clv/likelihood.py``
says why). Here pymc-marketing fits them as it documents it, ``fit(method="map")``
with flat priors, under PyTensor's ``FAST_COMPILE`` mode: the Python linker needs
no C compiler, which spares the test session a cold compile cache (about
40 s per model on 2 cores) and changes nothing in what is computed.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd


def pymc_marketing_map(model_cls, data: pd.DataFrame, names: tuple[str, ...]):
    """A pymc-marketing CLV model fitted by MAP with ``HalfFlat`` priors on ``names``; returns the model."""
    import pytensor
    from pymc_extras.prior import Prior

    with warnings.catch_warnings(), pytensor.config.change_flags(mode="FAST_COMPILE"):
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        model = model_cls(data=data, model_config={k: Prior("HalfFlat") for k in names})
        model.fit(method="map", progressbar=False)
    return model


def map_params(model, names: tuple[str, ...]) -> dict[str, float]:
    """The MAP point of a fitted model (one chain, one draw)."""
    return {k: float(model.idata.posterior[k].values.mean()) for k in names}


def purchase_frame(summary: pd.DataFrame) -> pd.DataFrame:
    """A frequency/recency/t summary as pymc-marketing's purchase models take it."""
    return pd.DataFrame({"customer_id": np.arange(len(summary)), "frequency": summary["frequency"].to_numpy(),
                         "recency": summary["recency"].to_numpy(), "T": summary["t"].to_numpy()})
