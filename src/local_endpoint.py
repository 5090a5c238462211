"""Serve the worker on localhost with RunPod's URL layout (see README, "Use it from your code").

    python src/local_endpoint.py [--host 127.0.0.1] [--port 8000] [--api-key KEY]

Models and settings come from the same environment variables as on RunPod. The endpoint's
own settings are LOCAL_* variables (README, "Local endpoint settings"); the flags win.
"""

from __future__ import annotations

import argparse
import logging
import sys


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Serve the worker like a RunPod endpoint, locally: RunPod's API under /v2/<any id>/ "
                    "(runsync, run, status, ...) and the OpenAI routes under /v2/<any id>/openai/v1/.",
        epilog="Models and settings come from the worker's variables: MODEL_NAMES (required, ;-separated hub ids "
               "or folders), HF_HOME (the Hugging Face cache), HF_HUB_OFFLINE=1 (only the caches), HF_ENDPOINT, "
               "DTYPES, BATCH_SIZES, ... (the README's Configuration table); the endpoint's own settings are "
               "LOCAL_* variables, the flags win.")
    parser.add_argument("--host", help="address to listen on (LOCAL_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (LOCAL_PORT, default 8000)")
    parser.add_argument("--api-key", help="require this key (Authorization: Bearer KEY), as RunPod's API "
                                          "keys do (LOCAL_API_KEY)")
    args = parser.parse_args()

    from pydantic import ValidationError

    from embedding_worker.serving.local_endpoint import LocalEndpointConfig, create_app

    flags = {name: value for name, value in vars(args).items() if value is not None}
    try:
        config = LocalEndpointConfig(**flags)
    except ValidationError as exc:
        problems = "; ".join(f"LOCAL_{e['loc'][0]}".upper() + f": {e['msg']}" for e in exc.errors())
        print(f"error: invalid settings: {problems}", file=sys.stderr)
        return 1

    from embedding_worker.errors import SettingsError
    from embedding_worker.serving.http_defences import bind, serve
    from embedding_worker.serving.logs import configure_logging, print_error
    from embedding_worker.settings import load_settings

    configure_logging()
    try:
        settings = load_settings()  # the worker's settings, checked before the port is taken
    except SettingsError as err:
        print_error(str(err))
        return 1
    settings.export_engine_environment()
    try:
        sock = bind(config.host, config.port)  # in the first second, before any model loads
    except OSError as exc:
        print_error(str(exc))
        return 1

    from embedding_worker.serving.runpod_patches import import_runpod
    from embedding_worker.serving.worker import start_worker

    import_runpod()  # before create_app imports runpod's job runner
    # The models load beside the running server: a job sent meanwhile waits IN_QUEUE, and its
    # delayTime counts the wait, as on RunPod.
    app = create_app(lambda: start_worker(settings), config)
    logging.getLogger("embedding_worker.serving").info(
        "serving on http://%s:%d/v2/<any endpoint id>; loading the models", config.host, sock.getsockname()[1])
    serve(app, sock, header_timeout=config.header_timeout, keep_alive_timeout=config.keep_alive_timeout,
          max_connections=config.max_connections)
    return app.state.exit_code


if __name__ == "__main__":
    sys.exit(main())
