"""Measure stage: one cell (a fresh boot running one workload) and its counters: drivers, collectors,
causes, the cell itself, and the dispatch of cells to this machine or to workers."""
