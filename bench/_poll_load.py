"""Simulated unattended agents polling a real server (``bench/schedules.py``, not a public
entry): ``GET /api/agent/v1/poll`` as the agent's poller does it (``agent/poller.py``).

Each agent starts at a random instant of the first poll interval, holds the last
``generation`` it was given, and asks with ``wait`` seconds of long poll; it polls again at
once after a poll the server held (``waited``), one second after an answer that brought
something (its sets: the first poll), and otherwise after ``poll_interval`` plus a random
0–10 % (at most 10 s). Every request is a new connection (an agent's next poll comes long
after the server's keep-alive time), from one of ``sources`` loopback addresses (127.0.1.x:
the server limits connections per address), through that address's ``httpx.AsyncClient``.
Traffic goes to 127.0.0.1 only; the run ends after ``seconds`` (waiting polls cancelled).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

POLL_PATH = "/api/agent/v1/poll"


@dataclass
class PollStats:
    """What the agents saw: answers by status, and per answer kind the latency (seconds) and
    the time (monotonic) it completed: ``first`` (an answer with sets), ``prompt`` (answered at
    once with nothing new), ``held`` (a long poll the server held)."""

    statuses: Counter[str] = field(default_factory=Counter)
    first: list[tuple[float, float]] = field(default_factory=list)
    prompt: list[tuple[float, float]] = field(default_factory=list)
    held: list[tuple[float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def source_address(i: int) -> str:
    """Loopback source address number ``i`` (127.0.1.1 …; never 127.0.0.1)."""
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


async def _agent(
    i: int, client: httpx.AsyncClient, login: tuple[str, str], run: _Run, stats: PollStats
) -> None:
    await asyncio.sleep(run.rng.uniform(0, run.interval))
    generation: str | None = None
    while time.monotonic() < run.deadline:
        params = {"wait": str(run.wait)}
        if generation is not None:
            params["generation"] = generation
        t0 = time.monotonic()
        delay = run.interval
        try:
            r = await client.get(POLL_PATH, params=params, auth=login)
        except httpx.HTTPError as exc:
            stats.statuses[type(exc).__name__] += 1
            await asyncio.sleep(5 + run.rng.uniform(0, 1))
            continue
        took, done = time.monotonic() - t0, time.monotonic()
        stats.statuses[str(r.status_code)] += 1
        if r.status_code == 200:
            body = r.json()
            generation = body["generation"]
            delay = float(body.get("poll_interval") or run.interval)
            if body["waited"]:
                stats.held.append((took, done))
                continue
            if body["sets"] is not None or body["run_requests"]:
                stats.first.append((took, done))
                await asyncio.sleep(1.0)
                continue
            stats.prompt.append((took, done))
        elif len(stats.errors) < 5:
            stats.errors.append(f"{r.status_code} {r.text[:200]}")
        await asyncio.sleep(delay + min(delay * run.rng.uniform(0, 0.1), 10.0))


@dataclass
class _Run:
    interval: float
    wait: int
    deadline: float
    rng: random.Random


async def _main(
    base: str, logins: list[tuple[str, str]], *, seconds: float, wait: int, sources: int
) -> PollStats:
    stats = PollStats()
    run = _Run(60.0, wait, time.monotonic() + seconds, random.Random(7))
    limits = httpx.Limits(max_connections=90, max_keepalive_connections=0)
    timeout = httpx.Timeout(wait + 30.0, connect=10.0)
    clients = [
        httpx.AsyncClient(
            base_url=base,
            timeout=timeout,
            transport=httpx.AsyncHTTPTransport(local_address=source_address(n), limits=limits),
        )
        for n in range(sources)
    ]
    tasks = [
        asyncio.create_task(_agent(i, clients[i % sources], login, run, stats))
        for i, login in enumerate(logins)
    ]
    try:
        await asyncio.sleep(seconds)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in clients:
            await c.aclose()
    return stats


def run_agents(
    base: str, logins: list[tuple[str, str]], *, seconds: float, wait: int, sources: int
) -> PollStats:
    """Poll ``base`` as the agents ``logins`` (login name, password) for ``seconds``, each
    long poll ``wait`` seconds, from ``sources`` loopback addresses; what they saw."""
    return asyncio.run(_main(base, logins, seconds=seconds, wait=wait, sources=sources))
