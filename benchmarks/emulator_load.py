"""Load figures of the NextLeg emulator: start-up time of ``nextleg-emulator`` and GET /v2/message throughput.

Starts the console script as a user would, measures how long until it answers, creates some jobs, then has
several keep-alive clients poll their messages as fast as the emulator answers, rate limit off::

    .venv/bin/python benchmarks/emulator_load.py --clients 8 --seconds 5

Targets: start-up under 2 s, at least 500 GET /v2/message per second.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

TOKEN = "emulator-token"
#: No rate limit, and a queue long enough that every job of the run is a real one (queued, running or done).
EMULATOR_FLAGS = ("--port", "0", "--time-scale", "0.01", "--no-rate-limit", "--queue-length", "100000")


def start_emulator() -> tuple[subprocess.Popen[str], str, float]:
    """Start ``nextleg-emulator`` on a free port: the process, its base URL, the seconds until it answered."""
    command = shutil.which("nextleg-emulator", path=str(Path(sys.executable).parent)) or "nextleg-emulator"
    started = time.perf_counter()
    process = subprocess.Popen(
        [command, *EMULATOR_FLAGS, "--log-level", "warning"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    base_url = process.stdout.readline().split()[4]
    with httpx.Client(trust_env=False) as client:
        while True:
            try:
                client.get(f"{base_url}/v2/message/none", headers={"Authorization": f"Bearer {TOKEN}"})
                break
            except httpx.TransportError:
                time.sleep(0.005)
    return process, base_url, time.perf_counter() - started


async def poll(base_url: str, message_ids: list[str], until: float, latencies: list[float]) -> int:
    """Poll messages round-robin on one keep-alive connection until ``until``; return the 200s received.

    A bare HTTP/1.1 client on asyncio streams: a full client library spends more CPU per request than the
    emulator does, and on a small machine the figure would measure the client.
    """
    url = httpx.URL(base_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    ok, index = 0, 0
    while time.perf_counter() < until:
        message_id = message_ids[index % len(message_ids)]
        sent = time.perf_counter()
        writer.write(
            f"GET /v2/message/{message_id} HTTP/1.1\r\nHost: {url.host}\r\n"
            f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        body = await reader.readexactly(length)
        latencies.append(time.perf_counter() - sent)
        ok += head.startswith(b"HTTP/1.1 200") and body.startswith(b'{"progress"')
        index += 1
    writer.close()
    return ok


async def measure(base_url: str, clients: int, seconds: float, jobs: int) -> tuple[float, list[float]]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, trust_env=False) as client:
        message_ids = [
            (await client.post("/v2/imagine", json={"msg": f"load test job {n}"})).json()["messageId"]
            for n in range(jobs)
        ]
    latencies: list[float] = []
    until = time.perf_counter() + seconds
    counts = await asyncio.gather(*(poll(base_url, message_ids, until, latencies) for _ in range(clients)))
    return sum(counts) / seconds, latencies


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent keep-alive clients")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to poll")
    parser.add_argument("--jobs", type=int, default=1000, help="jobs whose messages are polled")
    args = parser.parse_args()
    process, base_url, startup = start_emulator()
    try:
        rate, latencies = asyncio.run(measure(base_url, args.clients, args.seconds, args.jobs))
    finally:
        process.terminate()
        process.wait(timeout=10)
    latencies.sort()
    print(f"start-up of nextleg-emulator until it answers: {startup:.2f} s")
    print(f"GET /v2/message: {rate:.0f} requests/s, {args.clients} keep-alive clients, {args.seconds:g} s")
    print(
        f"latency: median {statistics.median(latencies) * 1000:.1f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
