"""What the process is started with, checked in its first second, before any model loads:
the variables runpod reads and the command-line arguments it parses. A mistake there would
otherwise surface only after every model has loaded, as a traceback."""

from __future__ import annotations

import json
from collections.abc import Mapping

from embedding_worker.errors import SettingsError

RUNPOD_LOG_LEVELS = ("NOTSET", "TRACE", "DEBUG", "INFO", "WARN", "ERROR")  # runpod's rp_logger
RUNPOD_INTEGERS = ("RUNPOD_REALTIME_PORT", "RUNPOD_REALTIME_CONCURRENCY", "RUNPOD_PING_INTERVAL")


# runpod's own flags (runpod.serverless's argument parser), each followed by a value but these
RUNPOD_FLAGS = ("--rp_log_level", "--rp_debugger", "--rp_serve_api", "--rp_api_port", "--rp_api_concurrency",
                "--rp_api_host", "--test_input")
SWITCHES = ("--rp_debugger", "--rp_serve_api")
EXAMPLE_JOB = '\'{"input": {"model": "...", "input": "Hello"}}\''
USAGE = f"""usage: python src/handler.py [--test_input JOB] [--rp_serve_api [--rp_api_port PORT]] [--rp_log_level LEVEL]

The worker: RunPod's queue-based serverless worker (the default), or with
ENDPOINT_TYPE=load_balancer an HTTP server for RunPod's load-balancing endpoints.

  --test_input JOB   run one job and print its output, e.g. --test_input {EXAMPLE_JOB}
                     (without it and off RunPod, the job in test_input.json)
  --rp_serve_api     runpod's local HTTP test server (--rp_api_port, --rp_api_host)
  --rp_log_level L   runpod's log level (ERROR, WARN, INFO, DEBUG)
  -h, --help         this text

Variables that matter most (all of them: the README's Configuration table):
  MODEL_NAMES        required: ;-separated Hugging Face ids or local folders
  HF_HOME            where downloaded models are kept (the Hugging Face cache)
  HF_HUB_OFFLINE=1   load only from the caches; never ask the hub
  HF_ENDPOINT        another hub (a mirror); HF_TOKEN for gated models
  DTYPES, BATCH_SIZES, DEVICE, BACKEND, SERVED_MODEL_NAMES, LOG_FORMAT=json
  ENDPOINT_TYPE      queue (default) or load_balancer (then PORT, HEALTH_CHECK_PATH)"""


def wants_help(argv: list[str]) -> bool:
    return any(arg in ("-h", "--help") for arg in argv[1:])


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
        if isinstance(job, dict) and "model" in job:
            raise SettingsError("--test_input: this looks like the request itself; wrap it as the job's input: "
                                f"{EXAMPLE_JOB}")
        if not isinstance(job, dict) or not isinstance(job.get("input"), dict):
            raise SettingsError(f'--test_input: must be a JSON object whose "input" is the request object, such as '
                                f"{EXAMPLE_JOB}")


def _argument(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name:
            if i + 1 >= len(argv):
                raise SettingsError(f"{name}: a value is needed")
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1:]
    return None


def check_flags(argv: list[str]) -> None:
    """`src/handler.py`'s flags are runpod's: raise `SettingsError` (one line) for any other."""
    arguments = iter(argv[1:])
    for arg in arguments:
        name = arg.split("=", 1)[0]
        if name not in RUNPOD_FLAGS:
            raise SettingsError(f"{arg}: not a flag of this worker; flags: {', '.join(RUNPOD_FLAGS)} (--help for more)")
        if name not in SWITCHES and "=" not in arg:
            next(arguments, None)  # its value
