"""run_within: results, exceptions and what did not finish in time, and nothing left running."""

import asyncio

import pytest

from ssl_exporter.within import run_within


async def test_results_exceptions_and_late_tasks() -> None:
    release = asyncio.Event()
    finished: list[str] = []

    async def answer() -> str:
        return "ok"

    async def crash() -> str:
        raise ValueError("bad answer")

    async def late() -> str:
        await release.wait()  # never set: only the budget ends it
        finished.append("late")
        return "too late"

    outcomes = await run_within({"a": answer(), "b": crash(), "c": late()}, budget=0.05)
    assert outcomes["a"] == "ok"
    assert isinstance(outcomes["b"], ValueError) and str(outcomes["b"]) == "bad answer"
    assert outcomes["c"] is None and finished == []


async def test_cancelling_the_caller_cancels_every_task() -> None:
    started, cancelled = asyncio.Event(), []

    async def slow() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    caller = asyncio.ensure_future(run_within({1: slow()}, budget=60))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert cancelled == [True]
