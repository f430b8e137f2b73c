"""Segment migration: hysteresis, transitions between published snapshots, the Markov view."""
