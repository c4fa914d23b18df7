"""The Annotate tab's keyboard flow in a real browser (Debian's chromium via Playwright), issue #14.

Each test opens a fresh browser session (its own page state) on one real server: Enter after a
mouse click on "Start / next clip" saves the pick, 1-9 pick, S skips, U undoes, P and Space play
(Space never scrolls), the clip autoplays unless turned off, a double click on Save stores one row,
Save and its confirmation sit above the fold at 1400x900, a new session lists the store's queues
and takes ``?queue=`` from the URL, and 50 clips labelled by keyboard alone store exactly the 50
picks made. Screenshots are left in the test's tmp dir (and ``$SER_TEST_ARTIFACTS``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ser.ui import AppConfig
from ser.ui.clip_sources import iter_source
from tests.app_server import running_app, tone
from tests.test_browser import TIMEOUT_MS, chromium, require_browser, screenshot, text_box
from tests.tiny_models import LABELS, save_tiny_wav2vec2

ADMIN_TOKEN = "annotate-admin-token"
FIFTY = 50
VIEWPORT = {"width": 1400, "height": 900}
WAIT_MS = 15_000  # a key that did nothing shows up as this wait running out
PLAY_BUTTON = "#annotate-audio button.play-pause-button, #annotate-audio-quiet button.play-pause-button"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    require_browser()
    root = tmp_path_factory.mktemp("browser-annotate")
    model = save_tiny_wav2vec2(root / "tiny-annotate", LABELS)
    folders = {"fifty": (FIFTY, 1.0), "keys": (12, 3.0)}
    for name, (count, seconds) in folders.items():
        folder = root / name
        folder.mkdir()
        for index in range(count):
            tone(folder / f"{name}{index:02d}.wav", seconds, 200 + 37 * index + (0 if name == "fifty" else 11))
    config = AppConfig(model=str(model), store=root / "store", data_roots=(root,), admin_token=ADMIN_TOKEN)
    with running_app(config) as (app, url):
        context = app.ser_context
        for name in folders:  # queued as the tab does it; the page is what is under test here
            context.annotation_desk.add_clips(iter_source(str(root / name), context.data_roots, context.load_audio),
                                              name, name, fill=False)
        yield app, url, root


@pytest.fixture(scope="module")
def browser(served):
    with chromium() as launched:
        yield launched


@pytest.fixture
def open_tab(browser, served):
    """A new browser session on the Annotate tab (optionally with ``?queue=``), annotator name typed."""
    contexts = []

    def open_page(annotator: str, query: str = "", queue: str | None = None):
        context = browser.new_context(viewport=VIEWPORT)
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.goto(served[1] + query)
        page.wait_for_selector("#demo-predict")
        page.get_by_role("tab", name="Annotate").click()
        if queue is not None:
            box = text_box(page, "annotate-queue")
            box.fill(queue)
            box.press("Enter")
        text_box(page, "annotate-annotator").fill(annotator)
        return page

    yield open_page
    for context in contexts:
        context.close()


def store_of(served):
    return served[0].ser_context.store


def clip_on_screen(page) -> str | None:
    match = re.search(r"Clip ([0-9a-f]{12})", page.locator("#annotate-info").inner_text())
    return match.group(1) if match else None


def wait_for_clip(page, previous: str | None = None) -> str:
    """Wait until a clip other than ``previous`` is on screen; returns its short id."""
    page.wait_for_function(
        """(previous) => {
             const info = document.querySelector('#annotate-info');
             const found = info && info.innerText.match(/Clip ([0-9a-f]{12})/);
             return found && found[1] !== previous;
           }""", arg=previous, timeout=WAIT_MS)
    return clip_on_screen(page)


def full_sha(store, short: str) -> str:
    (sha,) = [row[0] for row in store._read("SELECT sha256 FROM clips WHERE sha256 LIKE ?", (f"{short}%",))]
    return sha


def play_state(page) -> str:
    return page.locator(PLAY_BUTTON).get_attribute("aria-label")


def wait_for_play_state(page, wanted: str) -> None:
    page.wait_for_function(
        """(wanted) => {
             const button = document.querySelector(selector);
             return button && button.getAttribute('aria-label') === wanted;
           }""".replace("selector", repr(PLAY_BUTTON)), arg=wanted, timeout=WAIT_MS)


def checked_choice(page) -> str | None:
    return page.evaluate("""() => {
        const checked = document.querySelector('#annotate-choice input[type=radio]:checked');
        return checked ? checked.value : null;
    }""")


def test_enter_after_a_mouse_click_on_start_saves_the_pick(open_tab, served, tmp_path: Path) -> None:
    """Problem 1: focus stayed on "Start / next clip" and Enter fired it again, losing the pick."""
    store = store_of(served)
    page = open_tab("erin-click", queue="keys")
    page.locator("#annotate-next").click()  # the mouse: the button keeps focus
    shown = wait_for_clip(page)
    assert page.evaluate("document.activeElement.closest('#annotate-next') !== null")
    page.keyboard.press("4")  # angry
    assert checked_choice(page) == LABELS[3]
    page.keyboard.press("Enter")
    page.locator("#annotate-status").get_by_text(f"Saved {LABELS[3]}").wait_for(timeout=WAIT_MS)
    assert wait_for_clip(page, shown) != shown
    assert store.votes()[full_sha(store, shown)]["erin-click"][1] == LABELS[3]
    assert store.count_labels("erin-click") == 1
    screenshot(page, tmp_path, "annotate-enter-after-click.png")


def test_number_keys_pick_s_skips_and_u_brings_the_clip_back(open_tab, served) -> None:
    store = store_of(served)
    page = open_tab("sam-keys", queue="keys")
    page.locator("#annotate-next").click()
    first = wait_for_clip(page)
    for index, label in enumerate(LABELS, start=1):
        page.keyboard.press(str(index))
        assert checked_choice(page) == label
    page.keyboard.press("9")  # no ninth emotion: the pick stays
    assert checked_choice(page) == LABELS[-1]

    page.keyboard.press("s")
    second = wait_for_clip(page, first)
    assert checked_choice(page) is None  # the pick does not carry over to the next clip
    skipped = store._read("SELECT sha256 FROM skips WHERE annotator = 'sam-keys'")
    assert [row[0][:12] for row in skipped] == [first]

    page.keyboard.press("2")
    page.keyboard.press("Enter")
    third = wait_for_clip(page, second)
    assert store.count_labels("sam-keys") == 1
    page.keyboard.press("u")
    page.locator("#annotate-status").get_by_text("Undid your last label").wait_for(timeout=WAIT_MS)
    assert wait_for_clip(page, third) == second and store.count_labels("sam-keys") == 0
    assert checked_choice(page) is None


def test_the_clip_autoplays_when_served_unless_turned_off(open_tab, served) -> None:
    """Problem 2: every clip needed a mouse click to be heard."""
    page = open_tab("ada-autoplay", queue="keys")
    page.locator("#annotate-next").click()
    first = wait_for_clip(page)
    wait_for_play_state(page, "Pause")  # playing, untouched
    page.locator("#annotate-autoplay input[type=checkbox]").uncheck()
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    wait_for_clip(page, first)
    page.wait_for_timeout(1500)  # time in which an autoplaying clip would have started
    assert play_state(page) == "Play"


def test_p_and_space_play_the_clip_and_space_never_scrolls(open_tab, served) -> None:
    """Problem 2: no play key, and Space scrolled the page by 556 px."""
    page = open_tab("pat-play", queue="keys")
    page.locator("#annotate-autoplay input[type=checkbox]").uncheck()
    page.locator("#annotate-next").click()  # focus stays on the button: Space must not press it again
    shown = wait_for_clip(page)
    page.wait_for_timeout(500)
    assert play_state(page) == "Play"
    page.keyboard.press("p")
    wait_for_play_state(page, "Pause")
    page.keyboard.press("p")  # P while playing pauses; again plays on
    wait_for_play_state(page, "Play")
    page.keyboard.press(" ")
    wait_for_play_state(page, "Pause")
    assert page.evaluate("window.scrollY") == 0 and clip_on_screen(page) == shown
    assert page.evaluate("document.documentElement.scrollHeight") > VIEWPORT["height"]  # there was room to scroll
    wait_for_play_state(page, "Play")  # the 3 s clip ends
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press(" ")  # replay from the end
    wait_for_play_state(page, "Pause")
    assert page.evaluate("window.scrollY") == 0


def test_a_double_click_on_save_stores_one_label(open_tab, served) -> None:
    """Problem 4: a double click on Save stored two rows and the running count jumped."""
    store = store_of(served)
    page = open_tab("dan-double", queue="keys")
    page.locator("#annotate-next").click()
    shown = wait_for_clip(page)
    page.keyboard.press("3")
    page.locator("#annotate-save").dblclick()
    following = wait_for_clip(page, shown)
    page.wait_for_timeout(1500)  # a second save, if one was sent, has landed by now
    assert store.count_labels("dan-double") == 1
    assert [label["annotator"] for label in store.labels_for(full_sha(store, shown))].count("dan-double") == 1
    assert "you have saved 1 label." in page.locator("#annotate-status").inner_text()  # the count did not jump

    page.locator("#annotate-save").click()  # a slow double click: its second click lands on the next clip
    page.wait_for_timeout(1500)
    assert store.count_labels("dan-double") == 1  # nothing is picked for the annotator, so nothing is saved
    assert clip_on_screen(page) == following


def test_save_and_its_confirmation_are_above_the_fold_at_1400x900(open_tab, served, tmp_path: Path) -> None:
    """Problem 10: at 1400x900 the Save button and its confirmation were below the fold."""
    page = open_tab("vic-view", queue="keys")
    page.locator("#admin-token").wait_for()  # the admin-token box is shown too: the tallest page
    page.locator("#annotate-next").click()
    shown = wait_for_clip(page)
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    page.locator("#annotate-status").get_by_text("Saved").wait_for(timeout=WAIT_MS)
    wait_for_clip(page, shown)
    page.evaluate("window.scrollTo(0, 0)")
    for element in ("#annotate-save", "#annotate-status", "#annotate-choice", "#annotate-progress", "#annotate-keys"):
        box = page.locator(element).bounding_box()
        assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= VIEWPORT["height"], (element, box)
    page.screenshot(path=str(tmp_path / "annotate-1400x900.png"))


def test_a_new_session_lists_the_queues_and_the_url_names_one(open_tab, served) -> None:
    """Problem 7: a new session's queue list only offered "default"; "No clips left" read as finished."""
    page = open_tab("quinn-url", query="?queue=keys")
    queue_box = text_box(page, "annotate-queue")
    page.wait_for_function("() => document.querySelector('#annotate-queue input').value === 'keys'",
                           timeout=WAIT_MS)
    queue_box.click()
    options = page.locator("ul[role=listbox] li").all_inner_texts()
    assert {"fifty", "keys"} <= {option.replace("✓", "").strip() for option in options}
    page.keyboard.press("Escape")
    page.locator("#annotate-next").click()
    wait_for_clip(page)
    assert "of 12 in queue keys for quinn-url" in page.locator("#annotate-progress").inner_text()
    keys_line = page.locator("#annotate-keys").inner_text()
    assert all(f"{index} {label}" in keys_line for index, label in enumerate(LABELS, start=1))

    text_box(page, "annotate-queue").fill("fifty")  # picking another queue names it in the URL
    text_box(page, "annotate-queue").press("Enter")
    page.wait_for_function("() => new URL(location.href).searchParams.get('queue') === 'fifty'", timeout=WAIT_MS)


def test_fifty_queue_clips_by_keyboard_alone_store_exactly_the_picks_made(open_tab, served, tmp_path: Path) -> None:
    """The issue's acceptance run: 50 clips, keyboard only (Tab out of the name box, then keys)."""
    store = store_of(served)
    page = open_tab("kim-fifty", query="?queue=fifty")
    page.wait_for_function("() => document.querySelector('#annotate-queue input').value === 'fifty'",
                           timeout=WAIT_MS)
    text_box(page, "annotate-annotator").focus()
    page.keyboard.press("Tab")  # to the queue box (a text box: keys are typing there)
    page.keyboard.press("Tab")  # to the order choice
    assert page.evaluate("document.activeElement.type") == "radio"
    page.keyboard.press("Enter")  # nothing on screen: Enter serves the first clip
    picks: dict[str, str] = {}
    shown = wait_for_clip(page)
    for number in range(FIFTY):
        key = (number * 7 + number // 4) % len(LABELS) + 1  # every label, in no simple pattern
        page.keyboard.press(str(key))
        picks[shown] = LABELS[key - 1]
        page.keyboard.press("Enter")
        if number < FIFTY - 1:
            shown = wait_for_clip(page, shown)
    page.locator("#annotate-info").get_by_text("you have finished queue fifty").wait_for(timeout=WAIT_MS)
    screenshot(page, tmp_path, "annotate-fifty-done.png")
    assert "50 of 50" in page.locator("#annotate-progress").inner_text()

    stored = {sha[:12]: by["kim-fifty"][1] for sha, by in store.votes().items() if "kim-fifty" in by}
    assert len(picks) == FIFTY and stored == picks
    assert store.count_labels("kim-fifty") == FIFTY
    assert len(set(picks.values())) == len(LABELS)
