"""Run side requests of a probe (OCSP, CRL, ARI) concurrently within what is left of its deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Hashable, Mapping
from typing import Any, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


async def run_within(coros: Mapping[K, Coroutine[Any, Any, T]], budget: float) -> dict[K, T | BaseException | None]:
    """Each key's result, the exception it raised, or None when it had not finished within
    ``budget`` seconds (it is cancelled then). Every task is cancelled and awaited before this
    returns, also when the caller itself is cancelled, so none outlives the probe."""
    tasks = {key: asyncio.ensure_future(coro) for key, coro in coros.items()}
    try:
        if tasks:
            await asyncio.wait(tasks.values(), timeout=budget)
    finally:
        for task in tasks.values():
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
    return {key: None if task.cancelled() else task.exception() or task.result() for key, task in tasks.items()}
