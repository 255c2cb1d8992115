"""Fixtures of the real-browser tests (helpers in browser_support.py): a Chromium driven by
Playwright, a page per test with a screenshot saved when the test fails."""

from __future__ import annotations

import sys

import pytest

from browser_support import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, browser_missing


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


# Module scope, not session: Playwright's sync API keeps an asyncio loop running in this thread
# until it is stopped, and later test modules (Dagster's in-process runs) call asyncio.run().
@pytest.fixture(scope="module")
def chromium():
    missing = browser_missing()
    if missing:
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium, request):
    context = chromium.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / f"{request.node.name}.png"
        try:
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}", file=sys.stderr)
        except Exception as exc:  # the page may be gone
            print(f"no screenshot: {exc}", file=sys.stderr)
    context.close()
