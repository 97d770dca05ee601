"""The package version, importable without importing Airflow."""

__version__ = "0.1.0"
