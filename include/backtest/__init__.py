"""Every run checks its claims against what customers did next, with its own data from an earlier date.

The run's published logic (features, segments, names, actions) is run again as of
``D - H`` (``H`` = ``clv_holdout_days``) on the run's own staged data: features by the same
``features.sql`` read as of that date (:func:`include.features.build.features_as_of`), segments by
the same fit with this run's k (no bootstrap: the claims, not the stability, are checked), names by
the same labeller (:func:`include.labels.build.name_fit`) and actions by the same playbook
(:func:`include.economics.build.intervention_priority`). Each claim made on ``D - H`` is then
compared with what its customers did in ``(D - H, D]`` (:mod:`include.backtest.claims`). A claim
that failed is withheld on ``D`` by the labeller and the playbook; the rows go to
``claims_backtest``, MLflow and the report.
"""
