"""Sliding windows, mirroring, ensembling, weighted box clustering and the sweep."""
