"""Implementations of the ``fitkit`` subcommands (the parser lives in :mod:`fitkit.cli`)."""
