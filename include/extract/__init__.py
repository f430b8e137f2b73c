"""Extract and validate: raw tables into staging, bad rows into quarantine with a reason."""
