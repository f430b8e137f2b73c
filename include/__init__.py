"""Customer-value segmentation platform: all pipeline logic, free of Airflow.

One package per stage (``extract``, ``identity``, ``features``, ``segmentation``, ``clv``,
``backtest``, ``labels``, ``migration``, ``economics``, ``experiment``, ``comparison``, ``report``,
``crm``, ``erasure``) holds the pure logic; ``runtime`` holds what they share; ``stages`` has one
thin adapter per DAG task. Dependencies point one way: ``stages`` -> stage packages -> ``runtime``,
and a stage package imports only packages earlier in the order stated in ``docs/design.md``
("Layering"), checked by ``tests/runtime/test_layering.py``. ``dags/`` only wires the adapters.
"""
