"""Dagster orchestration of this Meltano project: account groups and backfill ranges as partitions.

`definitions.py` is the code location; `meltano.py` runs the project's Meltano CLI and names
the state ids; `local.py` is `make dagster`.
"""
