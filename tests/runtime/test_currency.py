"""The run's currency: the settings when set, else what the loaded data declares; a conflict is an error."""

import pytest

from include.load import load_mapping, read_mapping
from include.runtime.currency import FALLBACK_CURRENCY, CurrencyConflictError, run_currency
from include.runtime.warehouse import Warehouse
from tests.conftest import ROOT

EXAMPLE = ROOT / "examples" / "shop" / "mapping.toml"


def test_currency_comes_from_the_loaded_data_unless_set(tmp_path):
    url = f"duckdb:///{tmp_path / 'warehouse.duckdb'}"
    with Warehouse(url) as wh:
        wh.ensure_schema()
        # Nothing loaded through include.load: nothing declared, the fallback (said in the log).
        assert run_currency(wh) == (FALLBACK_CURRENCY, "£")
        assert run_currency(wh, "USD") == ("USD", "$")
    # The example shop's mapping declares EUR for both tables.
    load_mapping(read_mapping(EXAMPLE), url, progress=False)
    with Warehouse(url) as wh:
        assert run_currency(wh) == ("EUR", "€")
        assert run_currency(wh, "EUR", "EUR ") == ("EUR", "EUR ")
        with pytest.raises(CurrencyConflictError, match=r"currency_code='USD'.*EUR \(raw_identity_records, raw_orders\)"):
            run_currency(wh, "USD")
    # One table re-loaded in another currency: two currencies cannot be added up.
    orders = tmp_path / "orders.csv"
    orders.write_text("order_id,source_system,source_id,order_ts,amount\n1,shop,P1,2025-01-01,9.99\n")
    mapping = tmp_path / "mapping.toml"
    mapping.write_text('[tables.raw_orders]\nfile = "orders.csv"\ncurrency = "USD"\n'
                       'columns = { order_id = "order_id", source_system = "source_system", '
                       'source_id = "source_id", order_ts = "order_ts", amount = "amount" }\n')
    load_mapping(read_mapping(mapping), url, progress=False)
    with Warehouse(url) as wh, pytest.raises(CurrencyConflictError,
                                             match=r"more than one currency: EUR \(raw_identity_records\); "
                                                   r"USD \(raw_orders\)"):
        run_currency(wh)
