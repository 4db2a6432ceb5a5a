"""Ingestion: read files, split them into chunks, embed, and write them to the store."""

import rag  # noqa: F401  - switches off hub access and telemetry before any library loads
