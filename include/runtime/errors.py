"""Errors the pipeline raises on purpose.

Every error that retrying cannot fix derives from :class:`PipelineFinding`:
bad input, a missing table, a failed quality gate, a migration alert. The DAG
fails such a task once, visibly, instead of retrying it; any other exception
(a lost connection, a locked file) is treated as transient and retried.
"""

from __future__ import annotations


class PipelineFinding(RuntimeError):
    """A finding about the data or the models that a retry cannot change."""


class BadDataError(PipelineFinding):
    """Raw input fails the contract (missing table/column, too many bad rows)."""


class WarehouseError(PipelineFinding):
    """A warehouse table or column is missing or malformed."""


class QualityGateError(PipelineFinding):
    """A stage's output failed its quality gate and nothing can stand in for it."""


class MigrationAlert(PipelineFinding):
    """A migration check crossed its configured threshold."""
