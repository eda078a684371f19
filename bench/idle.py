"""
Idle sessions: open many at once through the gateway, hold them while
something is measured, then close them.

An asyncio client (asyncpg) opens the sessions with a bounded number of
logins in flight; every connect has a timeout, so the whole step is
bounded. A sample of the sessions runs C{select 1} before the measurement,
proving they are live sessions and not half-open sockets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

import asyncpg

from bench.servers import DATABASE, BenchError, Endpoint

__all__ = ["hold_idle_sessions"]

T = TypeVar("T")

#: Seconds one login may take.
CONNECT_TIMEOUT = 60.0

#: How many sessions of the set run a query to prove they are live.
PROBES = 20


async def _open_all(
    endpoint: Endpoint,
    tls: bool,
    *,
    count: int,
    concurrency: int,
    progress: Callable[[int], None],
) -> tuple[list[Any], list[BaseException]]:
    gate = asyncio.Semaphore(concurrency)
    sessions: list[Any] = []

    async def one() -> None:
        async with gate:
            session = await asyncpg.connect(
                host="127.0.0.1",
                port=endpoint.port,
                user=endpoint.user,
                password=endpoint.password,
                database=DATABASE,
                ssl="require" if tls else False,
                timeout=CONNECT_TIMEOUT,
                statement_cache_size=0,
            )
        sessions.append(session)
        if len(sessions) % 250 == 0:
            progress(len(sessions))

    outcomes = await asyncio.gather(
        *(one() for _ in range(count)), return_exceptions=True
    )
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    return sessions, errors


async def _probe(sessions: list[Any]) -> None:
    step = max(1, len(sessions) // PROBES)
    for session in sessions[::step]:
        value = await session.fetchval("select 1")
        if value != 1:
            raise BenchError(f"an idle session answered {value!r} to select 1")


async def _close_all(sessions: list[Any]) -> None:
    await asyncio.gather(
        *(s.close(timeout=CONNECT_TIMEOUT) for s in sessions), return_exceptions=True
    )


async def _hold(
    endpoint: Endpoint,
    tls: bool,
    *,
    count: int,
    concurrency: int,
    while_open: Callable[[], T],
    progress: Callable[[int], None],
) -> T:
    sessions: list[Any] = []
    try:
        sessions, errors = await _open_all(
            endpoint, tls, count=count, concurrency=concurrency, progress=progress
        )
        if errors:
            raise BenchError(
                f"{len(errors)} of {count} sessions failed to open; "
                f"the first: {errors[0]!r}"
            )
        await _probe(sessions)
        return while_open()
    finally:
        await _close_all(sessions)


def hold_idle_sessions(
    endpoint: Endpoint,
    tls: bool,
    *,
    count: int,
    while_open: Callable[[], T],
    concurrency: int = 16,
    progress: Callable[[int], None] = lambda opened: None,
) -> T:
    """
    Open C{count} sessions, call C{while_open()} while they are all open
    and idle, close them, and return what it returned.

    Args:
        endpoint: Where to log in.
        tls: Use TLS (C{sslmode=require}).
        count: Sessions to open.
        while_open: The measurement; it runs in the event loop's thread,
            with every session idle.
        concurrency: Logins in flight at once.
        progress: Called with the number opened, every 250.

    Raises:
        BenchError: A session failed to open or to answer.
    """
    return asyncio.run(
        _hold(
            endpoint,
            tls,
            count=count,
            concurrency=concurrency,
            while_open=while_open,
            progress=progress,
        )
    )
