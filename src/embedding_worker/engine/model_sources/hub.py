"""Talking to the Hugging Face hub: a revision's file list, and a file's bytes from an offset.

What may pass is retried: 429, 5xx, timeouts and broken connections, with exponential
backoff and full jitter, honouring `Retry-After`, until the operation has gone
`MODEL_DOWNLOAD_TIMEOUT` seconds without progress. What will not pass ends at once in one
line that says what to do: a gated or private repository (401, 403) names `HF_TOKEN`, an
unknown repository or revision (404) names both.

The hub is `HF_ENDPOINT` (huggingface.co by default), the token `HF_TOKEN` or the hub
client's token file, as `huggingface_hub` reads them.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote

from embedding_worker.engine.model_sources.cache_layout import UnsafeListing, HubFile, RepoFiles
from embedding_worker.errors import ModelLoadError

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRIED_STATUSES = {408, 425, 429, 500, 502, 503, 504}
# A hub that cannot be reached at all (its name does not resolve, its port refuses) is not a
# flaky one: it is given up after this long, not after MODEL_DOWNLOAD_TIMEOUT.
UNREACHABLE_FOR = 30.0
UNREACHABLE = ("name or service not known", "temporary failure in name resolution", "nodename nor servname",
               "no address associated", "connection refused", "network is unreachable", "no route to host")
WHERE_FROM = ("set HF_HUB_OFFLINE=1 to load from the caches only, HF_HOME to the cache that holds the model, "
              "or HF_ENDPOINT to a hub this machine can reach")


class Transient(Exception):
    """A failure that may pass: retried while the budget lasts. `unreachable`: the hub could
    not be reached at all (no name, no connection)."""

    def __init__(self, reason: str, retry_after: float | None = None, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.unreachable = unreachable


@dataclass
class RetryBudget:
    """Retries of one operation, until it has gone `seconds` without progress."""

    seconds: float
    what: str  # for messages: "model 'x': model.safetensors"
    base: float = 1.0  # the first backoff's ceiling; doubles per attempt, up to `cap`
    cap: float = 30.0
    attempts: int = 0
    last_progress: float = field(default_factory=time.monotonic)
    unreachable_since: float | None = None  # since when every attempt found no hub at all

    def progressed(self) -> None:
        self.last_progress = time.monotonic()
        self.attempts = 0

    def wait_after(self, failure: Transient) -> None:
        """Sleep before the next attempt; raise `ModelLoadError` when the budget is spent."""
        self.attempts += 1
        now = time.monotonic()
        left = self.seconds - (now - self.last_progress)
        delay = random.uniform(0, min(self.cap, self.base * 2 ** (self.attempts - 1)))
        if failure.retry_after is not None:
            delay = failure.retry_after
        if failure.unreachable:
            self.unreachable_since = self.unreachable_since or now
            if now + delay - self.unreachable_since > UNREACHABLE_FOR:
                raise ModelLoadError(
                    f"could not load model {self.what}: the hub could not be reached for {UNREACHABLE_FOR:.0f} s "
                    f"({failure}); this machine may have no way to the hub: {WHERE_FROM}")
        else:
            self.unreachable_since = None
        if delay > left:
            raise ModelLoadError(
                f"could not load model {self.what}: the hub kept failing for {self.seconds:.0f} s "
                f"(MODEL_DOWNLOAD_TIMEOUT), last with {failure}"
                + (f" and asked to wait {failure.retry_after:.0f} s more" if failure.retry_after else "")
                + f"; try again later, raise MODEL_DOWNLOAD_TIMEOUT, or {WHERE_FROM}"
            )
        log.warning("%s: %s; retrying in %.1f s (retry %d)", self.what, failure, delay, self.attempts)
        time.sleep(delay)

    def run(self, attempt: Callable[[], T]) -> T:
        while True:
            try:
                return attempt()
            except Transient as failure:
                self.wait_after(failure)


@dataclass(frozen=True)
class HubAccess:
    """Where the hub is and how long to keep trying it."""

    endpoint: str
    offline: bool  # HF_HUB_OFFLINE: nothing is fetched
    timeout: float = 300.0  # MODEL_DOWNLOAD_TIMEOUT
    token_set: bool = False
    backoff: float = 1.0  # seconds: the first retry's ceiling, doubling per attempt

    @classmethod
    def from_environment(cls, timeout: float) -> HubAccess:
        from huggingface_hub import constants
        from huggingface_hub.utils import get_token

        return cls(constants.ENDPOINT, constants.HF_HUB_OFFLINE, timeout, get_token() is not None)

    def budget(self, what: str) -> RetryBudget:
        return RetryBudget(self.timeout, what, base=self.backoff)

    def client(self) -> httpx.Client:
        import httpx  # imported where a model is downloaded, not by every start
        from huggingface_hub.utils import build_hf_headers

        # A read that stalls for a quarter of the budget is retried (resuming where it stopped).
        read = min(30.0, max(1.0, self.timeout / 4))
        return httpx.Client(
            headers=build_hf_headers(library_name="embedding-worker"),
            follow_redirects=True,  # LFS files redirect to a CDN; httpx drops the token off-origin
            timeout=httpx.Timeout(read, connect=min(10.0, read)),
        )


class Hub:
    """One hub client for one model's look-ups and downloads (thread-safe)."""

    def __init__(self, access: HubAccess, repo_id: str, revision: str | None) -> None:
        self.access = access
        self.repo_id = repo_id
        self.revision = revision or "main"
        self._client = access.client()

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Hub:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def repo_files(self, budget: RetryBudget | None = None) -> RepoFiles:
        """The revision's commit and files, with sizes and hashes."""
        url = (f"{self.access.endpoint}/api/models/{self.repo_id}/revision/"
               f"{quote(self.revision, safe='')}")

        def attempt() -> RepoFiles:
            with self._request("GET", url, params={"blobs": "true"}) as reply:
                reply.read()
                body = reply.json()
            return RepoFiles(self.repo_id, body["sha"], tuple(_hub_file(s) for s in body.get("siblings", [])))

        try:
            return (budget or self.access.budget(f"{self.repo_id!r}")).run(attempt)
        except UnsafeListing as exc:
            raise ModelLoadError(f"could not load model {self.repo_id!r}: the hub's file list is refused: "
                                 f"{exc}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"could not load model {self.repo_id!r}: the hub's file list is not "
                                 f"readable ({type(exc).__name__}: {exc})") from None

    @contextmanager
    def stream(self, commit: str, name: str, start: int) -> Iterator[httpx.Response]:
        """A file's bytes from `start` on: 206 when the hub honoured the range, 200 from 0 when not."""
        url = f"{self.access.endpoint}/{self.repo_id}/resolve/{commit}/{quote(name)}"
        headers = {"Accept-Encoding": "identity"}  # ranges count the file's own bytes
        if start:
            headers["Range"] = f"bytes={start}-"
        with self._request("GET", url, headers=headers, file=name) as reply:
            yield reply

    @contextmanager
    def _request(self, method: str, url: str, file: str | None = None, **kwargs: object) -> Iterator[httpx.Response]:
        import httpx

        try:
            with self._client.stream(method, url, **kwargs) as reply:
                if reply.status_code >= 400:
                    reply.read()
                    self._raise_for(reply, file)
                yield reply
        except httpx.TransportError as exc:  # refused, reset, cut short, timed out
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            unreachable = isinstance(exc, httpx.ConnectError) and any(m in str(exc).lower() for m in UNREACHABLE)
            raise Transient(reason, unreachable=unreachable) from exc

    def _raise_for(self, reply: httpx.Response, file: str | None) -> None:
        status, code = reply.status_code, reply.headers.get("X-Error-Code", "")
        if status in RETRIED_STATUSES or status >= 500:
            raise Transient(f"HTTP {status}", _retry_after(reply.headers.get("Retry-After")))
        token = "HF_TOKEN's token has no access" if self.access.token_set else "no HF_TOKEN is set"
        if code == "GatedRepo":
            reason = (f"it is gated ({status}) and {token}: accept its terms at {self.access.endpoint}/"
                      f"{self.repo_id} and set HF_TOKEN to a token of that account")
        elif status in (401, 403):
            reason = (f"the hub shows no model {self.repo_id!r} at revision {self.revision!r} ({status}): it does "
                      f"not exist or is private, and {token}; check MODEL_NAMES and MODEL_REVISIONS, or set "
                      "HF_TOKEN to a token that can read it")
        elif status == 404 and code == "RevisionNotFound":
            reason = f"it has no revision {self.revision!r} on the hub (404): check MODEL_REVISIONS"
        elif status == 404 and file is not None and code == "EntryNotFound":
            reason = f"its revision {self.revision!r} has no file {file!r} on the hub (404)"
        elif status == 404:
            reason = (f"the hub has no model {self.repo_id!r} at revision {self.revision!r} (404): check "
                      "MODEL_NAMES and MODEL_REVISIONS")
        else:
            detail = " ".join(reply.text.split())[:200]
            reason = f"the hub answered {status}" + (f" for {file}" if file else "") + f": {detail}"
        raise ModelLoadError(f"could not load model {self.repo_id!r}: {reason}")


def _hub_file(sibling: dict) -> HubFile:
    lfs = sibling.get("lfs") or {}
    return HubFile(
        name=sibling["rfilename"],
        size=int(lfs.get("size", sibling.get("size", 0)) or 0),
        sha256=lfs.get("sha256") or lfs.get("oid"),
        git_sha1=None if lfs else sibling.get("blobId"),
    )


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait, from `Retry-After` as seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
