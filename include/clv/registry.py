"""Fitted CLV models in the MLflow model registry: pyfunc wrappers, registration and the champion alias.

The purchase model (BG/NBD or MBG/NBD, whichever the run chose) is registered
as ``clv_purchases``, its pyfunc carrying the model's kind; the spend model as
``clv_gamma_gamma``. A run that scores with ``clv_use_champion`` loads both.
"""

from __future__ import annotations

import pandas as pd

from include.clv.mbgnbd import ModifiedBetaGeoNBD
from include.clv.models import BetaGeoNBD, GammaGammaSpend, PurchaseModel

PURCHASE_MODEL_NAME = "clv_purchases"
GAMMA_GAMMA_MODEL_NAME = "clv_gamma_gamma"
CHAMPION = "champion"
#: Purchase model classes by their ``KEY`` (the pyfunc ``kind``).
PURCHASE_MODEL_CLASSES: dict[str, type] = {cls.KEY: cls for cls in (BetaGeoNBD, ModifiedBetaGeoNBD)}


def _pyfunc_base():
    import mlflow.pyfunc

    return mlflow.pyfunc.PythonModel


class ClvPyfunc(_pyfunc_base()):
    """A fitted CLV model as an MLflow pyfunc: parameters in, predictions from the closed forms.

    ``kind`` is a purchase model's ``KEY`` (``"bgnbd"``, ``"mbgnbd"``; input:
    frequency, recency, t; output: p_alive, expected_purchases_90d,
    expected_purchases_365d) or ``"gamma_gamma"`` (input: frequency,
    monetary_value; output: expected_order_value).
    """

    def __init__(self, kind: str, params: dict[str, float], unit_days: int) -> None:
        if kind != "gamma_gamma" and kind not in PURCHASE_MODEL_CLASSES:
            raise ValueError(f"unknown CLV model kind {kind!r}")
        self.kind, self.params, self.unit_days = kind, dict(params), int(unit_days)

    def model(self) -> PurchaseModel | GammaGammaSpend:
        if self.kind == "gamma_gamma":
            return GammaGammaSpend(**self.params)
        return PURCHASE_MODEL_CLASSES[self.kind](**self.params)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:  # noqa: ARG002
        model = self.model()
        if self.kind == "gamma_gamma":
            return pd.DataFrame({"expected_order_value": model.expected_spend(model_input["frequency"],
                                                                              model_input["monetary_value"])})
        x, tx, t = model_input["frequency"], model_input["recency"], model_input["t"]
        return pd.DataFrame({
            "p_alive": model.p_alive(x, tx, t),
            "expected_purchases_90d": model.expected_purchases(x, tx, t, 90 / self.unit_days),
            "expected_purchases_365d": model.expected_purchases(x, tx, t, 365 / self.unit_days),
        })


def register_models(parent_run_id: str, purchases: PurchaseModel, gg: GammaGammaSpend, summary: pd.DataFrame,
                    unit_days: int, champion: bool) -> dict[str, str]:
    """Log both models (with signatures) in a child run, register them, and alias them ``champion`` if asked."""
    import mlflow
    from mlflow.models import infer_signature

    from include.runtime import tracking

    client = tracking.client()
    child = tracking.child_run(parent_run_id, "clv models")
    versions = {}
    example = summary[["frequency", "recency", "t", "monetary_value"]].head(5).astype(float)
    with mlflow.start_run(run_id=child):
        for name, model, cols in ((PURCHASE_MODEL_NAME, ClvPyfunc(purchases.KEY, purchases.params(), unit_days),
                                   ["frequency", "recency", "t"]),
                                  (GAMMA_GAMMA_MODEL_NAME, ClvPyfunc("gamma_gamma", gg.params(), unit_days),
                                   ["frequency", "monetary_value"])):
            signature = infer_signature(example[cols], model.predict(None, example[cols]))
            info = mlflow.pyfunc.log_model(name=name, python_model=model, signature=signature,
                                           input_example=example[cols], registered_model_name=name,
                                           pip_requirements=["numpy", "pandas", "scipy", "mlflow"])
            versions[name] = str(info.registered_model_version)
            client.set_model_version_tag(name, versions[name], "kind", model.kind)
            if champion:
                client.set_registered_model_alias(name, CHAMPION, versions[name])
    return versions


def load_champions() -> tuple[PurchaseModel, GammaGammaSpend, int]:
    """The models aliased ``champion`` in the registry (raises when there are none)."""
    import mlflow.pyfunc

    from include.runtime import tracking

    tracking.client()  # sets the tracking URI
    try:
        purchases = mlflow.pyfunc.load_model(f"models:/{PURCHASE_MODEL_NAME}@{CHAMPION}").unwrap_python_model()
        gg_model = mlflow.pyfunc.load_model(f"models:/{GAMMA_GAMMA_MODEL_NAME}@{CHAMPION}").unwrap_python_model()
    except Exception as exc:  # noqa: BLE001 - re-raised with the reason an operator needs
        raise RuntimeError("no champion CLV models in the MLflow registry yet: run once with "
                           "clv_use_champion=false to fit and register them") from exc
    return purchases.model(), gg_model.model(), purchases.unit_days
