"""The demo data generator: planted customers, identities and a ground truth to measure against."""
