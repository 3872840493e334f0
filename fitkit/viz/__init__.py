"""Plots and renders for people to look at."""
