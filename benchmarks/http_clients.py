"""CPU per request of the async HTTP clients the gateway and the emulator could use, in the same run.

    python benchmarks/http_clients.py [--requests 6000] [--concurrency 64]

Serves the HTTP floor (benchmarks/apps/floor.py: constant JSON) under uvicorn, then from one event
loop (uvloop) sends `--requests` POSTs, `--concurrency` at a time, with httpx.AsyncClient and with
aiohttp.ClientSession (each with a pool as large as the concurrency, warmed first). Prints the
client process's CPU time per request and the requests/s; the server is the same for both.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.server_throughput import uvicorn_command  # noqa: E402
from sagegate.local.process import free_port, wait_healthy  # noqa: E402

BODY = b'{"features": {"a": 1}}'


async def _measure(post: Callable[[], Awaitable[None]], requests: int, concurrency: int) -> tuple[float, float]:
    """(CPU microseconds per request, requests/s)."""
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            await post()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(requests)))
    return (time.process_time() - cpu) / requests * 1e6, requests / (time.perf_counter() - wall)


async def _run(url: str, requests: int, concurrency: int) -> dict[str, tuple[float, float]]:
    import aiohttp
    import httpx

    results = {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits) as client:

        async def with_httpx() -> None:
            answer = await client.post(url, content=BODY, headers={"content-type": "application/json"})
            answer.read()

        await _measure(with_httpx, requests // 4, concurrency)  # warm: the pool full
        results["httpx.AsyncClient"] = await _measure(with_httpx, requests, concurrency)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

        async def with_aiohttp() -> None:
            async with session.post(url, data=BODY, headers={"content-type": "application/json"}) as answer:
                await answer.read()

        await _measure(with_aiohttp, requests // 4, concurrency)
        results["aiohttp.ClientSession"] = await _measure(with_aiohttp, requests, concurrency)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()

    import uvloop
    from rich.console import Console
    from rich.table import Table

    port = free_port()
    server = subprocess.Popen(
        uvicorn_command("benchmarks.apps.floor:app", port),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}/", 60, server)
        results = uvloop.run(_run(f"http://127.0.0.1:{port}/invocations", args.requests, args.concurrency))
    finally:
        server.terminate()
        server.wait(30)
    table = Table(title=f"async HTTP clients, {args.requests} POSTs, {args.concurrency} in flight, one event loop")
    for column in ("client", "client CPU us/request", "requests/s"):
        table.add_column(column, justify="right")
    for name, (cpu_us, rps) in results.items():
        table.add_row(name, f"{cpu_us:,.0f}", f"{rps:,.0f}")
    Console(width=120).print(table)
    ratio = results["httpx.AsyncClient"][0] / results["aiohttp.ClientSession"][0]
    Console(width=120).print(f"httpx costs {ratio:.1f}x the CPU of aiohttp per request at this concurrency")


if __name__ == "__main__":
    main()
