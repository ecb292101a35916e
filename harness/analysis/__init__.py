"""Analysis stage: statistics, comparison, plots and the report."""
