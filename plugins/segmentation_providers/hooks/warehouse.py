"""Hook resolving the warehouse the pipeline reads and writes.

Connection resolution (first match wins):

1. the Airflow connection ``warehouse_conn_id`` (default ``segmentation_warehouse``,
   or ``$SEGMENTATION_WAREHOUSE_CONN_ID``):

   - ``conn_type`` ``snowflake``: the Snowflake provider builds the SQLAlchemy URL
     (account, warehouse, database, schema, role from the connection's extras);
   - any other type: the ``sqlalchemy_url`` extra, e.g.
     ``{"sqlalchemy_url": "duckdb:////data/warehouse.duckdb"}``;

2. ``$WAREHOUSE_URL``;
3. the embedded DuckDB file under the data folder.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException


class WarehouseHook(BaseHook):
    """Resolve the warehouse's SQLAlchemy URL from an Airflow connection.

    Parameters
    ----------
    warehouse_conn_id
        Airflow connection id; when no such connection exists the embedded
        default (``$WAREHOUSE_URL`` or the local DuckDB file) is used.
    """

    conn_name_attr = "warehouse_conn_id"
    default_conn_name = "segmentation_warehouse"
    conn_type = "generic"
    hook_name = "Segmentation warehouse"

    def __init__(self, warehouse_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.warehouse_conn_id = warehouse_conn_id or os.environ.get(
            "SEGMENTATION_WAREHOUSE_CONN_ID", self.default_conn_name
        )

    def get_conn(self) -> Any:
        """An opened :class:`include.warehouse.Warehouse` (close it, or use ``with``)."""
        from include.runtime.warehouse import Warehouse

        return Warehouse(self.get_sqlalchemy_url())

    def get_sqlalchemy_url(self) -> str:
        from include.runtime.paths import default_warehouse_url

        try:
            conn = self.get_connection(self.warehouse_conn_id)
        except AirflowNotFoundException:
            return default_warehouse_url()
        if conn.conn_type == "snowflake":
            from airflow.providers.snowflake.hooks.snowflake import SnowflakeHook

            return SnowflakeHook(snowflake_conn_id=self.warehouse_conn_id).get_uri()
        url = conn.extra_dejson.get("sqlalchemy_url")
        if not url:
            raise ValueError(
                f"connection '{self.warehouse_conn_id}' (type {conn.conn_type}) needs a "
                "'sqlalchemy_url' extra, or must be of type snowflake"
            )
        return url

    def test_connection(self) -> tuple[bool, str]:
        """Run ``SELECT 1`` against the warehouse."""
        try:
            with self.get_conn() as wh:
                wh.scalar("SELECT 1")
        except Exception as exc:  # noqa: BLE001 - reported to the UI, not raised
            return False, str(exc)
        return True, "Connection successfully tested"
