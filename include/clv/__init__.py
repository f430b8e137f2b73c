"""Customer lifetime value: BG/NBD and Gamma-Gamma, holdout validation, scoring and the segment cross-check."""
