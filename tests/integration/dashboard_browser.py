"""Headless Chromium for the dashboard tests: Debian's ``chromium`` driven by Playwright.

Playwright's own browser download cannot work here, so the browser is the system's
(``.ci/run`` installs it when missing). Screenshots go under the test's temporary folder, and
also into ``$FTQ_DASHBOARD_SCREENSHOTS`` when set (how docs/screenshots/ is refreshed).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("no Chromium on PATH: `apt-get install -y chromium` (.ci/run does it)")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(),
            headless=True,
            # Root in a container: Chromium's own sandbox needs user namespaces it lacks.
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    context.set_default_timeout(20_000)
    opened = context.new_page()
    try:
        yield opened
    finally:
        context.close()


def sign_in(page: Any, api_url: str, key: str, start: str = "/dashboard/jobs") -> Any:
    answer = page.goto(api_url + start)
    assert answer is not None and answer.status == 401  # the sign-in page, not a redirect loop
    page.fill("#api_key", key)
    page.click("#sign-in button[type=submit]")
    page.wait_for_load_state()
    return page


def screenshot(page: Any, folder: Path, name: str) -> Path:
    target = folder / f"{name}.png"
    page.screenshot(path=str(target), full_page=True)
    published = os.environ.get("FTQ_DASHBOARD_SCREENSHOTS")
    if published:
        Path(published).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(target, Path(published) / target.name)
    return target
