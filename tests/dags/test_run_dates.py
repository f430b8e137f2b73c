"""scripts/run_dates.py's schema check: each param schema checked once per process, every value still validated."""

from __future__ import annotations

import importlib.util

import jsonschema
import pytest
from jsonschema import validators

from include.runtime.settings import SCHEMA_DIALECT
from tests.conftest import ROOT


@pytest.fixture
def run_dates(monkeypatch):
    monkeypatch.setattr(jsonschema, "validate", jsonschema.validate)  # restored after the test
    spec = importlib.util.spec_from_file_location("run_dates", ROOT / "scripts" / "run_dates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_schema_is_checked_once_and_every_value_every_time(run_dates, monkeypatch):
    from airflow.sdk import Param
    from airflow.sdk.exceptions import ParamValidationError

    checks = []
    original = validators.Draft7Validator.check_schema.__func__
    monkeypatch.setattr(validators.Draft7Validator, "check_schema",
                        classmethod(lambda cls, schema, **kw: (checks.append(schema), original(cls, schema, **kw))))
    run_dates._check_each_schema_once()
    param = Param(3, type="integer", minimum=1, **{"$schema": SCHEMA_DIALECT})
    for _ in range(3):
        assert param.resolve() == 3
        with pytest.raises(ParamValidationError, match="less than the minimum"):
            param.resolve(0)
    assert len(checks) == 1
    broken = Param(3, type="integr", **{"$schema": SCHEMA_DIALECT})
    for _ in range(2):  # a schema that fails the check is never remembered as passed
        with pytest.raises(jsonschema.SchemaError):
            broken.resolve()
    assert len(checks) == 3
