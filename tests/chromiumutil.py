"""Debian's Chromium driven by Playwright, as the dashboard tests use it: the binary, its
flags, the UI timeout, where screenshots are kept (CI keeps them as artefacts), and
:func:`launch` (the ``browser`` fixture of the page tests)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from conftest import REPO

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SCREENSHOTS = REPO / "artifacts" / "screenshots"
UI_TIMEOUT_MS = 20_000


def launch() -> Iterator[Any]:
    """A headless Chromium for a module's tests (``yield from`` it in a fixture)."""
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_TIMEOUT_MS)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def login(page: Any, base_url: str, token: str) -> None:
    """Log ``page`` in to the dashboard at ``base_url`` with ``token`` (lands on /ui/)."""
    page.set_default_timeout(UI_TIMEOUT_MS)
    page.goto(f"{base_url}/ui/login")
    page.fill("#token", token)
    page.click("#login-submit")
    page.wait_for_url(f"{base_url}/ui/")
