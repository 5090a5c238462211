"""What a test watches of a running worker: its resident memory (sampled from the process,
never estimated) and how long its health route takes to answer, while a request runs."""

from __future__ import annotations

import threading
import time

import httpx
import psutil


class PeakMemory:
    """The worker's resident memory, sampled every 5 ms while a request runs."""

    def __init__(self, pid: int) -> None:
        self.process, self.peak, self._running = psutil.Process(pid), 0, True
        self.idle = self.process.memory_info().rss
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while self._running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> PeakMemory:
        self._sampler.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._running = False
        self._sampler.join()

    @property
    def over_idle_mb(self) -> float:
        return (self.peak - self.idle) / 2**20


class HealthLatency:
    """The worst time the health route took to answer, asked every 20 ms while a request runs."""

    def __init__(self, url: str) -> None:
        self.url, self.worst, self.statuses, self._running = url, 0.0, set(), True
        self._poller = threading.Thread(target=self._poll, daemon=True)
        self._first = threading.Event()  # one answer before the request starts: never none at all

    def _poll(self) -> None:
        with httpx.Client(timeout=30) as client:
            while self._running:
                started = time.perf_counter()
                try:
                    self.statuses.add(client.get(self.url).status_code)
                except httpx.TransportError:  # the worker is gone (killed, or stopped): nothing more to time
                    self.statuses.add(None)
                    self._first.set()
                    return
                self.worst = max(self.worst, time.perf_counter() - started)
                self._first.set()
                time.sleep(0.02)

    def __enter__(self) -> HealthLatency:
        self._poller.start()
        self._first.wait(30)
        return self

    def __exit__(self, *_: object) -> None:
        self._running = False
        self._poller.join()


def settle(pid: int) -> None:
    """Wait until the worker has handed freed memory back (MEMORY_TRIM_INTERVAL)."""
    process, last = psutil.Process(pid), 0
    for _ in range(40):
        now = process.memory_info().rss
        if abs(now - last) < 2**20:
            return
        last = now
        time.sleep(0.25)


def assert_answer_or_one_line(reply: dict, expected: str | int) -> None:
    """A `/runsync` reply: FAILED with one line that starts with `expected`, or COMPLETED with
    `expected` entries (`data`, or a rerank's `results`)."""
    if isinstance(expected, str):
        assert reply["status"] == "FAILED", reply.get("output")
        assert reply["error"].startswith(expected) and "\n" not in reply["error"], reply["error"]
    else:
        assert reply["status"] == "COMPLETED", reply.get("error")
        output = reply["output"][0] if isinstance(reply["output"], list) else reply["output"]
        assert len(output.get("data") or output.get("results")) == expected


def terminate_timed(process, timeout: float = 30) -> tuple[int, float]:
    """SIGTERM `process`; its exit status and the seconds it took to exit."""
    import signal

    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout)
    return code, time.monotonic() - signalled
