"""No outbound traffic: switch off hub access and telemetry before the libraries read their settings."""

import os

# Variables read by huggingface_hub / transformers / sentence-transformers / chromadb / tokenizers.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "ANONYMIZED_TELEMETRY": "False",
    "TOKENIZERS_PARALLELISM": "false",
}


def enforce_offline() -> None:
    """Force offline mode. Deliberately overrides the environment: this product never reaches out."""
    os.environ.update(OFFLINE_ENV)
