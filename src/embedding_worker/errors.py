"""Domain errors. Each carries a one-line message that is safe to show to a client."""

from __future__ import annotations


class WorkerError(Exception):
    """Base class: `str(err)` is the client-facing message."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))  # always one line

    @property
    def message(self) -> str:
        return str(self)


class SettingsError(WorkerError):
    """The environment does not describe a valid deployment."""


class ModelLoadError(WorkerError):
    """A configured model could not be loaded at start-up."""


class InvalidRequest(WorkerError):
    """The job input is malformed; the message names the field."""


class ModelNotFound(InvalidRequest):
    """The request names a model that is not deployed."""


class UnsupportedTask(InvalidRequest):
    """The model exists but cannot do what was asked (embed with a reranker, ...)."""


class EngineFailure(WorkerError):
    """The engine failed or did not answer in time."""
