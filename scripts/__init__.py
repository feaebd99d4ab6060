"""Operator scripts (run as `python scripts/NAME.py`); a package so tests and mypy name them one way."""
