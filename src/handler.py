"""RunPod serverless entry point: settings -> engines -> service -> runpod.serverless.start,
or, with ENDPOINT_TYPE=load_balancer, the worker's own HTTP server for RunPod's
load-balancing endpoints (`serving/load_balancer.py`).

    python src/handler.py                      # serve jobs (on RunPod), or run test_input.json
    python src/handler.py --test_input '{...}' # run one job locally, print it, exit 0 or 1
    python src/handler.py --rp_serve_api       # runpod's local HTTP test server
    ENDPOINT_TYPE=load_balancer PORT=8000 python src/handler.py   # as a load-balancing endpoint
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


def main() -> int:
    from embedding_worker.errors import SettingsError
    from embedding_worker.serving.logs import print_error
    from embedding_worker.serving.preflight import USAGE, check_flags, wants_help

    if wants_help(sys.argv):
        print(USAGE)
        return 0
    try:
        check_flags(sys.argv)
    except SettingsError as err:
        print_error(str(err))
        return 1
    if os.environ.get("ENDPOINT_TYPE", "").strip() == "load_balancer":
        from embedding_worker.serving.load_balancer import main as serve_load_balancer

        return serve_load_balancer()
    from embedding_worker.serving.logs import capture_prints
    from embedding_worker.serving.runpod_patches import import_runpod
    from embedding_worker.serving.worker import start_worker

    capture_prints()  # runpod's banner and other prints: log lines like the rest
    worker = start_worker()
    if worker is None:
        return 1

    handler = worker.handler
    runpod = import_runpod()
    one_job = runs_one_local_job(sys.argv, os.environ)
    serve = print_outputs(handler) if one_job else handler
    if "--rp_serve_api" in sys.argv:
        from embedding_worker.serving.logs import keep_uvicorn_in_line

        keep_uvicorn_in_line()
        # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully, which
        # would end the process with 143; a graceful stop exits 0, as the worker loop does.
        signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        runpod.serverless.start({"handler": serve, "concurrency_modifier": handler.concurrency_modifier})
    except SystemExit as done:  # the local test path ends with sys.exit(0 or 1)
        code = done.code if isinstance(done.code, int) else 1
        if one_job:
            # One job, printed: nothing is left to drain, so end at once rather than wait
            # about two seconds for Infinity's threads to notice their shutdown.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        return code
    finally:
        worker.registry.stop_outside_loop()
    return 0


def runs_one_local_job(argv: list[str], environ: Mapping[str, str]) -> bool:
    """runpod's own rule: off RunPod and not serving an API, it runs one test job and exits."""
    if "--test_input" in argv or any(arg.startswith("--test_input=") for arg in argv):
        return True
    serving = "--rp_serve_api" in argv or environ.get("RUNPOD_REALTIME_PORT")
    return not serving and not environ.get("RUNPOD_WEBHOOK_GET_JOB")


def print_outputs(handler: Handler) -> Handler:
    """Print each job's whole output as one JSON line (runpod's log truncates long results)."""

    async def handle_and_print(job: dict[str, Any]) -> Any:
        output = await handler(job)
        print(json.dumps(output, ensure_ascii=False), flush=True)
        return output

    return handle_and_print


if __name__ == "__main__":
    sys.exit(main())
