"""A local Optico Data API for tests, demos and offline pipelines."""

from __future__ import annotations

from tap_optico.sandbox.api import SANDBOX_API_KEY, Misbehaviour, SandboxApi, account_key
from tap_optico.sandbox.data import SandboxData
from tap_optico.sandbox.server import Faults, SandboxServer, build_server

__all__ = [
    "SANDBOX_API_KEY",
    "Faults",
    "Misbehaviour",
    "SandboxApi",
    "SandboxData",
    "SandboxServer",
    "account_key",
    "build_server",
]
