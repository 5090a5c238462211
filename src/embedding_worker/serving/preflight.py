"""What the process is started with, checked in its first second, before any model loads:
the variables runpod reads and the command-line arguments it parses. A mistake there would
otherwise surface only after every model has loaded, as a traceback."""

from __future__ import annotations

import json
from collections.abc import Mapping

from embedding_worker.errors import SettingsError

RUNPOD_LOG_LEVELS = ("NOTSET", "TRACE", "DEBUG", "INFO", "WARN", "ERROR")  # runpod's rp_logger
RUNPOD_INTEGERS = ("RUNPOD_REALTIME_PORT", "RUNPOD_REALTIME_CONCURRENCY", "RUNPOD_PING_INTERVAL")


def check_process_inputs(argv: list[str], environ: Mapping[str, str]) -> None:
    """Raise `SettingsError` (one line) for the first invalid runpod variable or argument."""
    level = environ.get("RUNPOD_LOG_LEVEL")
    if level is not None and level.upper() not in RUNPOD_LOG_LEVELS and not (
            level.isdigit() and int(level) < len(RUNPOD_LOG_LEVELS)):
        raise SettingsError(f"RUNPOD_LOG_LEVEL: {level!r} is not one of {', '.join(RUNPOD_LOG_LEVELS)}")
    for name in RUNPOD_INTEGERS:
        value = environ.get(name)
        if value is not None and not value.strip().isdigit():
            raise SettingsError(f"{name}: {value!r} is not a whole number")
    test_input = _argument(argv, "--test_input")
    if test_input is not None:
        try:
            job = json.loads(test_input)
        except ValueError as exc:
            raise SettingsError(f"--test_input: not valid JSON ({exc}); give a job such as "
                                '\'{"input": {"model": "...", "input": "Hello"}}\'') from None
        if not isinstance(job, dict) or "input" not in job:
            raise SettingsError('--test_input: must be a JSON object with an "input" field, such as '
                                '\'{"input": {"model": "...", "input": "Hello"}}\'')


def _argument(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name:
            if i + 1 >= len(argv):
                raise SettingsError(f"{name}: a value is needed")
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1:]
    return None
