"""Runs after the browser modules (name order): once their Chromium is closed, asyncio.run() works again —
the end-to-end tests' traffic replayer needs it. With a session-scoped browser this failed."""

import asyncio


def test_asyncio_run_works_after_a_browser_module():
    assert asyncio.run(asyncio.sleep(0, result=7)) == 7
