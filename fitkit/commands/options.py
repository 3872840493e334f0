"""Typed, range-checked command-line values (argparse ``type=`` callables); standard library only.

A bad value stops the parser with a message naming the option and the value
(``argument --batch-size: 0 must be >= 1``) before anything is loaded.
"""
from __future__ import annotations

import argparse


def number(kind, *, low=None, high=None, low_open=False, what=""):
    """An argparse ``type``: ``kind`` (int or float), finite, within [low, high] (``low_open``: > low)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}")
        if kind is float and value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"{text} must be {'>' if low_open else '>='} {low}{what}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{text} must be <= {high}{what}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


POSITIVE_INT = number(int, low=1)
COUNT = number(int, low=0)
PIXELS = number(float, low=0, low_open=True)
FRACTION = number(float, low=0.0, high=1.0)
