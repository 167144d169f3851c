"""Runs on disk: the run folder (numbering, lock, metrics log, status, plots, TensorBoard events) and the
files written into it, checkpoints above all, atomically so that a crash never leaves half a file."""
