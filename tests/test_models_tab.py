"""The Models tab's retrain loop as shipped: a configured base corpus, the verdict first and in
words, a clean progress bar, and a retrain child that yields the CPU to the page's predictions.

The end-to-end retrain (the real ``finetune retrain`` child) is ``tests/test_app_retrain.py``;
these check the pieces without training anything.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from ser.ui import parse_config
from ser.ui.config import AppConfig
from ser.ui.context import AppContext
from ser.ui.models import EXIT_REJECTED, base_corpus_note, progress_html, verdict_text
from ser.ui.retrain_runner import RetrainRun, RetrainRunner
from tests.tiny_models import LABELS, save_tiny_wav2vec2


def test_base_corpus_options_reach_finetune_retrain(tmp_path: Path) -> None:
    config = parse_config(["--retrain-corpus", "emodb", "--retrain-root", "/data/emodb", "--retrain-args",
                           "--holdout 0.3"], {})
    runner = RetrainRunner(tmp_path / "store", tmp_path / "models", config.retrain_command_args)
    command = runner.command(["--policy", "majority"])
    assert command[command.index("--corpus") + 1] == "emodb" and command[command.index("--root") + 1] == "/data/emodb"
    assert command[-2:] == ["--holdout", "0.3"]
    env = parse_config([], {"SER_RETRAIN_CORPUS": "nemo", "SER_RETRAIN_ROOT": "/data/nemo"})
    assert (env.retrain_corpus, env.retrain_root) == ("nemo", Path("/data/nemo"))
    with pytest.raises(SystemExit):
        parse_config(["--retrain-corpus", "emodb"], {})  # a corpus without its folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_wav2vec2(tmp_path_factory.mktemp("models") / "tiny-models-tab", LABELS)


def test_the_tab_says_when_no_base_corpus_is_configured(model_dir: Path, tmp_path: Path) -> None:
    bare = AppContext(AppConfig(model=str(model_dir), store=tmp_path / "bare"))
    note = base_corpus_note(bare)
    assert "No base corpus is configured" in note and "small and likely to be rejected" in note
    assert "--retrain-corpus NAME --retrain-root DIR" in note
    configured = AppContext(AppConfig(model=str(model_dir), store=tmp_path / "with",
                                      retrain_corpus="emodb", retrain_root=Path("/data/emodb")))
    assert "No base corpus" not in base_corpus_note(configured) and "emodb" in base_corpus_note(configured)


def test_the_verdict_says_what_happened_in_words_with_both_uars() -> None:
    adopted = verdict_text(0, {"new_uar": 0.71234, "serving_uar": 0.65, "reason": "UAR not lower"}, "v1", "",
                           adopted="v2")
    assert adopted.startswith("### Adopted: now serving `v2`") and "0.712" in adopted and "0.650" in adopted
    aside = verdict_text(EXIT_REJECTED, {"version": "v3", "new_uar": 0.5, "serving_uar": 0.6,
                                         "reason": "UAR 0.5000 is lower than the serving 0.6000"}, "v1", "")
    assert aside.startswith("### Kept aside: `v3`") and "keeps serving `v1`" in aside and "0.500" in aside
    failed = verdict_text(2, {}, "v1", "retrain: error: nothing to train on")
    assert failed.startswith("### Failed (exit code 2)") and "nothing to train on" in failed


def test_the_progress_bar_comes_from_the_stages_and_bars_not_raw_lines() -> None:
    run = RetrainRun(["retrain"])
    for line in ["[retrain 1/7] reading labels", "  12 clips", "[retrain 4/7] encoding clips with the frozen x",
                 "encoding: 10%|█         | 1/10 [00:01<00:09]", "encoding: 50%|█████     | 5/10 [00:05<00:05]"]:
        run.add(line)
    progress = run.progress()
    assert (progress.stage, progress.stages) == (4, 7) and progress.fraction == pytest.approx((3 + 0.5) / 7)
    shown = progress_html(progress)
    assert "<progress" in shown and "value='50'" in shown and "Stage 4 of 7: encoding clips" in shown
    assert "%|" not in shown and "█" not in shown  # no tqdm bar text on the page
    run.returncode = 0
    assert run.progress().fraction == 1.0


class PriorityProbe(RetrainRunner):
    """The runner's real launch (priority, threads, environment) around a child that reports them."""

    def command(self, options: list[str]) -> list[str]:
        return [sys.executable, "-c",
                "import os, torch; print('nice', os.nice(0)); print('threads', torch.get_num_threads())"]


@pytest.mark.skipif(not hasattr(os, "nice"), reason="niceness is POSIX")
def test_the_retrain_child_runs_at_a_lower_priority_with_fewer_threads(tmp_path: Path) -> None:
    if os.nice(0) >= 19:
        pytest.skip("this test process already runs at the lowest priority")
    runner = PriorityProbe(tmp_path / "store", tmp_path / "models", nice=10, threads=1)
    *_, run = runner.run()
    assert run.returncode == 0, run.lines
    reported = dict(line.split() for line in run.lines)
    assert int(reported["nice"]) > os.nice(0)  # the server's own niceness
    assert int(reported["threads"]) == 1
