"""Background work that shutdown can wait for."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)


class TaskTracker:
    """Keep references to background tasks so that shutdown can await them.

    asyncio keeps only weak references to tasks, and Bolt starts listener tasks without keeping
    one, so work that must finish (a relay whose answer belongs in a Slack thread) runs here.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def closed(self) -> bool:
        """Whether shutdown has begun; no new work is accepted then."""
        return self._closed

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Start ``coro`` as a tracked task; raises RuntimeError once shutdown has begun."""
        if self._closed:
            coro.close()
            raise RuntimeError("shutting down: no new background work is accepted")
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def drain(self, grace_s: float) -> int:
        """Stop accepting work, wait up to ``grace_s`` for running tasks, cancel the rest.

        Returns the number of tasks that had to be cancelled.
        """
        self._closed = True
        pending = set(self._tasks)
        if not pending:
            return 0
        log.info("waiting up to %.0f s for %d relay(s) in flight", grace_s, len(pending))
        _, still_running = await asyncio.wait(pending, timeout=grace_s)
        for task in still_running:
            task.cancel()
        if still_running:
            await asyncio.wait(still_running)
        return len(still_running)
