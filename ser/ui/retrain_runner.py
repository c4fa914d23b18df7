"""Run ``python -m finetune retrain`` as a child process and follow it line by line.

Training runs in its own process so that a crash, a memory blow-up or a hung library there can
never take the app down, and so ``ser`` never imports ``finetune``. One retrain at a time: two
would fight over 2 CPU cores and both finish late. The child runs at a lower priority (``nice``)
and with half the cores' torch threads, so visitors' predictions keep their speed while it trains.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


PROGRESS_RE = re.compile(r"^(?P<desc>[^\n]*?):\s*(?P<percent>\d+)%\|")  # a tqdm bar: "desc:  40%|████ | 4/10 ..."
STAGE_RE = re.compile(r"^\[retrain (?P<number>\d+)/(?P<total>\d+)\] (?P<text>.*)$")  # finetune.retrain.stage
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class Progress:
    """How far a run is: the stage it is in, and the share of all stages done (0 to 1)."""

    stage: int
    stages: int
    text: str
    fraction: float


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

    def progress(self) -> Progress | None:
        """The latest ``[retrain n/N]`` stage and, within it, the latest progress bar's percentage."""
        for index in range(len(self.lines) - 1, -1, -1):
            stage = STAGE_RE.match(self.lines[index])
            if stage is None:
                continue
            number, total = int(stage["number"]), max(1, int(stage["total"]))
            within = 0.0
            for later in self.lines[index + 1:]:
                bar = PROGRESS_RE.match(later)
                if bar:
                    within = min(1.0, int(bar["percent"]) / 100)
            done = 1.0 if self.returncode is not None else (number - 1 + within) / total
            return Progress(number, total, stage["text"], min(1.0, done))
        return None


class RetrainRunner:
    """Starts retrains, one at a time, and streams their output."""

    def __init__(self, store: Path, out: Path, extra_args: tuple[str, ...] = (), *, nice: int = 10,
                 threads: int | None = None) -> None:
        self.store = store
        self.out = out
        self.extra_args = extra_args
        self.nice = nice
        # Half the cores (at least one) for training: the rest stay free for the page's predictions.
        self.threads = threads if threads is not None else max(1, (os.cpu_count() or 2) // 2)
        self._busy = threading.Lock()

    def command(self, options: list[str]) -> list[str]:
        return [sys.executable, "-m", "finetune", "retrain", "--store", str(self.store), "--out", str(self.out),
                *options, *self.extra_args]

    def lowered(self, command: list[str]) -> list[str]:
        """``command`` run at niceness +``nice`` through ``nice(1)`` where there is one (POSIX).

        ``nice(1)`` rather than ``preexec_fn=os.nice``: the server has threads, and code run between
        fork and exec in a threaded process can deadlock."""
        tool = shutil.which("nice") if self.nice > 0 else None
        return [tool, "-n", str(self.nice), *command] if tool else list(command)

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
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
                   **{name: str(self.threads) for name in THREAD_VARIABLES}}
            # Text mode reads "\r" as a line end too, so tqdm's in-place updates arrive as lines.
            with subprocess.Popen(self.lowered(run.command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, errors="replace", cwd=REPO_ROOT, env=env) as child:
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
