"""The Demo and Models tabs in a real browser (Debian's chromium through Playwright).

What only the page shows: a note that must not carry over to the next clip, a double click on
Save, error pills left over the outputs after a refused request, page state read on load (not
frozen at start-up), and the phone layout (bars above the fold, a legend that keeps every
emotion). Screenshots go to the test's tmp dir (and ``$SER_TEST_ARTIFACTS`` when set).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ser.ui import AppConfig
from tests.app_server import running_app, tone
from tests.test_browser import TIMEOUT_MS, chromium, require_browser, screenshot, text_box
from tests.tiny_models import save_tiny_wav2vec2

# Eight emotions: enough that the plot's own one-row legend cannot fit them on a phone.
EIGHT = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1400, "height": 900}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    require_browser()
    root = tmp_path_factory.mktemp("browser-pages")
    model = save_tiny_wav2vec2(root / "tiny-eight", EIGHT)
    config = AppConfig(model=str(model), store=root / "store")
    with running_app(config) as (app, url):
        yield app, url, root


@pytest.fixture(scope="module")
def browser(served):
    with chromium() as launched:
        yield launched


def open_page(browser, url: str, viewport: dict | None = None):
    page = browser.new_page(viewport=viewport or {"width": 1280, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#demo-predict")
    return page


def upload(page, clip: Path) -> None:
    """Put a clip in the Demo's audio box (clearing the one there) and wait for its prediction."""
    audio = page.locator("#demo-audio")
    clear = audio.get_by_role("button", name="Clear")
    if clear.count():
        clear.first.click()
    # No clip, no pick (a new clip clears it); only its prediction picks the model's guess again.
    page.wait_for_function("() => !document.querySelector('#relabel-choice input[type=radio]:checked')")
    audio.get_by_role("button", name="Upload file").click()  # the microphone is shown first
    audio.locator("input[type=file]").set_input_files(str(clip))
    page.locator("#relabel-choice input[type=radio]:checked").wait_for()  # predicted: the guess is picked


def labels_of(store, name: str) -> list[dict]:
    return [label for sha in store.votes() for label in store.labels_for(sha) if label["annotator"] == name]


def wait_for_rows(store, name: str, count: int, settle_s: float = 2.0) -> list[dict]:
    """The annotator's rows once ``count`` are there and nothing more arrives for ``settle_s``."""
    deadline = time.monotonic() + TIMEOUT_MS / 1000
    while len(labels_of(store, name)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(settle_s)
    return labels_of(store, name)


def test_the_note_does_not_carry_over_to_the_next_clip(browser, served, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    app, url, root = served
    page = open_page(browser, url)
    upload(page, tone(root / "first.wav", 1.5, 310))
    text_box(page, "relabel-note").fill("laughing at the end")
    text_box(page, "relabel-annotator").fill("hana")
    page.locator("#relabel-consent input[type=checkbox]").check()
    page.locator("#relabel-save").click()
    page.locator("#relabel-status").get_by_text("hana, you have saved").wait_for()

    audio = page.locator("#demo-audio")
    audio.get_by_role("button", name="Clear").first.click()  # the clip is gone: so are its note and pick
    expect(text_box(page, "relabel-note")).to_have_value("", timeout=5000)
    page.wait_for_function("() => !document.querySelector('#relabel-choice input[type=radio]:checked')")
    upload(page, tone(root / "second.wav", 1.5, 420))
    assert text_box(page, "relabel-note").input_value() == ""
    assert page.locator("#relabel-status").inner_text().strip() == ""  # the first clip's message is gone
    page.locator("#relabel-save").click()
    page.locator("#relabel-status").get_by_text("hana, you have saved **2**".replace("**", "")).wait_for()
    notes = {app.ser_context.store.clip_info(row["sha256"])["source"]: row["note"] for row in labels_of(
        app.ser_context.store, "hana")}
    assert notes == {"first.wav": "laughing at the end", "second.wav": ""}
    page.close()


def test_a_double_click_on_save_stores_one_row(browser, served, tmp_path: Path) -> None:
    app, url, root = served
    page = open_page(browser, url, LAPTOP)
    upload(page, tone(root / "double.wav", 1.5, 530))
    text_box(page, "relabel-annotator").fill("ivan")
    page.locator("#relabel-consent input[type=checkbox]").check()
    page.locator("#relabel-save").dblclick()
    page.locator("#relabel-status").get_by_text("ivan, you have saved").wait_for()
    page.locator("#relabel-save").click()  # and once more after the answer
    assert len(wait_for_rows(app.ser_context.store, "ivan", 1)) == 1
    page.locator("#relabel-status").get_by_text("Already saved").wait_for()
    assert "**" not in page.locator("#relabel-status").inner_text()
    for elem_id in ("relabel-save", "relabel-status"):  # the Save button and its answer, without scrolling
        box = page.locator(f"#{elem_id}").bounding_box()
        assert box["y"] + box["height"] <= LAPTOP["height"], elem_id
    page.close()


def visible_error_pills(page, elem_id: str) -> int:
    pills = page.locator(f"#{elem_id} .error")
    return sum(1 for index in range(pills.count()) if pills.nth(index).is_visible())


def test_a_refused_request_leaves_no_empty_error_pill(browser, served, tmp_path: Path) -> None:
    app, url, root = served
    page = open_page(browser, url)
    page.locator("#demo-predict").click()  # no audio yet: refused with a message
    toast = page.get_by_test_id("toast-body").filter(has_text="Record or upload some speech first")
    toast.first.wait_for()
    page.locator("#relabel-save").click()  # no name: refused too
    page.get_by_test_id("toast-body").filter(has_text="Annotator").first.wait_for()
    deadline = time.monotonic() + 10
    outputs = ("demo-bars", "relabel-choice", "model-info", "relabel-status")
    while any(visible_error_pills(page, elem) for elem in outputs) and time.monotonic() < deadline:
        time.sleep(0.2)
    screenshot(page, tmp_path, "refused-request.png")
    assert {elem: visible_error_pills(page, elem) for elem in outputs} == dict.fromkeys(outputs, 0)
    page.close()


def test_a_reload_shows_the_serving_model_and_every_version(browser, served, tmp_path: Path) -> None:
    app, url, root = served
    context = app.ser_context
    first = context.predictor.version
    page = open_page(browser, url)
    page.locator("#model-info").get_by_text(first).first.wait_for()

    newer = save_tiny_wav2vec2(root / "tiny-newer", EIGHT[:4], seed=3)  # a retrain elsewhere registered it
    context.store.register_model("tiny-newer", str(newer), {})
    context.switch_model("tiny-newer")
    try:
        page.reload()
        page.wait_for_selector("#demo-predict")
        page.locator("#model-info").get_by_text("tiny-newer").first.wait_for()
        radios = page.locator("#relabel-choice input[type=radio]")
        assert radios.count() == 4  # the serving model's emotions, not the start-up model's eight
        page.get_by_role("tab", name="Models").click()
        table = page.locator("#models-table")
        table.get_by_text("tiny-newer").first.wait_for()
        assert "tiny-newer" in page.locator("#models-version input").input_value()
        page.locator("#models-version input").click()
        options = page.get_by_role("option")
        options.first.wait_for()
        listed = {line.strip() for text in options.all_inner_texts() for line in text.splitlines()}
        assert {first, "tiny-newer"} <= listed
        assert "No base corpus is configured" in page.locator("#models-corpus-note").inner_text()
        page.keyboard.press("Escape")
        page.locator("#models-switch").click()  # not an admin: refused, and no pill stays on its outputs
        page.get_by_test_id("toast-body").filter(has_text="Only an admin").first.wait_for()
        deadline = time.monotonic() + 10
        while visible_error_pills(page, "models-table") + visible_error_pills(page, "models-status") and \
                time.monotonic() < deadline:
            time.sleep(0.2)
        assert visible_error_pills(page, "models-table") + visible_error_pills(page, "models-status") == 0
    finally:
        context.switch_model(first)
        page.close()


def test_on_a_phone_the_bars_are_above_the_fold_and_the_legend_keeps_every_emotion(
    browser, served, tmp_path: Path
) -> None:
    app, url, root = served
    page = open_page(browser, url, PHONE)
    upload(page, tone(root / "long-phone.wav", 8.0, 250))
    page.locator("#demo-timeline").wait_for(state="visible")
    page.wait_for_timeout(500)  # the plot lays out after it is shown
    path = screenshot(page, tmp_path, "demo-phone-390.png")
    assert path.stat().st_size > 10_000

    predict = page.locator("#demo-predict").bounding_box()
    bars = page.locator("#demo-bars").bounding_box()
    assert bars["y"] > predict["y"] + predict["height"] - 1  # right after the Predict button...
    assert bars["y"] + 100 < PHONE["height"]  # ...and starting above the fold, with bars showing
    options = page.locator("#demo-options").bounding_box()
    assert options["y"] > bars["y"]  # the options come after the answer
    legend = page.locator("#demo-timeline-legend")
    legend.get_by_text("surprised", exact=True).wait_for()
    for label in EIGHT:  # every emotion in the legend, inside the screen's width
        item = legend.locator(".ser-legend-item", has_text=label).first
        box = item.bounding_box()
        assert item.is_visible() and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], label
    page.close()
