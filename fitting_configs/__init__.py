"""Shipped data, not code: found through fitkit.shipped (setup.py maps this folder into the package)."""
