"""Domain errors. Each carries a one-line message that is safe to show to a client."""

from __future__ import annotations


class WorkerError(Exception):
    """Base class: `str(err)` is the client-facing message.

    `status_code` is what an HTTP front (the local endpoint) answers for it.
    """

    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split())[:2000])  # one line, bounded

    @property
    def message(self) -> str:
        return str(self)


class SettingsError(WorkerError):
    """The environment does not describe a valid deployment."""


class ModelLoadError(WorkerError):
    """A configured model could not be loaded at start-up."""


class InvalidRequest(WorkerError):
    """The job input is malformed; the message names the field."""

    status_code = 400


class ModelNotFound(InvalidRequest):
    """The request names a model that is not deployed."""

    status_code = 404


class UnsupportedTask(InvalidRequest):
    """The model exists but cannot do what was asked (embed with a reranker, ...)."""


class EngineFailure(WorkerError):
    """The engine failed or did not answer in time.

    `refresh_worker`: the engine cannot recover in this process, so the job result asks
    RunPod to replace the worker.
    """

    status_code = 503

    def __init__(self, message: str, refresh_worker: bool = False) -> None:
        super().__init__(message)
        self.refresh_worker = refresh_worker


class Overloaded(WorkerError):
    """More items are queued for a model than INFINITY_QUEUE_SIZE allows."""

    status_code = 429


class DeadlinePassed(WorkerError):
    """A request ran past its transport's deadline (RunPod's cut of a load-balanced request)."""

    status_code = 504


class NonFiniteOutput(WorkerError):
    """The model computed NaN or infinity (a precision too narrow for it, usually)."""

    status_code = 500


class InternalError(WorkerError):
    """A bug: reported to the client in one line, logged in full."""
