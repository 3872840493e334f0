"""Packages built from the top-level data folders ``fitting_configs/``, ``priors/`` and
``initializers/`` (setup.py maps them here). Find their files through :mod:`fitkit.shipped`."""
