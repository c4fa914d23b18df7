"""Keyboard shortcuts for the Annotate tab: labelling hundreds of clips by mouse is slow and painful.

1-9 pick the n-th emotion, Enter saves, S skips, U undoes. The handler is installed once per page
(by a JavaScript-only ``load`` event, so it works however the app is launched), acts only while
the Annotate tab is visible, and leaves keys alone while the user types in a text box.
"""

SHORTCUTS_HELP = (
    "**Keyboard:** `1`-`9` pick an emotion · `Enter` saves and moves on · `S` skips · `U` undoes your last save "
    "(shortcuts pause while you type in a text box)."
)

KEYBOARD_JS = """
() => {
  if (window.__serAnnotateKeys) return;
  window.__serAnnotateKeys = true;
  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const target = event.target;
    const tag = target && target.tagName;
    const typing = tag === "TEXTAREA" || target.isContentEditable ||
      (tag === "INPUT" && !["radio", "checkbox", "button"].includes(target.type));
    if (typing) return;
    if (event.key === "Enter" && tag === "BUTTON") return;  // the focused button handles its own Enter
    const panel = document.getElementById("annotate-panel");
    if (!panel || panel.offsetParent === null) return;  // Annotate tab not shown
    const press = (id) => {
      const button = document.getElementById(id);
      if (button) { event.preventDefault(); button.click(); }
    };
    if (/^[1-9]$/.test(event.key)) {
      const choices = panel.querySelectorAll("#annotate-choice input[type=radio]");
      const choice = choices[Number(event.key) - 1];
      if (choice) { event.preventDefault(); choice.click(); }
    } else if (event.key === "Enter") {
      press("annotate-save");
    } else if (event.key === "s" || event.key === "S") {
      press("annotate-skip");
    } else if (event.key === "u" || event.key === "U") {
      press("annotate-undo");
    }
  });
}
"""
