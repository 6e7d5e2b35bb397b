"""Scores: instance metrics, classical baselines, method comparison, threshold tuning."""
