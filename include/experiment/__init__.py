"""Holdout groups, policy records and treated-vs-holdout lift per segment."""
