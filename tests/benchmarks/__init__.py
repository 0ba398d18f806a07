"""Benchmarks of aioportclaim against its peers; run ``python tests/benchmarks/run.py``."""
