"""Segment labels: the one owner of published segment ids and names (table ``segment_labels``).

A fit (:mod:`include.segmentation`, task ``segment_customers``) is immutable and speaks only of
fit-local segments. The labeller (task ``label_segments``) turns a date's fit into labels:

- names from what each segment's members are and did (:mod:`include.segmentation.naming`), with
  CLV as a witness that can withhold a value or lapsed claim, and the claims this run's backtest
  found false (:mod:`include.backtest`) withheld;
- fit segments that nothing named tells apart published as one label (:func:`name_fit`);
- stable segment ids from the fold over every labelled date (:mod:`include.labels.ids`);
- the quality gate: bootstrap stability (the fit's) and validity (the labels'), saying which
  failed, in ``label_runs``. Validity fails when the labels tell nobody apart (every fit segment
  merged into one). A claim the backtest found false is withheld rather than failing the gate:
  failing it would carry forward the previous labels, which made the same claim by the same logic
  (the backtest judges the logic, not the week), while withholding publishes a weaker true label.

Everything that shows a segment's name joins ``segment_labels`` (per date and fit segment) or the
published ``customer_segments``.
"""
