"""Keyboard shortcuts for the Annotate tab: labelling hundreds of clips by mouse is slow and painful.

1-9 pick the n-th emotion, Enter saves, S skips, U undoes, P or Space play or pause the clip. The
handler is installed once per page (by a JavaScript-only ``load`` event, so it works however the
app is launched), acts only while the Annotate tab is visible, and leaves keys alone while the user
types in a text box.

It listens in the capture phase, before the focused element sees the key, so a key means the same
wherever focus is: after a mouse click on "Start / next clip" the button keeps focus, and Enter
used to press it again (serving a fresh clip and dropping the pick) instead of saving. Enter on a
button of the tab's tool panels (loading clips, agreement, time spans) and outside the tab keeps
its usual meaning; Space never scrolls the page while the tab is shown.
"""

SHORTCUTS_HELP = (
    "**Keyboard** (wherever focus is, except in a text box): `1`-`9` pick an emotion · `Enter` saves and "
    "moves on · `S` skips · `U` undoes your last save · `P` or `Space` plays or pauses the clip (again from the "
    "start once it has ended)."
)

KEYBOARD_JS = """
() => {
  if (window.__serAnnotateKeys) return;
  window.__serAnnotateKeys = true;
  const TOOLS = "#queue-tools, #agreement-tools, #region-tools";
  const isTyping = (target) => {
    const tag = target && target.tagName;
    return tag === "TEXTAREA" || (target && target.isContentEditable) ||
      (tag === "INPUT" && !["radio", "checkbox", "button", "range"].includes(target.type));
  };
  const shownPanel = () => {
    const panel = document.getElementById("annotate-panel");
    return panel && panel.offsetParent !== null ? panel : null;
  };
  const playClip = (panel) => {
    const button = panel.querySelector(
      "#annotate-audio button.play-pause-button, #annotate-audio-quiet button.play-pause-button");
    if (!button) return;
    if (button.getAttribute("aria-label") === "Pause") button.click();  // playing: pause, then play again
    button.click();
  };
  let swallowKeyUp = null;  // a button fires its click on Space's keyup: swallow the keyup we handled
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (isTyping(target)) return;
    const panel = shownPanel();
    if (!panel) return;
    const inTools = target && target.closest && target.closest(TOOLS);
    const onForeignButton = target && target.closest && target.closest("button, [role=tab]") &&
      (inTools || !panel.contains(target));
    const handled = () => { event.preventDefault(); event.stopPropagation(); };
    const press = (id) => {
      const button = document.getElementById(id);
      if (button) { handled(); if (!event.repeat) button.click(); }
    };
    const key = event.key;
    if (/^[1-9]$/.test(key)) {
      const choices = panel.querySelectorAll("#annotate-choice input[type=radio]");
      const choice = choices[Number(key) - 1];
      if (choice) { handled(); choice.click(); }
    } else if (key === "Enter") {
      if (!onForeignButton) press("annotate-save");
    } else if (key === " " || key === "p" || key === "P") {
      if (key === " " && onForeignButton) return;
      handled();
      if (key === " ") swallowKeyUp = " ";
      if (!event.repeat) playClip(panel);
    } else if (key === "s" || key === "S") {
      if (!inTools) press("annotate-skip");
    } else if (key === "u" || key === "U") {
      if (!inTools) press("annotate-undo");
    }
  }, true);
  document.addEventListener("keyup", (event) => {
    if (swallowKeyUp !== null && event.key === swallowKeyUp) {
      swallowKeyUp = null;
      event.preventDefault();
      event.stopPropagation();
    }
  }, true);
}
"""
