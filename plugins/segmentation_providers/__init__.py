"""Custom Airflow hooks and operators of the segmentation platform.

Laid out like an Airflow provider: ``hooks/`` own connections, auth, batching
and retries; ``operators/`` own arguments and build their hook in ``execute()``.
"""
