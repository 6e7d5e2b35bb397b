"""Probabilities to instance labels, and label edits."""
