"""The ``GET /metrics`` endpoint, and the count of failed Slack Web API calls behind it.

The metrics themselves are defined in ``relay_plugin.core.metrics``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from relay_plugin.core.metrics import CONTENT_TYPE, RelayMetrics

METRICS_PATH = "/metrics"


def metrics_handler(metrics: RelayMetrics) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Return the aiohttp handler that serves ``metrics`` in the Prometheus text format."""

    async def serve_metrics(request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    return serve_metrics


class SlackErrorCounter(AsyncRetryHandler):
    """Counts failed Slack Web API calls by method and error, and never requests a retry.

    Put it last in a client's ``retry_handlers``. After each attempt slack_sdk 3.48 calls the
    handlers in order and stops at the first that retries, so the last one gets each call's
    final response or exception once. Bolt 1.30 copies the list into the client that it builds
    for each request, so calls made by listeners are counted too.

    NOTE: pages after the first of a paginated call (``async for page in response``) bypass
    the retry handlers, so their failures are not counted.
    """

    def __init__(self, metrics: RelayMetrics) -> None:
        super().__init__(max_retry_count=0)
        self._metrics = metrics

    async def can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        """Count the call when it failed; always return False."""
        failure = _failure_name(response, error)
        if failure is not None:
            self._metrics.slack_api_error(_method_name(request.url), failure)
        return False


def _method_name(url: str) -> str:
    # The client posts to <base URL><method>, e.g. https://slack.com/api/chat.postMessage.
    return urlsplit(url).path.rsplit("/", 1)[-1] or "unknown"


def _failure_name(response: HttpResponse | None, error: Exception | None) -> str | None:
    if error is not None:
        return type(error).__name__
    if response is None:
        return None
    body = response.body
    if isinstance(body, dict) and body.get("ok") is False:
        return str(body.get("error") or f"http_{response.status_code}")
    if response.status_code >= 400:
        return f"http_{response.status_code}"
    return None
