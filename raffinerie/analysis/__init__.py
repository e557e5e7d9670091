"""Analyses (distilleries): loading, code hashing, running, built-ins."""
