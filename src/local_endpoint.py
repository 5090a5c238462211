"""Serve the worker on localhost with RunPod's URL layout (see README, "Use it from your code").

    python src/local_endpoint.py [--host 127.0.0.1] [--port 8000] [--api-key KEY]

Models and settings come from the same environment variables as on RunPod. Every flag
can also be set by environment: LOCAL_HOST, LOCAL_PORT, LOCAL_API_KEY.
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description="Serve the worker like a RunPod endpoint, locally.")
    parser.add_argument("--host", default=os.environ.get("LOCAL_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("LOCAL_PORT", "8000")))
    parser.add_argument(
        "--api-key",
        default=os.environ.get("LOCAL_API_KEY", ""),
        help="require this key (Authorization: Bearer KEY), as RunPod's API keys do",
    )
    args = parser.parse_args()

    from embedding_worker.worker import import_runpod, start_worker

    worker = start_worker()
    if worker is None:
        return 1

    import_runpod()  # before create_app imports runpod's job runner
    import uvicorn

    class Server(uvicorn.Server):
        """On SIGTERM or SIGINT: stop accepting, finish what is in flight, stop the engines,
        exit 0 (as a RunPod worker does), instead of re-raising the signal afterwards."""

        def handle_exit(self, sig, frame) -> None:
            self.force_exit = self.should_exit  # a second signal: stop waiting
            self.should_exit = True

    from embedding_worker.local_endpoint import LocalEndpointConfig, create_app

    app = create_app(worker, LocalEndpointConfig(api_key=args.api_key))
    print(f"serving on http://{args.host}:{args.port}/v2/<any endpoint id>", flush=True)
    Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
