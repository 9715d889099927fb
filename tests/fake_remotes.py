"""Misbehaving relay receivers on 127.0.0.1, for fault tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

BIG_ANSWER_CHARS = 2 * 1024 * 1024


async def _html(request: web.Request) -> web.Response:
    return web.Response(text="<html><body><h1>502 Bad Gateway</h1></body></html>",
                        content_type="text/html")  # fmt: skip


async def _garbage(request: web.Request) -> web.Response:
    return web.Response(body=b"\x00\xff garbage {not json", content_type="application/json")


async def _empty(request: web.Request) -> web.Response:
    return web.Response(body=b"", content_type="application/json")


async def _wrong_types(request: web.Request) -> web.Response:
    return web.json_response({"task_id": 7, "status": ["completed"]})


async def _big(request: web.Request) -> web.Response:
    body = {"task_id": "t", "status": "completed", "content": "x" * BIG_ANSWER_CHARS,
            "timestamp": "2026-01-01T00:00:00Z", "duration": 0}  # fmt: skip
    return web.Response(body=json.dumps(body).encode(), content_type="application/json")


@asynccontextmanager
async def bad_remote() -> AsyncIterator[str]:
    """Serve /html, /garbage, /empty, /wrong-types and /big; yield the base URL."""
    app = web.Application()
    for path, handler in (("/html", _html), ("/garbage", _garbage), ("/empty", _empty),
                          ("/wrong-types", _wrong_types), ("/big", _big)):  # fmt: skip
        app.router.add_post(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def silent_remote() -> AsyncIterator[str]:
    """Accept connections, read the request, never answer; yield the base URL."""
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()
