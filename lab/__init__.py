"""The experiments behind docs/results.md, run and reported by experiments.py: the registry of runs,
the runner with provenance, statistics, tables, figures, and the null-reason measurement."""
