"""The report step: one comparison of every subset (summary.md, metrics.json) and its figures."""
