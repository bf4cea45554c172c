"""Shutdown completes even when a task survives its first cancellation.

Python 3.11's ``asyncio.wait_for`` returns the inner result instead of raising when the
cancellation lands as that result arrives (a message reaching the ingest queue during
shutdown): the task then keeps running, and a stop that awaited it once would hang.
"""

from __future__ import annotations

import asyncio

from tracker.config import Settings
from tracker.service import Service


async def test_stop_cancels_again_a_task_that_dropped_the_cancellation() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # what wait_for does when its future completed at the same moment

    svc = Service(Settings())
    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    svc._tasks = [task]
    stopping = asyncio.create_task(svc.stop())
    done, _ = await asyncio.wait({stopping}, timeout=5)
    if not done:
        task.cancel()  # let the stuck stop() finish before failing
        await stopping
    assert done, "stop() still waits for a task that dropped its cancellation"
    assert task.cancelled()
    assert swallowed == 1
