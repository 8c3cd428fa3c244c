"""The browser kit itself: it must see a script that runs, and must not see one that does not."""

from __future__ import annotations

import html

import pytest

from tests.browserkit import PAYLOADS, payload_ids


def test_kit_sees_every_payload_when_it_is_not_escaped(browser):
    # Each payload placed raw in the body or in a <script> string: the kit must report it. This is what
    # makes "no script ran" in the other browser tests mean something.
    body = "".join(f"<div>{p}</div>" for p in PAYLOADS if not p.startswith(("javascript:", "${")))
    r = browser.open_html(f"<!doctype html><html><body>{body}</body></html>")
    fired = payload_ids(r)
    for expected in ("script", "close-script", "img-dq", "img-sq", "svg", "srcdoc", "href", "close-style",
                     "close-comment", "details", "alert"):
        assert expected in fired, (expected, r.summary())
    assert r.script_ran


def test_kit_reports_nothing_for_escaped_payloads(browser, tmp_path):
    body = "".join(f"<div title=\"{html.escape(p)}\">{html.escape(p)}</div>" for p in PAYLOADS)
    shot = tmp_path / "shot.png"
    r = browser.open_html(f"<!doctype html><html><head><title>t</title></head><body>{body}"
                          "<script>document.title = 'own script ran'</script></body></html>",
                          evaluate="document.querySelectorAll('div').length", screenshot=shot)
    assert not r.script_ran, r.summary()
    assert r.value == len(PAYLOADS)
    assert r.title == "own script ran"           # the page's own scripts do run
    assert "<script>__xss('script')</script>" in r.text
    assert shot.stat().st_size > 1000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_kit_blocks_off_machine_requests_and_sees_csp(browser):
    r = browser.open_html(
        "<!doctype html><html><head><meta http-equiv=\"Content-Security-Policy\" content=\"script-src 'none'\">"
        "</head><body><img src=\"https://example.invalid/x.png\"><script>__xss('blocked')</script></body></html>")
    assert not r.script_ran, r.summary()
    assert any("example.invalid" in u for u in r.blocked_requests)
    assert any("script-src" in v for v in r.csp_violations), r.summary()


@pytest.mark.parametrize("payload", ["javascript:__xss('js-url')"])
def test_kit_sees_a_javascript_url_when_followed(browser, payload):
    r = browser.open_html(f"<!doctype html><a id=a href=\"{payload}\">x</a><script>a.click()</script>")
    assert "js-url" in r.markers, r.summary()
