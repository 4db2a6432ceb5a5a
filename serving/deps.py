"""Request dependencies: the process-wide container, and the readiness gate."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from rag.container import Container
from rag.errors import ModelNotReadyError


def get_container(request: Request) -> Container:
    return request.app.state.container


ContainerDep = Annotated[Container, Depends(get_container)]


def ready_container(container: Container) -> Container:
    if container.load_error is not None:
        raise ModelNotReadyError(f"model loading failed: {container.load_error}; fix the settings and restart")
    if not container.ready:
        raise ModelNotReadyError("the models are still loading: retry in a few seconds")
    return container
