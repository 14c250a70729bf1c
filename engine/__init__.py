"""Kiln's engine: typed node specs, workflow parsing, validation, cached DAG execution (torch-free)."""
