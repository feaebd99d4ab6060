"""Operator scripts, run as `python scripts/NAME.py`.

A package so that tests and mypy name each of them one way."""
