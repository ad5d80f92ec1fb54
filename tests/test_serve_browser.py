"""The web page of `kinema serve`, in a real browser: Debian's chromium driven by Playwright.

Never `playwright install` (it downloads a browser and fails here); CI installs chromium
with apt. The server runs with a token, so this also covers how the page gets it
(/#token=...) and how <video src> and EventSource read results (the cookie it sets).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)", allow_module_level=True)
sync_playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)").sync_playwright
pytest.importorskip("fastapi")

from test_serve import PROMPT, TOKEN, Server  # noqa: E402

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
PLAYING = """() => {
  const v = document.querySelector('#result video');
  return v !== null && v.readyState >= 2 && !v.paused && v.currentTime > 0;
}"""


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("browser") / "data", token=TOKEN) as s:
        yield s


def test_page_makes_a_video_and_plays_it(browser, server):
    page = browser.new_context().new_page()
    problems = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(f"{server.url}/#token={TOKEN}")
    page.wait_for_function("() => document.querySelector('#model').options.length > 0")
    assert TOKEN not in page.url  # read once, then kept out of the address bar and history
    assert page.locator("#login").is_hidden()

    page.fill("#prompt", PROMPT)
    page.click("#go")
    page.wait_for_function(PLAYING, timeout=60_000)
    assert page.locator("#bar").get_attribute("value") == "100"
    assert page.locator("#status").inner_text() == "done"
    page.wait_for_function(f"() => document.querySelector('#gallery').innerText.includes({PROMPT!r})")
    assert not problems, problems

    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        job = client.get("/v1/videos", params={"limit": 1}).json()[0]
    assert job["prompt"] == PROMPT and job["status"] == "done"


def test_page_asks_for_a_token_it_was_not_given(browser, server):
    page = browser.new_context().new_page()  # a fresh context: no cookie, no sessionStorage
    page.goto(server.url)
    page.wait_for_selector("#login", state="visible")
    page.fill("#token-input", TOKEN)
    page.click("#login-form button")
    page.wait_for_function("() => document.querySelector('#model').options.length > 0")
    assert page.locator("#login").is_hidden()
