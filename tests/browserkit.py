"""Headless-Chromium test kit: open an HTML file or URL, report whether any script ran, save a screenshot.

Uses Debian's `chromium` (/usr/bin/chromium, installed by .ci/run) driven by Playwright with
``executable_path`` (Playwright never downloads a browser here). One browser per test session through the
``browser`` fixture in tests/conftest.py; every ``open()`` gets a fresh, isolated context.

    def test_report_is_inert(browser, tmp_path):
        r = browser.open(tmp_path / "report.html", evaluate="document.querySelectorAll('svg').length",
                         screenshot=tmp_path / "shot.png")
        assert not r.script_ran, r.summary()
        assert r.value > 0

How "a script ran" is seen: the payloads in ``PAYLOADS`` (and any you write) call ``__xss('<id>')`` — a
function the kit exposes in every frame and popup, which records the id — or ``alert``/``confirm``/
``prompt``, whose dialogs are captured and dismissed. ``script_ran`` is true if either happened. The page's
own scripts run normally (so a report can still draw its charts); nothing it does can reach the network:
every request other than file:, data:, blob: and http(s)://127.0.0.1 / localhost is aborted and listed in
``blocked_requests``. Content-Security-Policy violations the page reports are in ``csp_violations``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
MARKER = "__xss"

# Strings that run script if they reach HTML, an attribute, a URL or an inline <script>/JSON unescaped.
# Each calls the kit's marker with its own id, so a failure names the payload that fired.
PAYLOADS: tuple[str, ...] = (
    "<script>__xss('script')</script>",
    "</script><script>__xss('close-script')</script>",
    "\"><img src=x onerror=__xss('img-dq')>",
    "'><img src=x onerror=__xss('img-sq')>",
    "<svg onload=__xss('svg')>",
    "<iframe srcdoc=\"<script>parent.__xss('srcdoc')</script>\"></iframe>",
    "javascript:__xss('js-url')",
    "<a href=\"javascript:__xss('href')\" id=x>x</a><img src=x onerror=document.getElementById('x').click()>",
    "</style><script>__xss('close-style')</script>",
    "--><script>__xss('close-comment')</script>",
    "<details open ontoggle=__xss('details')>",
    "${__xss('template')}",
    "<script>alert('alert')</script>",
    "<!--<script>__xss('open-comment')</script>",  # last: in plain HTML it comments out what follows
)

_INIT = """
(() => {
  document.addEventListener('securitypolicyviolation', (e) => {
    try { console.warn('__AIIRKIT_CSP__ ' + e.violatedDirective + ' ' + (e.blockedURI || '')); } catch (err) {}
  }, true);
})();
"""


def chromium_path() -> str | None:
    """The Chromium binary to use ($AIIR_CHROMIUM, else Debian's), or None if there is none."""
    env = os.environ.get("AIIR_CHROMIUM")
    if env:
        return env if os.access(env, os.X_OK) else None
    for cand in CHROMIUM_CANDIDATES:
        if os.access(cand, os.X_OK):
            return cand
    found = shutil.which("chromium")
    return found


def unavailable_reason() -> str | None:
    """Why the kit cannot run here (None if it can)."""
    if chromium_path() is None:
        return "no Chromium binary (apt-get install -y chromium; .ci/run installs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed (requirements.txt pins it)"
    return None


@dataclass
class PageReport:
    """What happened while a page was open."""

    url: str
    markers: list[str] = field(default_factory=list)          # ids passed to __xss(...)
    dialogs: list[str] = field(default_factory=list)          # "alert: msg", "confirm: msg", ...
    page_errors: list[str] = field(default_factory=list)      # uncaught exceptions in the page
    console: list[str] = field(default_factory=list)          # "level: text"
    csp_violations: list[str] = field(default_factory=list)   # "directive blocked-uri"
    blocked_requests: list[str] = field(default_factory=list)  # requests aborted (off-machine)
    popups: list[str] = field(default_factory=list)           # URLs of windows the page opened
    value: Any = None                                          # result of evaluate=...
    title: str = ""
    text: str = ""                                             # document.body.innerText (first 200 KB)
    screenshot: Path | None = None

    @property
    def script_ran(self) -> bool:
        """True if any injected script ran: a marker call, a dialog, or a popup window."""
        return bool(self.markers or self.dialogs or self.popups)

    def summary(self) -> str:
        return (f"{self.url}: markers={self.markers} dialogs={self.dialogs} popups={self.popups} "
                f"page_errors={self.page_errors[:5]} csp={self.csp_violations[:5]} "
                f"blocked={self.blocked_requests[:5]}")


def _to_url(target: str | os.PathLike) -> str:
    s = os.fspath(target)
    if "://" in s or s.startswith(("about:", "data:")):
        return s
    return Path(s).resolve().as_uri()


def _local(url: str) -> bool:
    p = urlparse(url)
    if p.scheme in ("file", "data", "blob", "about"):
        return True
    return p.scheme in ("http", "https", "ws") and p.hostname in ("127.0.0.1", "localhost", "::1")


class Browser:
    """One headless Chromium. Use as a context manager, or the session-scoped ``browser`` fixture."""

    def __init__(self, *, executable: str | None = None):
        reason = unavailable_reason() if executable is None else None
        if reason:
            raise RuntimeError(f"browserkit: {reason}")
        from playwright.sync_api import sync_playwright

        self._pw_cm = sync_playwright()
        self._pw = self._pw_cm.start()
        try:
            self._browser = self._pw.chromium.launch(
                executable_path=executable or chromium_path(), headless=True,
                args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        except Exception:
            self._pw_cm.__exit__(None, None, None)
            raise

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._browser.close()
        finally:
            self._pw_cm.__exit__(None, None, None)

    def open(self, target: str | os.PathLike, *, evaluate: str | None = None, wait_for: str | None = None,
             settle_ms: int = 600, timeout_ms: int = 30_000, screenshot: str | os.PathLike | None = None,
             full_page: bool = True, viewport: tuple[int, int] = (1280, 900),
             click_all: str | None = None) -> PageReport:
        """Open a file path or URL, let it load and settle, and report what ran.

        evaluate: a JS expression evaluated after settling (its JSON value lands in ``value``);
        wait_for: a CSS selector to wait for (e.g. a chart) before settling; click_all: a CSS selector
        whose matches are all clicked (tabs, expanders) to reach content behind them; screenshot: save a
        PNG there.
        """
        url = _to_url(target)
        rep = PageReport(url=url)
        ctx = self._browser.new_context(viewport={"width": viewport[0], "height": viewport[1]},
                                        java_script_enabled=True, accept_downloads=False)
        try:
            ctx.expose_binding(MARKER, lambda source, *args: rep.markers.append(
                " ".join(str(a) for a in args) or "(no id)"))
            ctx.add_init_script(_INIT)

            def route(r):
                if _local(r.request.url):
                    r.continue_()
                else:
                    rep.blocked_requests.append(r.request.url)
                    r.abort()

            ctx.route("**/*", route)

            def on_console(m):
                text = m.text
                if text.startswith("__AIIRKIT_CSP__ "):
                    rep.csp_violations.append(text[len("__AIIRKIT_CSP__ "):])
                else:
                    rep.console.append(f"{m.type}: {text}")

            def on_dialog(d):
                rep.dialogs.append(f"{d.type}: {d.message}")
                try:
                    d.dismiss()
                except Exception:
                    pass

            page = ctx.new_page()
            ctx.on("page", lambda p: rep.popups.append(p.url or "(popup)") if p is not page else None)
            page.on("console", on_console)
            page.on("pageerror", lambda e: rep.page_errors.append(str(e)))
            page.on("dialog", on_dialog)
            page.goto(url, wait_until="load", timeout=timeout_ms)
            if wait_for:
                page.wait_for_selector(wait_for, timeout=timeout_ms)
            if click_all:
                for el in page.query_selector_all(click_all):
                    try:
                        el.click(timeout=2000)
                    except Exception:
                        pass
            page.wait_for_timeout(settle_ms)
            if evaluate:
                rep.value = page.evaluate(evaluate)
            rep.title = page.title()
            rep.text = page.evaluate("() => (document.body ? document.body.innerText : '').slice(0, 200000)")
            if screenshot is not None:
                rep.screenshot = Path(screenshot)
                page.screenshot(path=str(rep.screenshot), full_page=full_page)
            page.wait_for_timeout(50)  # let late dialog / binding events arrive
        finally:
            ctx.close()
        return rep

    def open_html(self, html: str, **kw) -> PageReport:
        """Write ``html`` to a temporary file and open it (file: origin, like a report on disk)."""
        with tempfile.TemporaryDirectory(prefix="browserkit-") as d:
            p = Path(d) / "page.html"
            p.write_text(html, encoding="utf-8")
            return self.open(p, **kw)


def payload_ids(report: PageReport) -> list[str]:
    """The payload ids that fired (markers plus dialog messages)."""
    return sorted(set(report.markers) | {d.split(": ", 1)[-1] for d in report.dialogs})
