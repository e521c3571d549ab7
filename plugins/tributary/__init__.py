"""Tributary: Airflow 3 integration layer (see README.md)."""

__version__ = "0.1.0"
