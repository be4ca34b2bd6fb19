"""Experiment configurations (ml_collections), one file per setting."""
