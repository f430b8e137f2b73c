"""Fitted CLV models in the MLflow model registry: pyfunc wrappers, registration and the champions.

The purchase model (BG/NBD or MBG/NBD, whichever the run chose) is registered
as ``clv_purchases``, its pyfunc carrying the model's kind; the spend model as
``clv_gamma_gamma``. A run that scores with ``clv_use_champion`` loads both.

Every version carries the as-of date of the data it was fitted on (tag
``as_of_date``) and whether it passed the holdout check (tag ``champion``,
``true``/``false``). The champion for an as-of date D is the pair of versions
of the latest accepted fit on an as-of date on or before D: a backfill of an
old date never scores with a model fitted on later data, so its scores do not
depend on which dates ran before it. The ``champion`` alias (for people and
the MLflow UI) follows the accepted fit of the latest as-of date.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

import pandas as pd

from include.clv.errors import NoChampionError
from include.clv.mbgnbd import ModifiedBetaGeoNBD
from include.clv.models import BetaGeoNBD, GammaGammaSpend, PurchaseModel

PURCHASE_MODEL_NAME = "clv_purchases"
GAMMA_GAMMA_MODEL_NAME = "clv_gamma_gamma"
CHAMPION = "champion"
#: Model-version tag: the as-of date (ISO) of the data the version was fitted on.
AS_OF_TAG = "as_of_date"
#: Model-version tag: ``true`` on versions whose fit passed the holdout check (champions from their date on).
CHAMPION_TAG = "champion"
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


class Champion(NamedTuple):
    """The champion models for an as-of date, and which registered fit they are."""

    purchases: PurchaseModel
    spend: GammaGammaSpend
    unit_days: int
    as_of_date: dt.date  # of the fit
    versions: dict[str, str]  # model name -> version


def register_models(parent_run_id: str, purchases: PurchaseModel, gg: GammaGammaSpend, summary: pd.DataFrame,
                    unit_days: int, as_of_date: dt.date, champion: bool) -> dict[str, str]:
    """Log both models (with signatures) in a child run and register them, tagged with ``as_of_date``.

    ``champion``: the fit passed the holdout check; its versions are tagged champions from
    ``as_of_date`` on, and take the ``champion`` alias unless it is on a fit of a later date.
    The champion tag is set last, so a version whose tagging was interrupted is never chosen.
    """
    import mlflow
    from mlflow.models import infer_signature

    from include.runtime import tracking

    client = tracking.client()
    child = tracking.child_run(parent_run_id, "clv models", tags={AS_OF_TAG: as_of_date.isoformat()})
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
            client.set_model_version_tag(name, versions[name], AS_OF_TAG, as_of_date.isoformat())
            client.set_model_version_tag(name, versions[name], CHAMPION_TAG, str(champion).lower())
            if champion and _alias_as_of(client, name) <= as_of_date:
                client.set_registered_model_alias(name, CHAMPION, versions[name])
    return versions


def _alias_as_of(client, name: str) -> dt.date:
    """The as-of date of the version holding the ``champion`` alias (``date.min``: none, or untagged)."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return dt.date.min
    tag = version.tags.get(AS_OF_TAG)
    return dt.date.fromisoformat(tag) if tag else dt.date.min


def _champion_versions(client, name: str, extra_filter: str = "") -> list:
    """Every version of ``name`` tagged a champion (all result pages)."""
    found, token = [], None
    while True:
        page = client.search_model_versions(f"name = '{name}' AND tags.{CHAMPION_TAG} = 'true'{extra_filter}",
                                            page_token=token)
        found += list(page)
        token = page.token
        if not token:
            return found


def champion_versions(as_of_date: dt.date) -> tuple[dt.date, dict[str, str]]:
    """The as-of date of the champion fit for ``as_of_date`` and its versions (model name -> version).

    The champion is the latest accepted fit on an as-of date on or before ``as_of_date``; of
    several accepted fits of that date (re-runs), the last registered. Both models come from
    the same fit (the same MLflow run).

    Raises
    ------
    NoChampionError
        A ``LookupError`` and a ``PipelineFinding``: no accepted fit on or before
        ``as_of_date`` (fits registered before versions were
        tagged with their as-of date do not count).
    """
    from include.runtime import tracking

    client = tracking.client()
    candidates = [(dt.date.fromisoformat(v.tags[AS_OF_TAG]), int(v.version), v)
                  for v in _champion_versions(client, PURCHASE_MODEL_NAME) if AS_OF_TAG in v.tags]
    candidates = [c for c in candidates if c[0] <= as_of_date]
    if not candidates:
        raise NoChampionError(
            f"no champion CLV model fitted on an as-of date on or before {as_of_date} in the MLflow registry "
            f"(model {PURCHASE_MODEL_NAME!r}, version tags {CHAMPION_TAG}='true' and {AS_OF_TAG}): run that date, "
            f"or an earlier one, with clv_use_champion=false to fit and register one")
    fit_date, _, purchases_version = max(candidates, key=lambda c: c[:2])
    spend_versions = _champion_versions(client, GAMMA_GAMMA_MODEL_NAME, f" AND run_id = '{purchases_version.run_id}'")
    if not spend_versions:
        raise NoChampionError(f"champion {PURCHASE_MODEL_NAME} version {purchases_version.version} (as of {fit_date}) "
                          f"has no {GAMMA_GAMMA_MODEL_NAME} champion from the same fit (run "
                          f"{purchases_version.run_id})")
    spend_version = max(int(v.version) for v in spend_versions)
    return fit_date, {PURCHASE_MODEL_NAME: str(purchases_version.version), GAMMA_GAMMA_MODEL_NAME: str(spend_version)}


def load_champions(as_of_date: dt.date) -> Champion:
    """The champion models for ``as_of_date`` (see :func:`champion_versions`, which raises when there are none)."""
    import mlflow.pyfunc

    fit_date, versions = champion_versions(as_of_date)
    purchases, spend = (mlflow.pyfunc.load_model(f"models:/{name}/{versions[name]}").unwrap_python_model()
                        for name in (PURCHASE_MODEL_NAME, GAMMA_GAMMA_MODEL_NAME))
    return Champion(purchases.model(), spend.model(), purchases.unit_days, fit_date, versions)
