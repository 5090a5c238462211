"""Every way a client reaches an embedding, as one `call(texts)` per target, on loopback.

Targets: the in-process engine (the ceiling), the worker's local endpoint, its production
path (runpod's job loop against a stand-in job API), runpod's `--rp_serve_api`, the worker
as a load-balancing endpoint (`ENDPOINT_TYPE=load_balancer`, the API at its root), RunPod's
original worker, and Infinity's own server. `Targets` starts them all at once (an idle one
costs nothing) and stops them together.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import orjson
import psutil

import peers
from common import ENV, MODEL, ROOT, free_port, worker_for

OURS = ("local endpoint", "production loop", "rp_serve_api", "load balancer")
PEERS = ("original worker", "infinity server")


class Targets:
    def __init__(self, names: list[str], dtype: str, original_dtype: str = "auto",
                 env: dict[str, str] | None = None, models: tuple[str, ...] = (MODEL,), dimension: int = 384) -> None:
        """`dtype`: this worker's and Infinity's server's DTYPES; `original_dtype`: the original's;
        `env`: more variables for this worker's servers; `models`: what every target serves (the
        first is embedded, of `dimension`). "local openai" is the local endpoint's OpenAI route."""
        self.names = names
        self.dimension = dimension
        self.models = models
        self.env = {"MODEL_NAMES": ";".join(models), **(env or {})}
        self.dtype = dtype
        self.original_dtype = original_dtype
        self.processes: dict[str, subprocess.Popen] = {}
        self.urls: dict[str, str] = {}
        self.job_api: peers.JobApi | None = None
        self.worker = None
        self.client: httpx.AsyncClient | None = None

    def start_processes(self) -> None:
        env = {**ENV, "DTYPES": self.dtype, **self.env}
        for name in self.names:
            if name in ("local endpoint", "local openai") and "local endpoint" not in self.processes:
                name = "local endpoint"
                port = free_port()
                self.processes[name] = subprocess.Popen(
                    [sys.executable, "src/local_endpoint.py", "--port", str(port)], cwd=ROOT, env=env,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                self.urls[name] = f"http://127.0.0.1:{port}/v2/bench"
                peers.wait_until_up(self.processes[name], f"{self.urls[name]}/health", name)
            elif name == "rp_serve_api":
                port = free_port()
                self.processes[name] = subprocess.Popen(
                    [sys.executable, "src/handler.py", "--rp_serve_api", "--rp_api_port", str(port)], cwd=ROOT,
                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                self.urls[name] = f"http://127.0.0.1:{port}"
                peers.wait_until_up(self.processes[name], f"{self.urls[name]}/docs", name)
            elif name == "load balancer":
                port = free_port()
                self.processes[name] = subprocess.Popen(
                    [sys.executable, "src/handler.py"], cwd=ROOT,
                    env={**env, "ENDPOINT_TYPE": "load_balancer", "PORT": str(port)},
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                self.urls[name] = f"http://127.0.0.1:{port}"
                peers.wait_until_up(self.processes[name], f"{self.urls[name]}/ping", name, ready=200)
            elif name == "original worker":
                self.processes[name], self.urls[name] = peers.start_original_worker(  # one value per model
                    {"DTYPES": ";".join([self.original_dtype] * len(self.models)),
                     "BATCH_SIZES": ";".join(["32"] * len(self.models)), "MODEL_NAMES": self.env["MODEL_NAMES"]})
                peers.wait_until_up(self.processes[name], f"{self.urls[name]}/docs", name)
            elif name == "infinity server":
                self.processes[name], self.urls[name] = peers.start_infinity_server(self.dtype, self.models)
                peers.wait_until_up(self.processes[name], f"{self.urls[name]}/health", name)

    async def renew_client(self) -> None:
        """A new HTTP client, as each round of requests should have: httpx's pool, handed
        back 64 idle connections at once, serves the next round's first requests a second
        or more late (a quarter of a 64-concurrent round waited over 1 s, every other
        round), whatever the server."""
        if self.client is not None:
            await self.client.aclose()
        self.client = httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=256,
                                                                         max_keepalive_connections=256))

    async def start(self) -> None:
        self.start_processes()
        await self.renew_client()
        if "production loop" in self.names:
            self.job_api = peers.JobApi()
            await self.job_api.start()
            self.processes["production loop"] = subprocess.Popen(
                [sys.executable, "src/handler.py"], cwd=ROOT,
                env={**ENV, "DTYPES": self.dtype, **self.env, **self.job_api.worker_env},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if "in-process engine" in self.names:
            self.worker = worker_for("torch", DTYPES=self.dtype, MODEL_NAMES=self.env["MODEL_NAMES"])
            await self.worker.registry.start()

    async def stop(self) -> None:
        if self.worker is not None:
            await self.worker.registry.stop()
        if self.client is not None:
            await self.client.aclose()
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        if self.job_api is not None:
            await self.job_api.stop()

    def process(self, name: str) -> psutil.Process | None:
        return psutil.Process(self.processes[name].pid) if name in self.processes else None

    def call(self, name: str):
        """`async call(texts)` that embeds `texts` through target `name` and checks the reply."""
        client = self.client

        model = self.models[0]
        served = "/".join(model.rstrip("/").split("/")[-2:]) if name in PEERS and model != MODEL else model

        def check(data: list, texts: list[str]) -> None:
            assert len(data) == len(texts) and len(data[-1]["embedding"]) == self.dimension, name

        if name == "in-process engine":
            engine = self.worker.registry.resolve(model).engine

            async def call(texts: list[str]) -> None:
                await engine.embed(texts)
        elif name == "production loop":
            async def call(texts: list[str]) -> None:
                result = await self.job_api.submit({"model": model, "input": texts})
                check(result["output"]["data"], texts)
        elif name in ("infinity server", "load balancer", "local openai"):
            url = {"infinity server": f"{self.urls.get(name)}/embeddings",
                   "load balancer": f"{self.urls.get(name)}/v1/embeddings",
                   "local openai": f"{self.urls.get('local endpoint')}/openai/v1/embeddings"}[name]

            async def call(texts: list[str]) -> None:
                reply = await client.post(url, content=orjson.dumps({"model": served, "input": texts,
                                                                     "encoding_format": "float"}),
                                          headers={"content-type": "application/json"})
                check(orjson.loads(reply.content)["data"], texts)
        else:  # /runsync: the local endpoint, rp_serve_api, the original worker
            url = f"{self.urls[name]}/runsync"

            async def call(texts: list[str]) -> None:
                body = orjson.dumps({"input": {"model": served, "input": texts}})
                reply = await client.post(url, content=body, headers={"content-type": "application/json"})
                check(orjson.loads(reply.content)["output"]["data"], texts)

        return call

    def rerank_call(self, name: str, model: str):
        """`async call(query, docs)` that reranks `docs` through target `name` and checks the reply."""
        client = self.client

        def check(results: list, docs: list[str]) -> None:
            assert len(results) == len(docs), name

        # Infinity names a model in a folder by the folder's last two parts, and so does the original worker
        served = "/".join(model.rstrip("/").split("/")[-2:]) if name in PEERS else model
        if name == "in-process engine":
            engine = self.worker.registry.resolve(model).engine

            async def call(query: str, docs: list[str]) -> None:
                await engine.rerank(query=query, docs=docs)
        elif name in ("infinity server", "load balancer"):
            url = f"{self.urls[name]}/rerank" if name == "infinity server" else f"{self.urls[name]}/v1/rerank"

            async def call(query: str, docs: list[str]) -> None:
                reply = await client.post(url, content=orjson.dumps({"model": served, "query": query,
                                                                     "documents": docs}),
                                          headers={"content-type": "application/json"})
                check(orjson.loads(reply.content)["results"], docs)
        elif name == "production loop":
            async def call(query: str, docs: list[str]) -> None:
                result = await self.job_api.submit({"model": model, "query": query, "docs": docs})
                check(result["output"]["results"], docs)
        else:  # /runsync: the local endpoint, rp_serve_api, the original worker
            url = f"{self.urls[name]}/runsync"

            async def call(query: str, docs: list[str]) -> None:
                body = orjson.dumps({"input": {"model": served, "query": query, "docs": docs}})
                reply = await client.post(url, content=body, headers={"content-type": "application/json"})
                if reply.status_code != 200:
                    raise RuntimeError(f"{name} answered {reply.status_code}: {reply.text[:300]}")
                check(orjson.loads(reply.content)["output"]["results"], docs)

        return call
