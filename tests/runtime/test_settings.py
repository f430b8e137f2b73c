"""One declaration of the run settings: the DAG's params, PipelineSettings and the stage settings agree."""

from __future__ import annotations

import dataclasses

import pytest

from include.runtime.settings import BY_NAME, SECTIONS, SETTINGS, PipelineSettings, SettingsError
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def the_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "customer_segmentation.py"))
    assert bag.import_errors == {}
    return bag.dags["customer_segmentation"]


def test_dag_params_are_the_declared_settings(the_dag):
    params = the_dag.params
    assert list(params.keys()) == [s.name for s in SETTINGS]
    for s in SETTINGS:
        param = params.get_param(s.name)
        assert param.value == s.default, s.name
        assert param.description == s.help, s.name
        schema = dict(param.schema)
        assert schema.pop("title") == s.title and schema.pop("section") == s.section, s.name
        assert schema == s.json_schema(), s.name
        assert param.resolve() == s.default  # no tuning knob is required: every default validates


def test_pipeline_settings_are_the_declared_settings():
    fields = {f.name: f for f in dataclasses.fields(PipelineSettings)}
    assert list(fields) == [s.name for s in SETTINGS if s.setting]
    defaults = PipelineSettings()
    for name in fields:
        assert getattr(defaults, name) == BY_NAME[name].default, name
        assert BY_NAME[name].help in PipelineSettings.__doc__


def test_stage_settings_defaults_match_the_declaration():
    from include.clv.models import ClvSettings
    from include.economics.build import EconomicsSettings

    clv, economics = ClvSettings(), EconomicsSettings()
    assert (clv.unit_days, clv.holdout_days) == (BY_NAME["clv_unit_days"].default, BY_NAME["clv_holdout_days"].default)
    assert clv.gross_margin == economics.gross_margin == BY_NAME["gross_margin"].default
    assert clv.annual_discount_rate == BY_NAME["annual_discount_rate"].default
    for name in ("servicing_cost_per_customer", "servicing_cost_per_order"):
        assert getattr(economics, name) == BY_NAME[name].default


def test_form_shows_essentials_first_then_one_section_per_stage():
    order = [SECTIONS.index(s.section) for s in SETTINGS]
    assert order == sorted(order)
    essentials = [s.name for s in SETTINGS if s.section == "Essentials"]
    assert essentials == ["as_of_date", "crm_targets", "crm_dry_run", "k"]
    targets = BY_NAME["crm_targets"].json_schema()
    assert targets["type"] == "array" and targets["items"]["enum"] == ["outbox", "webhook", "hubspot", "salesforce"]
    assert all(s.title and s.help and not s.title[0].islower() for s in SETTINGS)


def test_unknown_key_is_rejected_with_its_name_and_the_closest_known_one():
    with pytest.raises(SettingsError, match=r"unknown setting 'k_mx' \(did you mean 'k_max'\?\)"):
        PipelineSettings.from_params({"k_mx": 5})


def test_invalid_values_and_combinations_name_the_fields():
    with pytest.raises(SettingsError, match=r"k_min=6 is greater than k_max=4"):
        PipelineSettings.from_params({"k_min": 6, "k_max": 4})
    with pytest.raises(SettingsError, match=r"max_bad_share=1.5: 1.5 is greater than the maximum of 1"):
        PipelineSettings.from_params({"max_bad_share": 1.5})
    with pytest.raises(SettingsError, match=r"identity_method='fuzzy'"):
        PipelineSettings.from_params({"identity_method": "fuzzy"})
    with pytest.raises(SettingsError, match=r"crm_targets=\['mailchimp'\]"):
        PipelineSettings.from_params({"crm_targets": ["mailchimp"]})
    with pytest.raises(SettingsError, match=r"as_of_date='07/11/2026'"):
        PipelineSettings.from_params({"as_of_date": "07/11/2026"})


def test_none_means_default_and_values_are_taken():
    s = PipelineSettings.from_params({"k": None, "min_jaccard": 0, "k_max": 5, "as_of_date": "2026-11-07",
                                      "crm_targets": ["outbox", "webhook"], "support_cost_by_channel": {"chat": 1}})
    assert s.k is None and s.min_jaccard == 0.0 and isinstance(s.min_jaccard, float) and s.k_max == 5
    assert s.support_cost_by_channel == {"chat": 1}
    assert PipelineSettings.from_params({"k": 0}).k is None  # 0 = choose k, as the old form allowed
    assert PipelineSettings.from_params(None) == PipelineSettings()
