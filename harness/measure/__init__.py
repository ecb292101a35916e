"""Measure stage: workloads, collectors, the meaning of metrics, cells and the matrix."""
