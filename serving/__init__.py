"""Interfaces to people and programs: the HTTP API and the `rag` command line."""

import rag  # noqa: F401  - switches off hub access and telemetry before any library loads
