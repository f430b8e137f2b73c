"""Legacy labels beside the behavioural segments: crosstab and variance explained per scheme."""
