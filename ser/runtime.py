"""Faster CPU inference: ONNX Runtime (fp32 or int8 MatMul/Gemm) or OpenVINO behind the Predictor.

Spaces' free tier and most laptops have two CPU cores and no GPU, where eager PyTorch is the slow
path. A model is exported once to ONNX with a dynamic time axis and cached next to its checkpoint
(or in the user cache when that folder is read-only). ONNX Runtime's int8 variant quantizes only
MatMul/Gemm, because quantizing the convolutional front end was slower on these CPUs (NOTES.md);
OpenVINO runs the same fp32 export, in bf16 on CPUs with bf16 instructions (AVX512-BF16, AMX), which
also speeds up that front end. A runtime is only used after it has matched eager PyTorch on a set of
check signals within ``TOLERANCE``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ser.cache import cache_root

RUNTIMES = ("eager", "onnx", "onnx-int8", "openvino")
# Largest allowed difference of any class probability between a runtime and eager PyTorch.
TOLERANCE = 0.02
# A runtime replaces eager PyTorch only when it takes at most this fraction of eager's time.
SPEED_MARGIN = 0.9
_CHECK_SECONDS = (0.7, 2.3, 4.1)


def choose_runtime(requested: str | None) -> str:
    """``auto`` (the default) means the fastest runtime that passes the check; ``SER_RUNTIME`` overrides."""
    runtime = requested or os.environ.get("SER_RUNTIME") or "auto"
    if runtime not in (*RUNTIMES, "auto"):
        raise ValueError(f"unknown runtime {runtime!r}; choose one of auto, {', '.join(RUNTIMES)}")
    return runtime


def check_signals(sample_rate: int = 16000, seed: int = 0) -> list[np.ndarray]:
    """Speech-like test signals that change every half second (pitch, loudness, noise).

    A runtime that froze the example's length, or dropped part of a clip, sees a different mix of
    pieces than eager PyTorch does, so its probabilities differ and the check rejects it.
    """
    rng = np.random.default_rng(seed)
    piece = sample_rate // 2
    signals = []
    for seconds in _CHECK_SECONDS:
        pieces = []
        for _ in range(int(np.ceil(seconds * 2))):
            t = np.arange(piece) / sample_rate
            f0 = 90 + 250 * rng.random()
            voiced = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
            envelope = 0.5 * (1 + np.sin(2 * np.pi * (2 + 6 * rng.random()) * t))
            loudness, noise = 0.02 + 0.4 * rng.random(), 0.2 * rng.random()
            pieces.append(loudness * (voiced * envelope + noise * rng.standard_normal(piece)))
        signals.append(np.concatenate(pieces)[: int(seconds * sample_rate)].astype(np.float32))
    return signals


class OnnxClassifier:
    """Runs an exported classifier with ONNX Runtime; returns logits like the torch model does."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [node.name for node in self.session.get_inputs()]

    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        feed = {name: inputs[name].numpy() for name in self.input_names}
        return torch.from_numpy(self.session.run(None, feed)[0])


class OpenVinoClassifier:
    """Runs the exported classifier with OpenVINO on the CPU; returns logits like the torch model does.

    OpenVINO picks the precision: bf16 where the CPU computes it natively, else fp32. Compiled
    kernels are cached beside the export, so a second start skips most of the compile time.
    """

    def __init__(self, path: Path) -> None:
        import openvino as ov

        core = ov.Core()
        core.set_property({"CACHE_DIR": str(path.parent / "openvino-cache")})
        model = core.read_model(str(path))
        # The export's input names; a compiled input can gain internal names, so inputs go by position.
        self.input_names = [port.get_any_name() for port in model.inputs]
        self.compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
        self._requests = threading.local()  # an infer request serves one call at a time

    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self.compiled.create_infer_request()
        result = request.infer([inputs[name].numpy() for name in self.input_names])
        return torch.from_numpy(np.array(result[self.compiled.output(0)], dtype=np.float32))


def build_onnx(
    model: torch.nn.Module,
    examples: list[dict[str, torch.Tensor]],
    checkpoint: Path | None,
    runtime: str,
) -> OnnxClassifier | OpenVinoClassifier:
    """Export (once, cached) and load the ONNX model for ``runtime`` ("onnx", "onnx-int8", "openvino").

    ``examples`` are model inputs for clips of different lengths: the axes whose sizes differ
    between them become the dynamic time axes of the export.
    """
    folder = _cache_folder(checkpoint, model)
    fp32 = folder / "model.onnx"
    if not fp32.is_file():
        _export(model, examples, fp32)
    if runtime == "onnx":
        return OnnxClassifier(fp32)
    if runtime == "openvino":
        return OpenVinoClassifier(fp32)
    int8 = folder / "model.int8.onnx"
    if not int8.is_file():
        _quantize(fp32, int8)
    return OnnxClassifier(int8)


def select_runner(
    model: torch.nn.Module,
    check_inputs: list[dict[str, torch.Tensor]],
    checkpoint: Path | None,
    runtime: str,
) -> tuple[Callable[[dict[str, torch.Tensor]], torch.Tensor] | None, str, dict[str, Any]]:
    """The runner for ``runtime`` (None means eager PyTorch), its name and its check against eager.

    ``auto`` builds every runtime, keeps those within ``TOLERANCE`` that agree with eager on every
    check signal's label, and picks the fastest of them on those same signals if it beats eager by
    ``SPEED_MARGIN``: which one wins depends on the architecture and the CPU (int8 pays off for
    transformers, not for small CNNs; OpenVINO's bf16 needs a CPU with bf16 instructions).
    """
    if runtime == "eager":
        return None, "eager", {}
    eager = _eager_logits(model)
    report: dict[str, Any] = {"eager": {"seconds": _seconds(eager, check_inputs)}}
    runners: dict[str, Callable[[dict[str, torch.Tensor]], torch.Tensor] | None] = {"eager": None}
    for name in ("openvino", "onnx-int8", "onnx") if runtime == "auto" else (runtime,):
        try:
            runner = build_onnx(model, check_inputs, checkpoint, name)
            report[name] = {**agreement(eager, runner, check_inputs), "seconds": _seconds(runner, check_inputs)}
        except Exception as error:  # noqa: BLE001 - any export or run failure means "not this runtime"
            if runtime != "auto":
                raise
            report[name] = {"error": f"{type(error).__name__}: {error}"}
            continue
        if runtime != "auto":
            return runner, name, report
        if report[name]["max_prob_diff"] <= TOLERANCE and report[name]["label_agreement"] == 1.0:
            runners[name] = runner
    fastest = min(runners, key=lambda name: report[name]["seconds"])
    if report[fastest]["seconds"] > SPEED_MARGIN * report["eager"]["seconds"]:
        fastest = "eager"  # a few percent is timing noise: not worth a second runtime
    return runners[fastest], fastest, report


def _seconds(run: Callable[[dict[str, torch.Tensor]], torch.Tensor], inputs: list[dict[str, torch.Tensor]]) -> float:
    """Best of three passes over the check inputs (after a warm-up pass)."""
    run(inputs[0])
    passes = []
    for _ in range(3):
        start = time.perf_counter()
        for feed in inputs:
            run(feed)
        passes.append(time.perf_counter() - start)
    return min(passes)


def _eager_logits(model: torch.nn.Module) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    def run(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            return model(**inputs).logits

    return run


def agreement(
    eager: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    candidate: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    inputs: list[dict[str, torch.Tensor]],
) -> dict[str, float]:
    """Max probability difference and top-label agreement of ``candidate`` against ``eager``."""
    max_diff, same = 0.0, 0
    for feed in inputs:
        reference = torch.softmax(eager(feed).float(), dim=-1)
        probs = torch.softmax(candidate(feed).float(), dim=-1)
        max_diff = max(max_diff, float((reference - probs).abs().max()))
        same += int(reference.argmax(-1).eq(probs.argmax(-1)).all())
    return {"max_prob_diff": max_diff, "label_agreement": same / len(inputs)}


def _export(model: torch.nn.Module, examples: list[dict[str, torch.Tensor]], out: Path) -> None:
    """TorchScript-based export with dynamic batch and time axes, written atomically."""
    example = examples[0]
    names = list(example)
    dynamic = {name: {0: "batch", **{axis: f"time_{axis}" for axis in _varying_axes(examples, name)}} for name in names}
    dynamic["logits"] = {0: "batch"}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_file = Path(tmp) / out.name
        # The tracer warns at every data-dependent `if` (clip length vs. padding), the exporter at
        # every advanced index; both are why each export is checked against eager PyTorch on
        # signals of several lengths before it is used.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message="Exporting aten::index operator", category=UserWarning)
            torch.onnx.export(
                _LogitsOnly(model, names),
                tuple(example[name] for name in names),
                str(tmp_file),
                input_names=names,
                output_names=["logits"],
                dynamic_axes=dynamic,
                opset_version=17,
                dynamo=False,
            )
        os.replace(tmp_file, out)


def _varying_axes(examples: list[dict[str, torch.Tensor]], name: str) -> list[int]:
    shapes = [tuple(example[name].shape) for example in examples]
    return [axis for axis in range(1, len(shapes[0])) if len({shape[axis] for shape in shapes}) > 1]


def _quantize(fp32: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_file = Path(tmp) / out.name
        # Its "consider pre-processing" advice (a root-logger warning on every call) is for static
        # quantization; the int8 model is checked against eager PyTorch instead.
        hint = _DropLogRecord("Please consider to run pre-processing")
        logging.getLogger().addFilter(hint)
        try:
            quantize_dynamic(str(fp32), str(tmp_file), op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8)
        finally:
            logging.getLogger().removeFilter(hint)
        os.replace(tmp_file, out)


class _DropLogRecord(logging.Filter):
    """Drops log records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


class _LogitsOnly(torch.nn.Module):
    """Positional inputs in, logits out: the signature the ONNX exporter traces."""

    def __init__(self, model: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, tensors))).logits


def _cache_folder(checkpoint: Path | None, model: torch.nn.Module) -> Path:
    """``<checkpoint>/onnx`` when writable, else a folder in the user cache keyed by the weights."""
    if checkpoint is not None and checkpoint.is_dir() and os.access(checkpoint, os.W_OK):
        return checkpoint / "onnx"
    return cache_root() / "onnx" / _weights_fingerprint(model)


def _weights_fingerprint(model: torch.nn.Module) -> str:
    digest = hashlib.sha256(json.dumps(model.config.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().flatten()[:64].numpy().tobytes())
    return digest.hexdigest()[:16]
