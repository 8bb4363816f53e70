"""Evaluation: the toy-world suite and the standard video benchmarks (readers, scorers, runner)."""
