"""Run ``python -m finetune retrain`` as a child process and follow it line by line.

Training runs in its own process so that a crash, a memory blow-up or a hung library there can
never take the app down, and so ``ser`` never imports ``finetune``. One retrain at a time: two
would fight over 2 CPU cores and both finish late.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


PROGRESS_RE = re.compile(r"^(?P<desc>[^\n]*?):\s*\d+%\|")  # a tqdm bar: "desc:  40%|████ | 4/10 ..."


@dataclass
class RetrainRun:
    """What one run printed and how it ended (``returncode`` stays None while it runs)."""

    command: list[str]
    lines: list[str] = field(default_factory=list)
    returncode: int | None = None

    def add(self, line: str) -> None:
        """Keep a line; a progress bar's update replaces its previous state instead of piling up."""
        bar = PROGRESS_RE.match(line)
        previous = PROGRESS_RE.match(self.lines[-1]) if self.lines else None
        if bar and previous and bar["desc"] == previous["desc"]:
            self.lines[-1] = line
        else:
            self.lines.append(line)


class RetrainRunner:
    """Starts retrains, one at a time, and streams their output."""

    def __init__(self, store: Path, out: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.store = store
        self.out = out
        self.extra_args = extra_args
        self._busy = threading.Lock()

    def command(self, options: list[str]) -> list[str]:
        return [sys.executable, "-m", "finetune", "retrain", "--store", str(self.store), "--out", str(self.out),
                *options, *self.extra_args]

    def run(self, options: list[str] | None = None) -> Iterator[RetrainRun]:
        """Yield the run after each line it prints and once more when it exits.

        Closing the generator (the user cancelled, the page went away) kills the child.
        """
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("A retrain is already running; wait for it to finish.")
        try:
            run = RetrainRun(self.command(options or []))
            self.out.mkdir(parents=True, exist_ok=True)
            env = {**os.environ, "PYTHONUNBUFFERED": "1",
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
            # Text mode reads "\r" as a line end too, so tqdm's in-place updates arrive as lines.
            with subprocess.Popen(run.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  errors="replace", cwd=REPO_ROOT, env=env) as child:
                try:
                    for line in child.stdout:
                        if line.strip():
                            run.add(line.rstrip())
                            yield run
                    run.returncode = child.wait()
                finally:
                    if child.poll() is None:
                        child.kill()
            yield run
        finally:
            self._busy.release()
