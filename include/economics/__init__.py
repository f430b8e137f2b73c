"""Segment economics: revenue, margin, cost-to-serve, profit, concentration and the playbook."""
