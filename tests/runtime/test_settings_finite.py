"""NaN and infinity are refused for every number setting: at trigger time and again in the run's first task.

Generated from :data:`include.runtime.settings.SETTINGS`, so a new number setting is covered without
touching this file. The values are what Python's ``json.loads`` makes of a trigger's conf (the REST API
and ``airflow dags trigger --conf`` read ``NaN``, ``Infinity`` and ``1e309`` into floats).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from types import SimpleNamespace
from typing import Any

import pytest

from include.runtime.errors import PipelineFinding
from include.runtime.run import RunInfo
from include.runtime.settings import SETTINGS, PipelineSettings, Setting, SettingsError
from tests.conftest import ROOT

#: JSON tokens Python's json module reads as non-finite floats.
NON_FINITE = ("NaN", "Infinity", "-Infinity", "1e309")


def _holds_numbers(schema: dict[str, Any]) -> bool:
    types = schema.get("type")
    if "number" in ([types] if isinstance(types, str) else types or []):
        return True
    return any(isinstance(schema.get(k), dict) and _holds_numbers(schema[k]) for k in ("items", "additionalProperties"))


def _with_number(schema: dict[str, Any], token: str) -> str:
    """JSON text of a value of ``schema`` that holds the number ``token`` where the schema admits one."""
    types = schema.get("type")
    if "number" in ([types] if isinstance(types, str) else types or []):
        return token
    if isinstance(schema.get("additionalProperties"), dict):
        return f'{{"chat": {_with_number(schema["additionalProperties"], token)}}}'
    if isinstance(schema.get("items"), dict):
        return f"[{_with_number(schema['items'], token)}]"
    raise AssertionError(f"no place for a number in {schema}: teach _with_number this shape")


NUMBER_SETTINGS = [s for s in SETTINGS if _holds_numbers(s.json_schema())]
CASES = [pytest.param(s, token, id=f"{s.name}={token}") for s in NUMBER_SETTINGS for token in NON_FINITE]


def conf_of(s: Setting, token: str) -> dict[str, Any]:
    """A trigger's conf as the REST API reads it (``json.loads``) setting ``s`` to a value holding ``token``."""
    return json.loads(f'{{"{s.name}": {_with_number(s.json_schema(), token)}}}')


def test_every_float_setting_is_covered():
    names = {s.name for s in NUMBER_SETTINGS}
    # The cases, and every other float setting the declaration has.
    assert {"gross_margin", "holdout_share", "alert_top_outflow", "max_match_distance",
            "support_cost_by_channel"} <= names
    assert names == {s.name for s in SETTINGS if s.type == "number"} | {"support_cost_by_channel"}
    value = conf_of(next(s for s in SETTINGS if s.name == "gross_margin"), "NaN")["gross_margin"]
    assert math.isnan(value)  # what json.loads makes of it, so the cases below are real


@pytest.fixture(scope="module")
def served_dag():
    """The DAG as the API server holds it (serialized to JSON and back): what validates a trigger."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    bag = DagBag(dag_folder=str(ROOT / "dags" / "customer_segmentation.py"))
    assert bag.import_errors == {}
    data = json.loads(json.dumps(DagSerialization.to_dict(bag.dags["customer_segmentation"])))
    return DagSerialization.from_dict(data)


@pytest.mark.parametrize(("setting", "token"), CASES)
def test_non_finite_number_is_refused_at_trigger_naming_the_param(served_dag, setting, token):
    from airflow.exceptions import ParamValidationError

    params = served_dag.params.deep_merge(conf_of(setting, token))
    # NaN meets the schema's "not a finite number" rule; an infinity may meet a bound of the setting first.
    with pytest.raises(ParamValidationError, match=rf"Invalid input for param {setting.name}: -?(nan|inf) "
                                                   r"(should not be valid under \{'title': 'NaN or infinity|is (greater|less) than)"):
        params.validate()


@pytest.mark.parametrize(("setting", "token"), CASES)
def test_non_finite_number_fails_the_first_task_naming_the_setting(setting, token):
    conf = conf_of(setting, token)
    expected = rf"setting {setting.name}(\['chat'\])?=(nan|inf|-inf) is not a finite number"
    # The merged params (a run created without the trigger's validation) and the conf alone.
    for params, run_conf in ((conf, {}), ({}, conf)):
        context = {"params": params, "dag": SimpleNamespace(dag_id="customer_segmentation"), "run_id": "r",
                   "dag_run": SimpleNamespace(conf=run_conf, run_after=None),
                   "data_interval_end": dt.datetime(2026, 11, 15, tzinfo=dt.UTC)}
        with pytest.raises(SettingsError, match=expected) as caught:
            RunInfo.from_context(context, warehouse_url="duckdb:///:memory:")
        # A finding: the DAG's task wrapper fails it once, without a retry.
        assert isinstance(caught.value, PipelineFinding)
    with pytest.raises(SettingsError, match=expected):
        PipelineSettings.from_params(conf)


def test_finite_values_at_the_bounds_are_still_accepted():
    s = PipelineSettings.from_params({"gross_margin": 1.0, "holdout_share": 0.0, "max_match_distance": 1e300,
                                      "alert_top_outflow": 0, "support_cost_by_channel": {"chat": 0.0}})
    assert (s.gross_margin, s.holdout_share, s.max_match_distance) == (1.0, 0.0, 1e300)
