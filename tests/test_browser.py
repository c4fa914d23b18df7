"""The page in a real browser (Debian's chromium driven by Playwright): what a visitor actually sees.

gradio_client tests the handlers; this tests the page: the upload input, the Predict button, the
bars, the relabel panel and the annotation keyboard shortcuts, and leaves screenshots behind
(in the test's tmp dir, and in ``$SER_TEST_ARTIFACTS`` when set) for a person to look at.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ser.ui import AppConfig
from tests.app_server import running_app, tone
from tests.tiny_models import LABELS, save_tiny_wav2vec2

CHROMIUM = os.environ.get("SER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic",
]
TIMEOUT_MS = 30_000
ADMIN_TOKEN = "browser-admin-token"


def require_browser() -> None:
    if Path(CHROMIUM).is_file():
        return
    reason = f"chromium not found at {CHROMIUM} (apt-get install chromium, or set SER_CHROMIUM)"
    if os.environ.get("SER_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + "; SER_REQUIRE_BROWSER=1 says this run must test the page")
    pytest.skip(reason)


@contextmanager
def chromium() -> Iterator[Any]:
    """Debian's headless chromium driven by Playwright (no browser download), closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    require_browser()
    root = tmp_path_factory.mktemp("browser")
    model = save_tiny_wav2vec2(root / "tiny-browser", LABELS)
    queue = root / "queue"
    queue.mkdir()
    for index in range(2):
        tone(queue / f"clip{index}.wav", 1.0, 300 + 150 * index)
    config = AppConfig(model=str(model), store=root / "store", data_roots=(root,), admin_token=ADMIN_TOKEN)
    with running_app(config) as (app, url):
        yield app, url, root


@pytest.fixture(scope="module")
def page(served, tmp_path_factory: pytest.TempPathFactory):
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh user-data-dir
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 1000},
        )
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.goto(served[1])
        page.wait_for_selector("#demo-predict")
        yield page
        context.close()


def screenshot(page, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    artifacts = os.environ.get("SER_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(artifacts) / name)
    return path


def text_box(page, elem_id: str):
    return page.locator(f"#{elem_id} textarea, #{elem_id} input").first


def test_upload_predict_and_correct(page, served, tmp_path: Path) -> None:
    app, _, root = served
    clip = tone(root / "visitor.wav", 7.0, 250)  # two windows or more: the timeline shows too
    page.locator("#demo-audio").get_by_role("button", name="Upload file").click()  # the microphone is shown first
    page.locator("#demo-audio input[type=file]").set_input_files(str(clip))
    page.locator("#demo-predict").click()
    bars = page.locator("#demo-bars")
    for label in LABELS:
        bars.get_by_text(label, exact=True).first.wait_for()
    page.locator("#demo-timeline").wait_for(state="visible")

    page.locator("#relabel-choice").get_by_text("angry", exact=True).click()
    text_box(page, "relabel-annotator").fill("dora")
    page.locator("#relabel-consent input[type=checkbox]").check()  # agrees to keeping the recording
    page.locator("#relabel-save").click()
    page.locator("#relabel-status").get_by_text("dora, you have saved").wait_for()
    assert screenshot(page, tmp_path, "demo-tab.png").stat().st_size > 10_000

    store = app.ser_context.store
    (votes,) = [by for by in store.votes().values() if "dora" in by]
    assert votes["dora"][1] == "angry"


def test_annotate_with_the_keyboard(page, served, tmp_path: Path) -> None:
    app, _, root = served
    page.get_by_role("tab", name="Annotate").click()
    page.locator("#admin-token input").fill(ADMIN_TOKEN)  # server folders are for admins only
    page.get_by_text("Load clips into a queue").click()
    text_box(page, "queue-source").fill(str(root / "queue"))
    page.locator("#queue-load").click()
    page.locator("#queue-status").get_by_text("Added").wait_for()

    text_box(page, "annotate-annotator").fill("erin")
    page.locator("#annotate-next").click()
    page.locator("#annotate-info").get_by_text("Clip").wait_for()
    page.locator("body").click(position={"x": 5, "y": 5})  # focus the page, not a text box
    page.keyboard.press("2")  # the second emotion
    page.keyboard.press("Enter")
    page.locator("#annotate-status").get_by_text(f"Saved {LABELS[1]}").wait_for()
    screenshot(page, tmp_path, "annotate-tab.png")
    assert app.ser_context.store.count_labels("erin") == 1

    page.keyboard.press("u")
    page.locator("#annotate-status").get_by_text("Undid your last label").wait_for()
    assert app.ser_context.store.count_labels("erin") == 0
