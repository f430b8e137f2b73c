"""Customer-value segmentation platform: all pipeline logic, free of Airflow.

Every stage is a plain function that takes a :class:`~include.warehouse.Warehouse`
and an as-of date, reads its inputs from warehouse tables and replaces its own
rows for that date. ``dags/`` only wires these functions into tasks.
"""
