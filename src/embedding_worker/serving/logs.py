"""One event per log line, in one format, whoever logs it.

RunPod's log viewer shows a line at a time. Left alone, every library brings its own:
- Infinity puts a rich handler on the root logger that wraps one event over several lines;
- transformers keeps a handler of its own;
- runpod prints its own formats with `print`.

`configure_logging` gives the root logger one handler, takes the libraries' own handlers
away so their records reach it, and runs again once Infinity is imported.
`route_runpod_logs` sends runpod's lines through it too. Each record is one line:
- `LOG_FORMAT=text` (default): `time level logger: message`; a traceback follows on the
  same line, its lines joined by ` | `;
- `LOG_FORMAT=json`: one JSON object per line (`time`, `level`, `logger`, `message`, and
  `job_id` where there is one), for log shippers.

Warnings a healthy start does not deserve are dropped (`QUIET`), such as transformers'
"`torch_dtype` is deprecated", which sentence-transformers triggers on every load, or told
at INFO (`DEMOTED`), such as the ONNX optimiser's fallback on a working model.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import orjson

LOG_FORMATS = ("text", "json")
LIBRARIES = ("embedding_worker", "infinity_emb", "transformers", "sentence_transformers", "huggingface_hub",
             "optimum", "runpod", "uvicorn", "uvicorn.error", "uvicorn.access")
QUIET = ("`torch_dtype` is deprecated",
         # the model's folder, said again by Infinity and sentence-transformers: the worker's model line has it
         "selected, using engine=", "Load pretrained SentenceTransformer:")
# runpod's lines for each job, which the worker's own job line already says
RUNPOD_PER_JOB = ("Started.", "Finished.", "failed with error:", "completed successfully.", "Job result:")
# warnings about a working model, told as what they are: Infinity's ONNX graph optimisation
# falls back to the exported graph (the vectors are the same), not a fault
DEMOTED = ("Going to use the unoptimized model",)
RUNPOD_LEVELS = {"TRACE": logging.DEBUG, "DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING,
                 "ERROR": logging.ERROR, "TIP": logging.INFO}


class OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " | ".join(line for line in super().format(record).splitlines() if line.strip())


class JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                                 "message": record.getMessage()}
        if getattr(record, "job_id", None):
            entry["job_id"] = record.job_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def _wanted(record: logging.LogRecord) -> bool:
    message = record.getMessage()
    if any(demoted in message for demoted in DEMOTED):
        record.levelno, record.levelname = logging.INFO, "INFO"
    return not any(quiet in message for quiet in QUIET)


def configure_logging() -> None:
    """The one handler, on the root logger; every library's records go to it (call again
    after importing a library that installs its own)."""
    chosen = os.environ.get("LOG_FORMAT", "text").strip().lower()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if chosen == "json" else OneLine("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_wanted)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in LIBRARIES:
        library = logging.getLogger(name)
        library.handlers.clear()
        library.propagate = True
    logging.getLogger("embedding_worker").setLevel(logging.INFO)
    # httpx logs every request at INFO (model files, image URLs): the worker logs what they mean.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def route_runpod_logs() -> None:
    """runpod's logger prints its own line formats; send its lines to the `runpod` logger,
    keeping its level (RUNPOD_LOG_LEVEL) and each line's job id."""
    from runpod.serverless.modules.rp_logger import LOG_LEVELS, RunPodLogger

    log = logging.getLogger("runpod")

    def to_logging(self, message, message_level="INFO", job_id=None) -> None:
        if self.level == "NOTSET":
            return
        if message_level != "TIP" and LOG_LEVELS.index(self.level) > LOG_LEVELS.index(message_level):
            return
        if any(str(message).startswith(line) or line in str(message)[:200] for line in RUNPOD_PER_JOB):
            return
        text = f"{job_id} | {message}" if job_id else str(message)
        log.log(RUNPOD_LEVELS.get(message_level, logging.INFO), "%s", text, extra={"job_id": job_id})

    RunPodLogger.log = to_logging


def keep_uvicorn_in_line() -> None:
    """uvicorn, when runpod starts it (`--rp_serve_api`), installs its own log format; put the
    worker's back right after it does."""
    from uvicorn.config import Config

    if getattr(Config.configure_logging, "keeps_ours", False):
        return
    original = Config.configure_logging

    def configure(self) -> None:
        original(self)
        configure_logging()

    configure.keeps_ours = True
    Config.configure_logging = configure


class PrintedLines:
    """Standard output as the process writes it, where every line is a log record but the
    JSON lines of job outputs: runpod's banner and other libraries' prints become records of
    the `print` logger, so that with LOG_FORMAT=json every line is one JSON object."""

    def __init__(self, stream) -> None:
        self.stream, self.pending = stream, ""

    def write(self, text: str) -> int:
        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            if line.lstrip().startswith(("{", "[")) or not line.strip():
                self.stream.write(line + "\n")
            else:
                logging.getLogger("print").info("%s", line.strip())
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def capture_prints() -> None:
    if not isinstance(sys.stdout, PrintedLines):
        sys.stdout = PrintedLines(sys.stdout)


def print_error(message: str) -> None:
    """The one line a failed start ends with: `error: ...` on stderr, or as a JSON record."""
    if os.environ.get("LOG_FORMAT", "text").strip().lower() == "json":
        logging.getLogger("embedding_worker").error("error: %s", message)
    else:
        print(f"error: {message}", file=sys.stderr, flush=True)
