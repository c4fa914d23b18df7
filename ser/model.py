"""Predictor: one interface over every model the project can load.

A model is a Hugging Face checkpoint directory (or hub id) loaded with ``AutoFeatureExtractor`` +
``AutoModelForAudioClassification``; the project's own light and probe models register themselves
with those Auto classes, and the classical scikit-learn models sit behind the same methods. The app,
the CLI and the benchmarks therefore never need to know which kind of model they hold.

One rule for long clips, wherever a clip is predicted (the app's tabs, the HTTP API, the CLI and
``ser.bulk``), so the same clip gets the same answer everywhere: a clip up to ``LONGEST_PASS_S``
is one pass of the model; a longer one is the mean of its windows' probabilities (windows of that
length, the last one ending at the clip's end). ``timeline``'s short windows only show how the
emotion moves over a recording; they never make a clip's answer.
"""

from __future__ import annotations

import inspect
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ser.adaptation import MIN_CONTEXT_CLIPS, SpeakerContext, SpeakerStats, speaker_stats, standardise
from ser.audio import MIN_JUDGED_S, SAMPLE_RATE, check_judgeable, load_audio, segments
from ser.backbones import family

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
LONGEST_PASS_S = 30.0  # Whisper encoders take at most 30 s; minutes of speech are better read from ``timeline``


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what to do about it."""


def default_model_path() -> str:
    """The model used when none is given: ``SER_MODEL`` if set, else the embedded default."""
    return os.environ.get("SER_MODEL") or str(DEFAULT_MODEL_DIR)


# The project's model types and the module that registers each with the transformers Auto classes.
_PROJECT_MODEL_MODULES = {"ser-probe": "ser.probe"}


def _register_project_models(model_type: str | None = None) -> None:
    """Import the module that registers ``model_type`` (all of them when unknown).

    Each import costs start-up time (the light models pull in much of transformers), so a
    checkpoint loads only what it needs.
    """
    import importlib

    module = _PROJECT_MODEL_MODULES.get(model_type or "")
    if module is not None:
        importlib.import_module(module)
    elif model_type is None or model_type.startswith("ser-"):
        import ser.light_models  # noqa: F401
        import ser.probe  # noqa: F401


def _model_type(local: Path) -> str | None:
    try:
        return json.loads((local / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return None


def _looks_like_a_path(source: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else that does not exist is a missing folder."""
    return Path(source).is_absolute() or source.startswith(".") or source.count("/") > 1


def _offline_hint(source: str, error: Exception, offline: bool = False) -> ModelLoadError:
    """One readable line: offline (the Hub switched off or unreachable) or a load that failed."""
    fix = f"download it once while online (`hf download {source}`) or pass a local checkpoint directory."
    if offline:
        why = "HF_HUB_OFFLINE is set" if _offline_env() else "the Hugging Face Hub is not reachable"
        return ModelLoadError(f"Could not load the model {source!r}: {why} and it is not in the local cache; {fix}")
    return ModelLoadError(f"Could not load the model {source!r}: {error}. If this is a Hugging Face Hub id, {fix}")


def _offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _hub_offline(timeout_s: float = 3.0) -> bool:
    """True when ``HF_HUB_OFFLINE`` is set or the Hub's host does not accept a connection.

    Without this, an unreachable Hub costs about a minute of "Retrying in 8s" lines per file before
    the error; cached models still load with ``local_files_only``. Behind a proxy, no probe is made.
    """
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if _offline_env() or constants.HF_HUB_OFFLINE:
        return True
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout_s).close()
    except OSError:
        return True
    return False


class Predictor:
    """Turns audio into a probability per emotion label."""

    def __init__(self, model: Any, feature_extractor: Any, *, name: str, version: str) -> None:
        self.model = model
        self.feature_extractor = feature_extractor
        self.name = name
        self.version = version
        self.runtime = "eager"
        self.runtime_check: dict[str, Any] = {}
        self._runner: Any = None
        self._load_lock = threading.Lock()
        if isinstance(model, torch.nn.Module):
            model.eval()
            id2label = model.config.id2label
            self.labels = [id2label[i] for i in range(len(id2label))]
            self._forward_keys = set(inspect.signature(model.forward).parameters)
            # Features of the clip's own length, except where the family's classifier insists on a
            # fixed window (transformers' Whisper: 30 s; the project's probe runs Whisper at the real length).
            self._padding = family(model.config.model_type).classifier_padding
        else:
            self.labels = list(model.labels)
        self.denoise = trained_denoising(model)

    @classmethod
    def from_pretrained(cls, path_or_hub_id: str | os.PathLike | None = None, *, runtime: str | None = None) -> Predictor:
        """Load a checkpoint directory, a classical model directory, or a hub id (None: the default).

        ``runtime``: "auto" (default; ``SER_RUNTIME`` overrides) picks the fastest CPU runtime that
        matches eager PyTorch within ``ser.runtime.TOLERANCE``; "eager", "onnx", "onnx-int8" or
        "openvino" force one.
        """
        source = str(path_or_hub_id) if path_or_hub_id is not None else default_model_path()
        local = Path(source)
        name = local.name if local.exists() else source
        if (local / "classical.json").is_file():
            from ser.classical import ClassicalModel

            model = ClassicalModel.load(local)
            return cls(model, None, name=name, version=str(getattr(model, "version", name)))
        if local.exists() and not (local / "config.json").is_file():
            raise ModelLoadError(f"{source} is not a model directory (no config.json or classical.json in it).")
        if not local.exists() and _looks_like_a_path(source):
            raise ModelLoadError(f"No model directory at {source}.")
        exported = cls._from_export(local, runtime, name) if local.is_dir() else None
        if exported is not None:
            return exported
        _register_project_models(_model_type(local) if local.is_dir() else None)
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        offline = not local.exists() and _hub_offline()
        try:
            feature_extractor = AutoFeatureExtractor.from_pretrained(source, local_files_only=offline)
            model = AutoModelForAudioClassification.from_pretrained(source, local_files_only=offline)
        except (OSError, ValueError) as error:  # hub errors: not found, offline, invalid id
            raise _offline_hint(source, error, offline) from error
        predictor = cls(model, feature_extractor, name=name, version=_model_version(local, model))
        if local.is_dir() and predictor._padding == "longest":
            # The export path's extractor too, so deciding and reusing processes compute the same features.
            from ser.backbones.whisper_features import from_config

            predictor.feature_extractor = from_config(local) or feature_extractor
        predictor.use_runtime(runtime, local if local.is_dir() else None)
        return predictor

    def use_runtime(self, runtime: str | None, checkpoint: Path | None = None) -> None:
        """Switch to ``runtime`` (see ``from_pretrained``), exporting and checking it if needed."""
        from ser.runtime import check_waveforms, choose_runtime, select_runner

        def check_inputs() -> list[tuple[str, dict[str, torch.Tensor]]]:  # built only when a check runs
            return [(name, self._inputs(waveform)) for name, waveform in check_waveforms()]

        serving = {"labels": self.labels, "padding": self._padding, "input_names": sorted(self._forward_keys),
                   "version": self.version, "model_type": self.model.config.model_type,
                   "speaker_adaptation": self.adapts_to_speakers, "denoise": self.denoise}
        self._runner, self.runtime, self.runtime_check = select_runner(
            self.model, check_inputs, checkpoint, choose_runtime(runtime), serving
        )

    @classmethod
    def _from_export(cls, local: Path, runtime: str | None, name: str) -> Predictor | None:
        """A predictor on a recorded ONNX/OpenVINO decision: the export alone, as the full load runs it.

        Skips loading the PyTorch model (and most of transformers' import time); None when no
        decision for these files, runtime versions and CPU chose an export.
        """
        from ser.runtime import choose_runtime, exported_decision, load_exported

        record = exported_decision(local) if choose_runtime(runtime) == "auto" else None
        if record is None:
            return None
        try:
            feature_extractor = _export_feature_extractor(local, record["serving"]["padding"])
            runner = load_exported(record)
        except (OSError, ValueError, RuntimeError):
            return None  # e.g. a project feature extractor that needs its module: load fully
        serving = record["serving"]
        predictor = cls(_ExportedModel(serving, local), feature_extractor, name=name, version=serving["version"])
        predictor._forward_keys, predictor._padding = set(serving["input_names"]), serving["padding"]
        predictor._runner, predictor.runtime = runner, record["runtime"]
        predictor.runtime_check = {**record["report"], "decision": {"reused": True, "path": str(record["decision_path"])}}
        return predictor


    @property
    def adapts_to_speakers(self) -> bool:
        """Does the model carry a speaker-adapted head (``ser.adaptation``)?"""
        return bool(getattr(self.model.config, "speaker_adaptation", False))

    def predict(self, audio: Any, context: SpeakerContext | None = None, *, denoise: str | None = None,
                any_length: bool = False) -> dict[str, float]:
        """Probabilities per label (summing to 1) for one clip; raises ``InvalidAudio`` on bad input.

        The long-clip rule (module docstring): one pass up to ``LONGEST_PASS_S``, else the mean of
        the windows' probabilities.

        ``context`` holds the same voice's earlier clips (a session): the clip joins it and, once it
        holds ``MIN_CONTEXT_CLIPS``, is predicted relative to that voice. Models without a
        speaker-adapted head ignore it. ``denoise`` asks for a ``ser.denoise`` method (``heard``: a
        model trained on denoised audio always gets its own). A clip shorter than ``ser.audio.MIN_JUDGED_S`` raises
        ``TooShortToJudge`` (an ``InvalidAudio``): no answer beats a confident guess from a click.
        ``any_length=True`` lifts that for scoring a model on every clip of a corpus (retrain,
        distillation), never for an answer someone reads.
        """
        waveform = load_audio(audio)
        if not any_length:
            check_judgeable(waveform)
        return self.predict_heard(self.heard(waveform, denoise), context)

    def heard(self, waveform: np.ndarray, denoise: str | None = None) -> np.ndarray:
        """The waveform as the model must hear it: denoised with the method it was trained on
        (``self.denoise``, from its checkpoint), else with ``denoise`` if asked, else as is.

        A model trained on denoised audio never sees raw audio: its method overrides the asked one
        (denoising twice, or with another method, is not what it learnt from)."""
        method = self.denoise or denoise
        if not method:
            return waveform
        from ser.denoise import denoise as suppress

        return suppress(waveform, method)

    def predict_heard(self, waveform: np.ndarray, context: SpeakerContext | None = None) -> dict[str, float]:
        """``predict`` on a decoded waveform already prepared by ``heard`` (not denoised again)."""
        if context is not None and self.adapts_to_speakers:
            pooled = self._pooled_features(waveform)
            context.add(pooled)
            stats = context.stats(self._prior_std()) if len(context) >= MIN_CONTEXT_CLIPS else None
            return dict(zip(self.labels, self._head_probabilities(pooled, stats).tolist()))
        if self.one_pass(waveform):
            probs = self._probabilities(waveform)
        else:
            windows = segments(waveform, LONGEST_PASS_S, LONGEST_PASS_S)
            probs = np.mean([self._probabilities(window.samples) for window in windows], axis=0)
        return dict(zip(self.labels, probs.tolist()))

    @staticmethod
    def one_pass(waveform: np.ndarray) -> bool:
        """Does ``predict`` read this decoded clip in one pass (not as the mean of its windows)?"""
        return len(waveform) <= LONGEST_PASS_S * SAMPLE_RATE

    def predict_group(self, clips: list[Any], *, heard: bool = False) -> list[dict[str, float]]:
        """Clips of one voice (a speaker's folder, a call): each predicted relative to that voice.

        Speaker statistics come from every clip of the group, so all of them are encoded before the
        first is predicted. Fewer than ``MIN_CONTEXT_CLIPS`` clips, or a model without a
        speaker-adapted head, give the same answers as ``predict``.
        """
        waveforms = [check_judgeable(load_audio(clip)) for clip in clips]
        waveforms = waveforms if heard else [self.heard(waveform) for waveform in waveforms]
        if not self.adapts_to_speakers or len(clips) < MIN_CONTEXT_CLIPS:
            return [self.predict_heard(waveform) for waveform in waveforms]
        pooled = [self._pooled_features(waveform) for waveform in waveforms]
        stats = speaker_stats(np.stack(pooled), self._prior_std())
        return [dict(zip(self.labels, self._head_probabilities(p, stats).tolist())) for p in pooled]

    def predict_batch(self, clips: list[Any]) -> list[dict[str, float]]:
        """Predict several clips one by one, as ``predict`` does.

        Padding a batch changes what models without an attention mask see, so clips are run singly;
        ``ser.bulk`` batches only clips of one length, and only where the loaded model answers the
        same batched (``batching_is_exact``).
        """
        return [self.predict(clip) for clip in clips]

    def timeline(self, audio: Any, window_s: float = 3.0, hop_s: float = 1.5, *,
                 denoise: str | None = None) -> list[dict[str, Any]]:
        """Probabilities per window for long recordings: emotion over time (``denoise`` as in ``predict``)."""
        waveform = self.heard(load_audio(audio), denoise)
        return [
            {
                "start": segment.start_s,
                "end": segment.end_s,
                "probs": dict(zip(self.labels, self._probabilities(segment.samples).tolist())),
            }
            for segment in segments(waveform, window_s, hop_s)
        ]

    def _torch_model(self) -> Any:
        """The PyTorch model; a predictor started on its export loads it now, once."""
        with self._load_lock:
            if isinstance(self.model, _ExportedModel):
                self.model = self.model.load()
        return self.model

    def _pooled_features(self, waveform: np.ndarray) -> np.ndarray:
        """The probe's per-layer means of one clip (a long clip: the mean over its 30 s windows)."""
        windows = segments(waveform, LONGEST_PASS_S, LONGEST_PASS_S)
        with torch.inference_mode():
            model = self._torch_model()
            pooled = [model.pooled_features(**self._inputs(w.samples))[0].float().numpy() for w in windows]
        return np.mean(pooled, axis=0)

    def _prior_std(self) -> np.ndarray:
        return self._torch_model().speaker_head.prior_std.numpy()

    def _head_probabilities(self, pooled: np.ndarray, stats: SpeakerStats | None) -> np.ndarray:
        """The speaker-adapted head on features standardised by ``stats``; None: the plain head."""
        with torch.inference_mode():
            if stats is None:
                logits = self._torch_model().head.forward_pooled(torch.from_numpy(pooled)[None])[0]
            else:
                adapted = torch.from_numpy(standardise(pooled, stats))[None]
                logits = self._torch_model().speaker_head.head.forward_pooled(adapted)[0]
        return torch.softmax(logits.float(), dim=-1).numpy().astype(np.float64)

    def _probabilities(self, waveform: np.ndarray) -> np.ndarray:
        if self.feature_extractor is None:
            return np.asarray(self.model.predict_proba([waveform])[0], dtype=np.float64)
        inputs = self._inputs(waveform)
        if self._runner is not None:
            logits = self._runner(inputs)[0]
        else:
            with torch.inference_mode():
                logits = self.model(**inputs).logits[0]
        return torch.softmax(logits.float(), dim=-1).numpy().astype(np.float64)

    def _inputs(self, waveform: np.ndarray) -> dict[str, torch.Tensor]:
        inputs = self.feature_extractor(waveform, sampling_rate=SAMPLE_RATE, padding=self._padding, return_tensors="pt")
        return {key: value for key, value in inputs.items() if key in self._forward_keys}

    # --- speech detection and denoising (ser.speech, ser.denoise) ---------------------------------

    def predict_speech(self, audio: Any, *, trim: bool = False, denoise: str | None = None) -> dict[str, float]:
        """``predict`` after optional denoising, refusing a clip with no speech (``ser.speech.NoSpeech``)
        and, with ``trim``, cutting its leading and trailing silence. Off by default: on EmoDB trimming
        cost 0.014 UAR and 1.24x the time (benchmarks/results/vad.md). Speech is looked for after
        denoising, and a clip trimmed below ``MIN_JUDGED_S`` is too short to judge."""
        from ser.speech import prepare

        return self.predict_heard(check_judgeable(prepare(self.heard(load_audio(audio), denoise), trim=trim)))

    def utterances(self, audio: Any, *, denoise: str | None = None) -> list[dict[str, Any]]:
        """One prediction per utterance (speech between pauses of ``ser.speech.UTTERANCE_GAP_S`` or more)."""
        from ser.speech import prepare, utterances

        waveform = prepare(self.heard(load_audio(audio), denoise), trim=False)
        rows = []
        for region in utterances(waveform):
            part = waveform[round(region.start_s * SAMPLE_RATE) : round(region.end_s * SAMPLE_RATE)]
            if len(part) < MIN_JUDGED_S * SAMPLE_RATE:  # a cough between pauses: too short to judge, not a row
                continue
            rows.append({"start": region.start_s, "end": region.end_s, "probs": self.predict_heard(part)})
        return rows


class _ExportedModel:
    """Stands in for the PyTorch model when a predictor runs on its export: labels and model type,
    and the checkpoint to load the PyTorch model from when something needs it (speaker adaptation)."""

    def __init__(self, serving: dict[str, Any], checkpoint: Path) -> None:
        self.labels = list(serving["labels"])
        self.checkpoint = checkpoint
        self.config = type(
            "ExportedConfig",
            (),
            {"model_type": serving["model_type"], "speaker_adaptation": bool(serving.get("speaker_adaptation")),
             "ser_denoise": serving.get("denoise")},
        )()

    def load(self) -> Any:
        _register_project_models(self.config.model_type)
        from transformers import AutoModelForAudioClassification

        return AutoModelForAudioClassification.from_pretrained(str(self.checkpoint)).eval()


def _export_feature_extractor(local: Path, padding: str) -> Any:
    """Whisper's log-mel without transformers where it reproduces the checkpoint's extractor
    (0.8 s of start-up), else transformers' own."""
    from ser.backbones.whisper_features import from_config

    fast = from_config(local) if padding == "longest" else None
    if fast is not None:
        return fast
    from transformers import AutoFeatureExtractor

    return AutoFeatureExtractor.from_pretrained(str(local))


def trained_denoising(model: Any) -> str | None:
    """The ``ser.denoise`` method a model's training audio went through (None: raw audio).

    Transformer checkpoints carry it as ``config.ser_denoise``, classical models in ``classical.json``."""
    method = getattr(getattr(model, "config", None), "ser_denoise", None)
    if method is None:
        method = (getattr(model, "info", None) or {}).get("denoise")
    return str(method) if method else None


def _model_version(local: Path, model: Any) -> str:
    """A model's version: the one its training run recorded, else its directory or hub id."""
    recorded = getattr(model.config, "ser_model_version", None)
    if recorded:
        return str(recorded)
    metrics = local / "metrics.json"
    if metrics.is_file():
        version = json.loads(metrics.read_text()).get("model_version")
        if version:
            return str(version)
    return local.name if local.exists() else str(model.config.name_or_path)
