"""Loopline: the logic of the ML production line, importable and testable without Airflow."""
