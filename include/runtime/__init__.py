"""Runtime shared by every stage: paths, settings, the warehouse and its dialects, MLflow tracking, run info, errors."""
