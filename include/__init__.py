"""Customer-value segmentation platform: all pipeline logic, free of Airflow.

One package per stage (``extract``, ``identity``, ``features``, ``segmentation``,
``clv``, ``migration``, ``economics``, ``report``, ``crm``) holds the pure logic;
``runtime`` holds what they share; ``stages`` has one thin adapter per DAG task.
Dependencies point one way: ``stages`` -> stage packages -> ``runtime``.
``dags/`` only wires the adapters into tasks.
"""
