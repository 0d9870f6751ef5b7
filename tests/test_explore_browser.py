"""The explorer in a real browser: Debian's Chromium driven by Playwright (PyPI).

Skips with a reason where Playwright or /usr/bin/chromium is missing (``.ci/run`` installs
both). Screenshots of the main pages go to ``runs/screenshots/`` (not committed; set
HERITAGE_SCREENSHOTS to put them elsewhere) so that a person can look at them.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from heritage.explore import Explorer, ExplorerConfig
from heritage.kg import KnowledgeGraph, read_reviews

CHROMIUM = os.environ.get("HERITAGE_CHROMIUM", "/usr/bin/chromium")
TOKEN = "browser-token"
SHOTS = Path(os.environ.get("HERITAGE_SCREENSHOTS", "runs/screenshots"))

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None and not Path(CHROMIUM).is_file(),
    reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(explorer_copy: dict):
    """The explorer on a free loopback port, in a thread of this process."""
    import uvicorn

    from heritage.explore.app import create_app

    explorer = Explorer.open(
        ExplorerConfig(
            store=explorer_copy["store"], images=(explorer_copy["images"],), curator="Ana García"
        )
    )
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(explorer, TOKEN), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", explorer, explorer_copy
    server.should_exit = True
    thread.join(timeout=10)
    explorer.close()


@pytest.fixture
def page():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        yield tab
        browser.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_search_threshold_review_and_export_in_a_browser(served, page) -> None:
    url, explorer, graph = served
    page.goto(url + "/")
    total = int(page.inner_text("#total"))
    assert total == graph["n"]
    shot(page, "search")

    # free text
    page.fill("input[name=q]", "textile")
    page.click("button[type=submit]")
    page.wait_for_url("**q=textile**")
    assert int(page.inner_text("#total")) == (graph["records"]["text_en"] != "").sum()

    # a facet value, then the threshold slider: predicted counts follow, all in the URL
    page.goto(url + "/")
    page.click("section.facet[data-property=colour] a[data-value=amber]")
    page.wait_for_url("**f=colour**")
    before = page.inner_text("section.facet[data-property=colour] li.selected .count.pred")
    page.eval_on_selector(
        "#threshold",
        "el => { el.value = '0.9'; el.dispatchEvent(new Event('change')); }",
    )
    page.wait_for_url("**t=0.9**")
    after = page.inner_text("section.facet[data-property=colour] li.selected .count.pred")
    assert int(after) <= int(before)
    assert "t=0.9" in page.get_attribute("#permalink", "href")
    shot(page, "facets")

    # an object page: suggestions are labelled; no review form before signing in
    record = graph["ids"][0]
    page.goto(f"{url}/object?id={record}")
    assert page.locator(".badge").first.inner_text().lower() == "machine suggestion"
    assert page.locator("form.review").count() == 0

    # sign in with the start token, accept one prediction and correct another
    page.goto(f"{url}/login?token={TOKEN}")
    page.goto(f"{url}/object?id={record}")
    shot(page, "object")
    page.click("form.review button[value=accepted]")
    page.wait_for_selector(".review-note")
    assert "accepted" in page.inner_text(".review-note")
    second = graph["ids"][1]
    page.goto(f"{url}/object?id={second}")
    page.fill("form.review input[name=value]", "green")
    page.click("form.review button[value=corrected]")
    page.wait_for_selector(".review-note")
    assert "green" in page.inner_text(".review-note")
    shot(page, "reviewed")

    page.goto(url + "/queue")
    assert int(page.inner_text("#left")) == len(graph["gaps"] - {record, second})
    shot(page, "queue")
    page.goto(url + "/?lang=es")
    assert page.inner_text("button[type=submit]") == "Buscar"
    shot(page, "search-es")

    # the decisions are in the review graph and in the export
    explorer.close()
    table = read_reviews(KnowledgeGraph(graph["store"], read_only=True))
    assert sorted(table["decision"]) == ["accepted", "corrected"]
    corrected = table[table["decision"] == "corrected"].iloc[0]
    assert corrected["record"] == second and corrected["value"] == "green"
    assert corrected["reviewer"] == "Ana García"
