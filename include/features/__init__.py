"""Customer features (RFM, engagement, support cost, traits) computed in the warehouse as of a date."""
