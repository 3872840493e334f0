"""Evaluation helpers: error metrics and synthetic fitting examples."""
