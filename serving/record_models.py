"""API models derived from the engine's dataclasses, so a record's fields are written once, in ``rag/``."""

from __future__ import annotations

import dataclasses
from typing import Any, get_type_hints

from pydantic import BaseModel, Field, create_model


def model_of(record: type) -> type[BaseModel]:
    """A pydantic model with the fields of the dataclass ``record``: same names, types, order and defaults.

    Subclass it to name the API model and to narrow or describe a field (an OpenAPI enum, a description)."""
    hints = get_type_hints(record)
    fields: dict[str, Any] = {}
    for field in dataclasses.fields(record):
        if field.default is not dataclasses.MISSING:
            default: Any = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = Field(default_factory=field.default_factory)
        else:
            default = ...
        fields[field.name] = (hints[field.name], default)
    return create_model(f"{record.__name__}Fields", **fields)
