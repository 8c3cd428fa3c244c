"""Browser fixtures for the console tests: Debian's headless Chromium driven by Playwright.

``chromium`` is a session-wide browser; ``page_factory`` gives fresh isolated contexts that record any
script an XSS payload manages to run (payloads call ``__xss(id)``; dialogs are recorded too) and refuse
every request that would leave the machine. Screenshots go to ``$AIIR_TEST_ARTIFACTS`` (default
``tests/.artifacts``, git-ignored), one sub-folder per test module.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

ARTIFACTS = Path(os.environ.get("AIIR_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / ".artifacts")


def chromium_path() -> str | None:
    for cand in (os.environ.get("AIIR_CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser",
                 shutil.which("chromium")):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def launch_chromium():
    """Debian's headless Chromium through Playwright's sync API (a generator: yields the browser, then stops)."""
    exe = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        exe = None
    if exe is None:
        reason = "no Chromium binary or playwright package (apt-get install chromium; requirements.txt pins playwright)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def chromium():
    """Module-scoped on purpose: Playwright's sync API keeps an event loop running in this thread, so it
    starts after the module's world (whose traffic replay uses asyncio.run) and stops with the module."""
    yield from launch_chromium()


class Recorder:
    def __init__(self) -> None:
        self.markers: list[str] = []
        self.dialogs: list[str] = []
        self.blocked: list[str] = []
        self.errors: list[str] = []

    @property
    def script_ran(self) -> bool:
        return bool(self.markers or self.dialogs)


@pytest.fixture
def page_factory(chromium):
    contexts = []

    def make(*, viewport=(1400, 1000), extra_headers: dict[str, str] | None = None):
        rec = Recorder()
        ctx = chromium.new_context(viewport={"width": viewport[0], "height": viewport[1]},
                                   extra_http_headers=extra_headers or {})
        contexts.append(ctx)
        ctx.expose_binding("__xss", lambda source, *a: rec.markers.append(" ".join(map(str, a)) or "?"))

        def route(r):
            host = urlparse(r.request.url).hostname
            if urlparse(r.request.url).scheme in ("data", "blob", "about") or host in ("127.0.0.1", "localhost"):
                r.continue_()
            else:
                rec.blocked.append(r.request.url)
                r.abort()

        ctx.route("**/*", route)
        page = ctx.new_page()
        page.on("dialog", lambda d: (rec.dialogs.append(f"{d.type}: {d.message}"), d.dismiss()))
        page.on("pageerror", lambda e: rec.errors.append(str(e)))
        return page, rec

    yield make
    for ctx in contexts:
        ctx.close()


@pytest.fixture(scope="module")
def artifacts(request) -> Path:
    d = ARTIFACTS / request.module.__name__.rsplit(".", 1)[-1]
    d.mkdir(parents=True, exist_ok=True)
    return d
