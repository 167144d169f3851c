"""Comparing runs: sweeps over configs, reports from run folders, and benchmarks of speed."""
