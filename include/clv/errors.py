"""What can go wrong in the CLV stage, and which of it stops the run.

Bad input (a summary that no model can take: missing columns, NaN, negative
money, recency beyond the period, no repeat buyers at all) is a
:class:`~include.runtime.errors.PipelineFinding`: the run fails once, naming
the table and column. A model that cannot be fitted on good data (no interior
maximum of the likelihood, no convergence, a degenerate fit) is a
:class:`ClvFitError`: the stage tries the next model of the family, and when
none fits it records CLV as unavailable (``clv_runs.status = 'unavailable'``)
instead of failing the run.
"""

from __future__ import annotations

from include.runtime.errors import ModelInputError, PipelineFinding


class ClvInputError(ModelInputError):
    """Summary data that a CLV model cannot take (names the table or summary and the column)."""


class ClvFitError(RuntimeError):
    """A CLV model could not be fitted on this data (the run goes on with the other models, or without CLV).

    Parameters
    ----------
    message
        The full account (parameters, likelihoods), for the log and MLflow.
    summary
        The same in a few words, for ``clv_runs.reason`` and the report
        (default: ``message``).
    """

    def __init__(self, message: str, summary: str | None = None) -> None:
        super().__init__(message)
        self.summary = summary or message


class BoundaryFitError(ClvFitError):
    """The likelihood has no interior maximum: a parameter runs to 0 or infinity, or the fit is degenerate.

    E.g. BG/NBD on one year of a shop where nobody who bought twice has stopped
    yet: the dropout parameter ``a`` goes to 0 and P(alive) is 1 for everyone.
    """


class NoChampionError(PipelineFinding, LookupError):
    """``clv_use_champion`` is set and the registry holds no accepted fit on or before the date."""
