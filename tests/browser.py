"""Headless Chromium from Debian's package, driven by Playwright, for the studio's tests.

Never `playwright install`: it downloads a browser, which cannot work here. A missing browser fails
the tests (scripts/test installs it), it does not skip them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
VIEWPORT = {"width": 1280, "height": 900}
SCREENSHOTS = Path(os.environ.get("JOURNEYD_SCREENSHOTS", "test-screenshots"))  # looked at by people


def chromium_path() -> str:
    path = os.environ.get("JOURNEYD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise RuntimeError(
            "no Chromium found: apt-get install chromium (scripts/test does it), or set JOURNEYD_CHROMIUM"
        )
    return path


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def studio_page(browser: Browser, url: str) -> Iterator[Page]:
    """A fresh page (its own storage) at the studio; JavaScript errors fail the test."""
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url + "/")
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"the page raised: {errors}"


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
