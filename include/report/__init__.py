"""The self-contained HTML segment report and the demo's printed summary."""
