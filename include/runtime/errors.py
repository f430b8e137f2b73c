"""Errors the pipeline raises on purpose.

Every error that retrying cannot fix derives from :class:`PipelineFinding`:
bad input, a missing table, a failed quality gate, a migration alert. The DAG
fails such a task once, visibly, instead of retrying it; any other exception
(a lost connection, a locked file) is treated as transient and retried.

A finding names what is wrong where: the table, the column, a row's key or the
setting. :class:`ModelInputError` and :class:`NoRowsError` are also ``ValueError``
(what the raise sites they replace raised), so callers that test for a
``ValueError`` keep working.
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


class ModelInputError(BadDataError, ValueError):
    """Data a model cannot be fitted on: negative or non-finite money, features that do not vary,
    too few customers or repeat buyers. The message names the table and column (and a row when one is to blame)."""


class NoRowsError(WarehouseError, ValueError):
    """A table has no rows for the run's as-of date (no data on or before it, or the stage writing it has not run)."""
