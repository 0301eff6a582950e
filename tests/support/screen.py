"""The operations screen under test: the API served over real HTTP (a browser needs a socket), a
TCP proxy that can cut every connection through it, and Debian's Chromium driven by Playwright
for Python (no browser download: `executable_path`)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from citysense.children import get_local
from citysense.servers import free_port
from tests.support.polling import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """`app` (its lifespan too) on a free loopback port, in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return get_local(f"{base}/health", timeout=2).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 30, what="the API listening")
        yield base
    finally:
        server.should_exit = True
        thread.join(15)


class Proxy:
    """Forwards loopback TCP connections to `target_port`. `cut()` drops every connection and
    holds new ones (unanswered, as behind a failed link) until `restore()`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        self.open.wait()
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        with self._lock:
            self._sockets.update((client, upstream))
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open.clear()
        self.cuts += 1
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.listener.close()
        self.cut()
        self.restore()


@dataclass
class Screen:
    """One browser tab on the screen, and what its console said."""

    page: Page
    base: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL the page asked for

    async def sign_in(self, token: str, query: str = "") -> None:
        await self.page.goto(f"{self.base}/screen{query}")
        await self.page.fill("#token", token)
        await self.page.click("#signin button[type=submit]")
        await self.page.wait_for_function("() => window.citysense?.ready", timeout=20_000)

    async def until(self, expression: str, timeout: float = 5.0) -> None:
        """Until the JavaScript `expression` is true in the page. (Written as a function: the
        page's Content-Security-Policy forbids evaluating strings.)"""
        await self.page.wait_for_function(f"() => ({expression})", timeout=timeout * 1000)

    async def value(self, expression: str) -> Any:
        return await self.page.evaluate(expression)


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


@contextlib.asynccontextmanager
async def screen_tab(
    browser: Browser, base: str, width: int = 1440, height: int = 900
) -> AsyncIterator[Screen]:
    """A fresh context (its own sessionStorage), with every console error and uncaught
    exception recorded."""
    context = await browser.new_context(viewport={"width": width, "height": height})
    page = await context.new_page()
    screen = Screen(page, base)

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            screen.errors.append(f"{message.text} {message.location.get('url', '')}")

    page.on("console", console)
    page.on("pageerror", lambda error: screen.errors.append(f"uncaught: {error}"))
    page.on("request", lambda request: screen.requests.append(request.url))
    try:
        yield screen
    finally:
        await context.close()
