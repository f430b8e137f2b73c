"""Identity resolution: identity records into one customer per person (Splink, or the exact baseline)."""
