"""Debian's Chromium driven by Playwright for Python (no browser download), signed in to the
screen as a person would: the token typed into the form."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    """A browser with a fresh profile (Playwright gives each launch its own user-data-dir)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def signed_in(
    browser: Browser, base: str, token: str, query: str = "", size: tuple[int, int] = (1440, 900)
) -> Page:
    """A new tab on the screen, signed in, its first state drawn."""
    context = browser.new_context(viewport={"width": size[0], "height": size[1]})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{base}/screen{query}")
    page.fill("#token", token)
    page.click("#signin button[type=submit]")
    page.wait_for_function("() => window.citysense?.ready", timeout=120_000)
    if errors:
        raise RuntimeError(f"the page logged errors: {errors}")
    return page
