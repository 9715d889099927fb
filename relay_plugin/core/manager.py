"""RelayManager: bindings in, RelayResponses out, through breakers and the sender."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from relay_plugin.core.breakers import BreakerRegistry, BreakerSnapshot
from relay_plugin.core.endpoints import endpoint_key
from relay_plugin.core.guard import TargetGuard
from relay_plugin.core.limits import EndpointGate
from relay_plugin.core.metrics import (
    ACCEPTED,
    CANCELLED,
    COMPLETED,
    FAILED,
    REFUSED,
    RelayMetrics,
    outcome_of,
)
from relay_plugin.core.protocol import RelayMessage, RelayResponse, TaskStatus
from relay_plugin.core.sender import RelaySender, RetryWait
from relay_plugin.core.store import BindingStore, BotBinding
from relay_plugin.errors import (
    BotNotBoundError,
    CircuitOpenError,
    EndpointBusyError,
    RelayError,
    RemoteTaskError,
    TargetBlockedError,
)
from relay_plugin.logs import relay_log_context

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RelayOutcome:
    """A completed relay: the remote's answer and what it took to get it."""

    response: RelayResponse
    binding: BotBinding
    task_id: str
    attempts: int
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class EndpointStats:
    """Results of the last relays to one endpoint, for status output."""

    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_error: str = ""
    last_latency_s: float | None = None


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """One bound bot's endpoint: its breaker and its recent results."""

    binding: BotBinding
    breaker: BreakerSnapshot
    stats: EndpointStats


class RelayManager:
    """Manage bindings and deliver relay messages to bound bots.

    Store writes run in a worker thread because SQLite syncs to disk on every commit; reads are
    indexed lookups and run inline.
    """

    def __init__(
        self,
        store: BindingStore,
        sender: RelaySender,
        breakers: BreakerRegistry,
        *,
        instance_name: str,
        gate: EndpointGate | None = None,
        guard: TargetGuard | None = None,
        metrics: RelayMetrics | None = None,
    ) -> None:
        self._store = store
        self._sender = sender
        self._breakers = breakers
        self._gate = gate or EndpointGate(concurrency=8, queue=100)
        self._instance_name = instance_name
        self._guard = guard
        self._metrics = metrics
        self._stats: dict[str, EndpointStats] = {}

    @property
    def instance_name(self) -> str:
        """The RelayMessage ``from`` of every relay."""
        return self._instance_name

    async def add_binding(self, binding: BotBinding) -> BotBinding:
        """Store a binding (replacing one of the same bot in that channel) and return it.

        With a guard, the URL's host must resolve to an allowed address first, or
        InvalidBindingError (TargetNotAllowedError for a disallowed address) is raised.
        """
        if self._guard is not None:
            await self._guard.resolve_url(binding.url)
        stored = await asyncio.to_thread(self._store.put, binding)
        log.info(
            "bound bot=%s team=%s channel=%s endpoint=%s by=%s",
            stored.bot, stored.team_id, stored.channel_id, endpoint_key(stored.url),
            stored.created_by,
        )  # fmt: skip
        return stored

    async def remove_binding(self, team_id: str, channel_id: str, bot: str) -> bool:
        """Remove a binding; returns whether one existed."""
        removed = await asyncio.to_thread(self._store.remove, team_id, channel_id, bot)
        if removed:
            log.info("unbound bot=%s team=%s channel=%s", bot, team_id, channel_id)
        return removed

    def list_bindings(self, team_id: str, channel_id: str) -> list[BotBinding]:
        """Return the bots bound in a channel, sorted by name."""
        return self._store.channel(team_id, channel_id)

    def existing(self, team_id: str, channel_id: str, bot: str) -> BotBinding | None:
        """Return one binding, or None when the bot is not bound in that channel."""
        return self._store.get(team_id, channel_id, bot)

    def find(self, team_id: str, channel_id: str, bot: str) -> BotBinding:
        """Return one binding; BotNotBoundError lists the bots that are bound there."""
        binding = self._store.get(team_id, channel_id, bot)
        if binding is None:
            bound = [b.bot for b in self._store.channel(team_id, channel_id)]
            raise BotNotBoundError(bot, channel_id, bound)
        return binding

    def status(self, binding: BotBinding) -> EndpointStatus:
        """Return the breaker state and recent results of a binding's endpoint."""
        key = endpoint_key(binding.url)
        return EndpointStatus(
            binding=binding,
            breaker=self._breakers.snapshot(binding.url),
            stats=self._stats.get(key, EndpointStats()),
        )

    async def send(
        self,
        team_id: str,
        channel_id: str,
        bot: str,
        content: str,
        session_key: str,
        metadata: str,
        *,
        task_id: str | None = None,
        on_wait: Callable[[RetryWait], object] | None = None,
    ) -> RelayOutcome:
        """Relay ``content`` to a bound bot and return its answer.

        Raises BotNotBoundError, CircuitOpenError, EndpointBusyError, TargetBlockedError,
        RemoteTimeoutError, RemoteUnreachableError, RemoteHTTPError, BadAnswerError, or
        RemoteTaskError when the remote reports a failed task.
        Every log record of the relay carries its task id, channel and bot.
        """
        task_id = task_id or str(uuid.uuid4())
        with relay_log_context(task_id=task_id, channel=channel_id, bot=bot):
            return await self._send(
                team_id, channel_id, bot, content, session_key, metadata, task_id, on_wait
            )

    def count_refused(self, bot: str) -> None:
        """Count a relay to ``bot`` that a fair-use limit stopped before it reached send()."""
        if self._metrics is not None:
            self._metrics.relay_finished(bot, REFUSED, attempts=0, elapsed_s=None)

    async def _send(
        self,
        team_id: str,
        channel_id: str,
        bot: str,
        content: str,
        session_key: str,
        metadata: str,
        task_id: str,
        on_wait: Callable[[RetryWait], object] | None,
    ) -> RelayOutcome:
        binding = self.find(team_id, channel_id, bot)
        message = RelayMessage(
            task_id=task_id,
            from_=self._instance_name,
            to=bot,
            content=content,
            session_key=session_key,
            metadata=metadata,
            created_at=datetime.now(timezone.utc),
        )
        key = endpoint_key(binding.url)
        started = time.monotonic()
        try:
            # A relay waits for an endpoint slot first, so the breaker is checked when its turn
            # comes, and a refusal for a full queue is not counted as an endpoint failure.
            async with self._gate.slot(key):
                result = await self._breakers.call(
                    binding.url,
                    lambda: self._sender.send(
                        message, binding.url, token=binding.token, dedupe=binding.dedupe,
                        on_wait=on_wait,
                    ),  # fmt: skip
                )
        except RelayError as exc:
            # Refusals that sent nothing say nothing new about the endpoint's health.
            if not isinstance(exc, (CircuitOpenError, EndpointBusyError, TargetBlockedError)):
                self._record(key, error=exc.user_message)
            self._count(bot, outcome_of(exc), exc.attempts, started)
            log.info(
                "relay failed bot=%s channel=%s task=%s error=%s attempts=%d elapsed=%.3fs",
                bot, channel_id, message.task_id, type(exc).__name__, exc.attempts,
                time.monotonic() - started,
            )  # fmt: skip
            raise
        except asyncio.CancelledError:
            self._count(bot, CANCELLED, 0, started)
            raise
        self._record(key, latency_s=result.elapsed_s)
        if result.response.failed:
            outcome = FAILED
        elif result.response.status == TaskStatus.WORKING:
            outcome = ACCEPTED  # the remote reports the result later, through the callback
        else:
            outcome = COMPLETED
        self._count(bot, outcome, result.attempts, started)
        log.info(
            "relay done bot=%s channel=%s task=%s status=%s attempts=%d elapsed=%.3fs",
            bot, channel_id, message.task_id, result.response.status, result.attempts,
            result.elapsed_s,
        )  # fmt: skip
        if result.response.failed:
            raise RemoteTaskError(
                f"the task failed: {result.response.error or 'no reason given'}",
                url=key,
                attempts=result.attempts,
            )
        return RelayOutcome(
            response=result.response,
            binding=binding,
            task_id=message.task_id,
            attempts=result.attempts,
            elapsed_s=result.elapsed_s,
        )

    def _count(self, bot: str, outcome: str, attempts: int, started: float) -> None:
        if self._metrics is not None:
            elapsed_s = time.monotonic() - started
            self._metrics.relay_finished(bot, outcome, attempts=attempts, elapsed_s=elapsed_s)

    async def cancel(self, binding: BotBinding, task_id: str) -> bool:
        """Tell the remote that a task is canceled: one attempt, outside the breaker.

        Returns whether the remote accepted the notice; a failure is logged, not raised,
        because the task is canceled on this side either way.
        """
        message = RelayMessage(
            task_id=task_id,
            from_=self._instance_name,
            to=binding.bot,
            content="",
            status=TaskStatus.CANCELED,
            created_at=datetime.now(timezone.utc),
        )
        try:
            await self._sender.send(message, binding.url, token=binding.token, retries=False)
        except RelayError as exc:
            log.warning("cancel notice failed bot=%s channel=%s task=%s error=%s",
                        binding.bot, binding.channel_id, task_id, exc)  # fmt: skip
            return False
        log.info("cancel notice sent bot=%s channel=%s task=%s",
                 binding.bot, binding.channel_id, task_id)  # fmt: skip
        return True

    def _record(self, key: str, *, latency_s: float | None = None, error: str = "") -> None:
        now = datetime.now(timezone.utc)
        stats = self._stats.get(key, EndpointStats())
        if error:
            stats = replace(stats, last_failure_at=now, last_error=error)
        else:
            stats = replace(stats, last_success_at=now, last_latency_s=latency_s)
        self._stats[key] = stats
