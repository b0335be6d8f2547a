"""Benchmarks of firehose_buffer: ``python benchmarks/run.py`` runs them all (see run.py)."""
