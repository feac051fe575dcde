"""Real Chromium (Debian's ``chromium``, driven by Playwright) for the browser tests.

Never ``playwright install``: the browser is the system one (``.ci/run`` installs the
``chromium`` package). Without it the tests fail under CI (``CI=true``) and skip locally.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def _require_chromium() -> None:
    missing = [] if Path(CHROMIUM).exists() else [CHROMIUM]
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:  # pragma: no cover - the test extra installs it
        missing.append("the playwright package")
    if missing:
        message = f"browser tests need {', '.join(missing)} (apt-get install chromium; pip install -e '.[test]')"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message)
        pytest.skip(message)


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[object]:
    _require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def artifacts() -> Path:
    """Where screenshots go (``tests/artifacts/``, ignored by git, kept by CI)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
