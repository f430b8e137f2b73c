"""The warehouse hook: connection resolution and test_connection."""

import json

import pytest

from include.runtime.run import resolve_as_of_date


def test_default_is_the_embedded_duckdb_file(monkeypatch, session_dir, airflow_db):
    from segmentation_providers.hooks.warehouse import WarehouseHook

    monkeypatch.delenv("WAREHOUSE_URL", raising=False)
    url = WarehouseHook().get_sqlalchemy_url()
    assert url.startswith("duckdb:///") and url.endswith("warehouse.duckdb")
    assert str(session_dir) in url


def test_connection_extra_selects_the_warehouse(monkeypatch, tmp_path, airflow_db):
    from segmentation_providers.hooks.warehouse import WarehouseHook

    url = f"duckdb:///{tmp_path / 'other.duckdb'}"
    monkeypatch.setenv("AIRFLOW_CONN_SEGMENTATION_WAREHOUSE",
                       json.dumps({"conn_type": "generic", "extra": {"sqlalchemy_url": url}}))
    hook = WarehouseHook()
    assert hook.get_sqlalchemy_url() == url
    assert hook.test_connection() == (True, "Connection successfully tested")


def test_snowflake_connection_builds_a_snowflake_url(monkeypatch, airflow_db):
    from segmentation_providers.hooks.warehouse import WarehouseHook

    monkeypatch.setenv("AIRFLOW_CONN_WH_SF", json.dumps({
        "conn_type": "snowflake", "login": "svc", "password": "secret", "schema": "ANALYTICS",
        "extra": {"account": "acme-xy123", "warehouse": "COMPUTE_WH", "database": "CDP", "role": "SEG"}}))
    url = WarehouseHook(warehouse_conn_id="wh_sf").get_sqlalchemy_url()
    assert url.startswith("snowflake://svc:")
    assert "acme-xy123" in url and "CDP" in url and "COMPUTE_WH" in url


def test_connection_without_url_is_a_clear_error(monkeypatch, airflow_db):
    from segmentation_providers.hooks.warehouse import WarehouseHook

    monkeypatch.setenv("AIRFLOW_CONN_WH_BAD", json.dumps({"conn_type": "generic"}))
    with pytest.raises(ValueError, match="wh_bad.*sqlalchemy_url"):
        WarehouseHook(warehouse_conn_id="wh_bad").get_sqlalchemy_url()
    ok, message = WarehouseHook(warehouse_conn_id="wh_bad").test_connection()
    assert not ok and "sqlalchemy_url" in message


def test_as_of_date_resolution():
    import datetime as dt

    sunday = dt.datetime(2026, 11, 15, tzinfo=dt.UTC)
    assert resolve_as_of_date("2026-10-01", sunday, None) == dt.date(2026, 10, 1)
    assert resolve_as_of_date(None, sunday, None) == dt.date(2026, 11, 14)
    # Runs without a logical date (REST with logical_date null, asset triggers) use run_after.
    assert resolve_as_of_date(None, None, dt.datetime(2026, 11, 20, 15, tzinfo=dt.UTC)) == dt.date(2026, 11, 19)
    with pytest.raises(ValueError, match="as_of_date"):
        resolve_as_of_date("next tuesday", sunday, None)
    with pytest.raises(ValueError, match="cannot derive"):
        resolve_as_of_date(None, None, None)
