"""The `implicit-cvx` command line: info, predict, fit, certify, attack, reproduce.

All I/O and printing of the toolkit lives in this package; the numerics are plain functions of
the library. See `main.py` for the error policy and exit codes."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
