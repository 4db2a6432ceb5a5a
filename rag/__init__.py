"""Core of the private RAG product: settings, store access, retrieval, prompting and generation.

Importing this package turns off every known phone-home path of the libraries we use, before any of
them is imported: the Hugging Face hub, transformers and Chroma telemetry.
"""

from rag.offline import enforce_offline

enforce_offline()
