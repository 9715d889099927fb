"""Relays whose remote answered 202 and will report through the callback: kept in the store.

They survive a restart, and each is taken exactly once: by its callback, by a cancel, or by
the sweep that times it out.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from relay_plugin.core.store import BindingStore

_COLUMNS = "task_id, team_id, channel_id, thread_ts, working_ts, bot, user_id, started_at, expires_at"


@dataclass(frozen=True, slots=True)
class PendingTask:
    """A relay waiting for its remote's report; times are Unix seconds."""

    task_id: str
    team_id: str
    channel_id: str
    thread_ts: str
    working_ts: str
    bot: str
    user_id: str
    started_at: float
    expires_at: float


class PendingTasks:
    """The ``pending_tasks`` table of a BindingStore; every method runs in a worker thread."""

    def __init__(self, store: BindingStore) -> None:
        self._store = store

    async def add(self, task: PendingTask) -> None:
        """Record a pending task (replacing one with the same id)."""
        await asyncio.to_thread(self._add, task)

    async def get(self, task_id: str) -> PendingTask | None:
        """Return a pending task without taking it."""
        rows = await asyncio.to_thread(
            self._store.read, f"SELECT {_COLUMNS} FROM pending_tasks WHERE task_id = ?", (task_id,)
        )
        return PendingTask(*rows[0]) if rows else None

    async def take(self, task_id: str) -> PendingTask | None:
        """Remove and return a pending task; None when another caller took it first."""
        return await asyncio.to_thread(self._take, task_id)

    async def take_expired(self, now: float | None = None) -> list[PendingTask]:
        """Remove and return every task whose deadline has passed."""
        return await asyncio.to_thread(self._take_expired, time.time() if now is None else now)

    async def count(self) -> int:
        """Return how many tasks are pending."""
        rows = await asyncio.to_thread(self._store.read, "SELECT COUNT(*) FROM pending_tasks", ())
        return int(rows[0][0])

    def _add(self, task: PendingTask) -> None:
        with self._store.write("add pending task") as conn:
            conn.execute(
                f"INSERT OR REPLACE INTO pending_tasks ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)",
                (task.task_id, task.team_id, task.channel_id, task.thread_ts, task.working_ts,
                 task.bot, task.user_id, task.started_at, task.expires_at),
            )  # fmt: skip

    def _take(self, task_id: str) -> PendingTask | None:
        with self._store.write("take pending task") as conn:
            row = conn.execute(
                f"DELETE FROM pending_tasks WHERE task_id = ? RETURNING {_COLUMNS}", (task_id,)
            ).fetchone()
        return PendingTask(*row) if row else None

    def _take_expired(self, now: float) -> list[PendingTask]:
        with self._store.write("take expired pending tasks") as conn:
            rows = conn.execute(
                f"DELETE FROM pending_tasks WHERE expires_at <= ? RETURNING {_COLUMNS}", (now,)
            ).fetchall()
        return [PendingTask(*row) for row in rows]
