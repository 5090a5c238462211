"""The local endpoint defends itself: bounded bodies, headers, connections and memory;
no cross-site or rebinding requests; a burst never kills a busy engine."""

from __future__ import annotations

import socket
import time

import httpx
import psutil
import pytest

from conftest import EMBEDDER_ID, start_local_endpoint

JOB = {"input": {"model": EMBEDDER_ID, "input": "hello"}}


@pytest.fixture(scope="module")
def endpoint(hub_cache, tiny_embedder_path):
    server, base = start_local_endpoint(MODEL_NAMES=f"{EMBEDDER_ID};{tiny_embedder_path}",
                                        SERVED_MODEL_NAMES=f"{EMBEDDER_ID};tiny", BATCH_SIZES="32;256",
                                        LOCAL_HEADER_TIMEOUT="1", LOCAL_BODY_TIMEOUT="2")
    yield server, base
    server.terminate()
    log = server.read_log()
    server.wait(30)
    assert "Traceback" not in log  # clients that drop mid-upload are not errors
    assert "DEBUG" not in log  # runpod logs at INFO


def serves(base: str) -> bool:
    return httpx.post(f"{base}/runsync", json=JOB, timeout=30).json()["status"] == "COMPLETED"


def port_of(base: str) -> int:
    return httpx.URL(base).port


def test_a_40_mb_body_gets_413_at_once_and_the_server_keeps_serving(endpoint):
    server, base = endpoint
    body = b'{"input": {"model": "x", "input": "' + b"a" * (40 * 2**20) + b'"}}'
    started = time.perf_counter()
    reply = httpx.post(f"{base}/runsync", content=body, headers={"Content-Type": "application/json"}, timeout=30)
    assert reply.status_code == 413 and time.perf_counter() - started < 5
    assert reply.json() == {"error": f"the body has {len(body)} bytes; the limit is 20971520 (LOCAL_MAX_BODY_BYTES)"}

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(40):
            yield b"a" * 2**20

    reply = httpx.post(f"{base}/runsync", content=chunks(), headers={"Content-Type": "application/json"}, timeout=30)
    assert reply.status_code == 413
    assert serves(base)


@pytest.mark.parametrize("headers, status", [
    ({"Host": "evil.example"}, 421),
    ({"Host": "evil.example:8000"}, 421),
    ({"Origin": "http://evil.example"}, 403),
    ({"Origin": "http://203.0.113.7"}, 403),  # a page served from a bare IP address
    ({"Origin": "http://[2001:db8::7]:8000"}, 403),
    ({"Origin": "http://[::1"}, 403),  # not a URL at all
    ({"Content-Type": "text/plain"}, 415),
    ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
])
def test_cross_site_and_rebinding_requests_are_refused(endpoint, headers, status):
    server, base = endpoint
    reply = httpx.post(f"{base}/runsync", content=b'{"input": {"model": "%s", "input": "x"}}' % EMBEDDER_ID.encode(),
                       headers={"Content-Type": "application/json", **headers}, timeout=30)
    assert reply.status_code == status
    assert list(reply.json()) == ["error"] and "\n" not in reply.json()["error"]
    for host in ("localhost", "127.0.0.1"):
        reply = httpx.post(f"http://{host}:{port_of(base)}/v2/local/runsync", json=JOB, timeout=30,
                           headers={"Origin": f"http://{host}:{port_of(base)}"})
        assert reply.json()["status"] == "COMPLETED"


def test_a_page_on_a_bare_ip_address_cannot_purge_the_queue_and_loopback_pages_can(endpoint):
    server, base = endpoint
    reply = httpx.post(f"{base}/purge-queue", headers={"Origin": "http://203.0.113.7"}, timeout=30)
    assert reply.status_code == 403
    assert reply.json() == {"error": "cross-origin requests from 'http://203.0.113.7' are refused"}
    for origin in ("http://127.0.0.2:3000", "http://[::1]:3000", "http://localhost:3000"):
        assert httpx.post(f"{base}/purge-queue", headers={"Origin": origin}, timeout=30).status_code == 200


def test_idle_and_slow_connections_are_closed_after_the_header_timeout(endpoint):
    server, base = endpoint
    idle = socket.create_connection(("127.0.0.1", port_of(base)))
    slow = socket.create_connection(("127.0.0.1", port_of(base)))
    slow.sendall(b"POST /v2/local/runsync HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    started = time.perf_counter()
    for sock in (idle, slow):
        sock.settimeout(10)
        for _ in range(3):  # a trickle of header bytes does not keep it open
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
            time.sleep(0.3)
        assert sock.recv(1024) == b""  # closed by the server
        sock.close()
    assert time.perf_counter() - started < 5
    stalled = socket.create_connection(("127.0.0.1", port_of(base)))  # a body that never comes
    stalled.sendall(b"POST /v2/local/runsync HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 1000\r\n\r\n{\"input\"")
    stalled.settimeout(10)
    assert b" 408 " in stalled.recv(1024)
    stalled.close()
    dropped = socket.create_connection(("127.0.0.1", port_of(base)))  # a client gone mid-upload
    dropped.sendall(b"POST /v2/local/runsync HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 1000\r\n\r\n{\"input\"")
    dropped.close()
    assert serves(base)


def test_request_headers_past_64_kib_close_the_connection_and_the_server_keeps_serving(endpoint):
    """Headers past MAX_HEADER_BYTES, in one burst or a trickle, end the connection (with a 400 at
    most); headers just under it, and a large body after small headers, pass."""
    server, base = endpoint
    memory = psutil.Process(server.pid).memory_info().rss
    for burst in (True, False):
        sock = socket.create_connection(("127.0.0.1", port_of(base)))
        sock.settimeout(10)
        sock.sendall(b"GET /v2/local/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        filler = b"X-Filler: " + b"a" * 1000 + b"\r\n"
        try:
            if burst:
                sock.sendall(filler * 70)
            else:
                for _ in range(70):
                    sock.sendall(filler)
        except OSError:
            pass  # closed while sending: refused
        answer = sock.recv(1024)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 400 "), answer[:100]
        sock.close()
    near = {f"X-Filler-{i}": "a" * 1000 for i in range(60)}
    assert httpx.get(f"{base}/health", headers=near, timeout=10).status_code == 200
    big = httpx.post(f"{base}/runsync", json={"input": {"model": EMBEDDER_ID, "input": ["word " * 200] * 200}},
                     timeout=120)
    assert big.status_code == 200 and big.json()["status"] == "COMPLETED"
    assert psutil.Process(server.pid).memory_info().rss - memory < 200 * 2**20
    assert serves(base)


def test_forty_results_of_2048_vectors_grow_the_server_by_less_than_400_mb(endpoint):
    server, base = endpoint
    process = psutil.Process(server.pid)
    with httpx.Client(timeout=120) as client:
        assert serves(base)
        before = process.memory_info().rss
        for i in range(40):
            job = {"input": {"model": "tiny", "input": [f"t{i} {j}" for j in range(2048)]}}
            reply = client.post(f"{base}/runsync", json=job).json()
            assert reply["status"] == "COMPLETED" and len(reply["output"]["data"]) == 2048
        grown = (process.memory_info().rss - before) / 2**20
    print(f"server grew by {grown:.0f} MB")
    assert grown < 400, f"{grown:.0f} MB"


def test_an_http_burst_of_many_timeouts_of_work_leaves_the_model_healthy(hub_cache):
    server, base = start_local_endpoint(MODEL_NAMES=EMBEDDER_ID, REQUEST_TIMEOUT="3")
    try:
        texts = [f"burst text {j} " * 8 for j in range(128)]
        with httpx.Client(timeout=120) as client:
            ids = [client.post(f"{base}/run", json={"input": {"model": EMBEDDER_ID, "input": texts}}).json()["id"]
                   for _ in range(48)]
            deadline, results = time.time() + 240, {}
            while len(results) < len(ids) and time.time() < deadline:
                for job_id in ids:
                    if job_id not in results:
                        state = client.get(f"{base}/status/{job_id}").json()
                        if state["status"] in ("COMPLETED", "FAILED"):
                            results[job_id] = state
                time.sleep(0.5)
            assert len(results) == 48
            failed = [r for r in results.values() if r["status"] == "FAILED"]
            assert all("retry later" in r["error"] for r in failed), failed[:2]
            assert len(failed) < 48
            assert client.get(f"{base}/health").status_code == 200
            # Right after: batches of requests that gave up may still be finishing; the model
            # answers as soon as they are done, and is never replaced.
            started, reply = time.perf_counter(), {}
            while reply.get("status") != "COMPLETED" and time.perf_counter() - started < 15:
                reply = client.post(f"{base}/runsync", json=JOB).json()
                assert "refresh_worker" not in reply and "is unavailable" not in reply.get("error", "")
            assert reply["status"] == "COMPLETED", reply.get("error")
            assert client.get(f"{base}/health").status_code == 200
    finally:
        server.terminate()
        server.wait(30)
