"""Executing plans: acquisition, datasets, analyses (raff build)."""
