"""Tiny transformer checkpoints built from configs, so tests never need the hub."""

from __future__ import annotations

from pathlib import Path

import torch

LABELS = ["neutral", "happy", "sad", "angry"]


def _label_maps(labels: list[str]) -> dict:
    return {"id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}}


def save_tiny_wav2vec2(
    out: Path, labels: list[str] = LABELS, *, kind: str = "wav2vec2", seed: int = 0, init_std: float = 0.02
) -> Path:
    """A randomly initialised wav2vec2 or HuBERT classifier with a real feature extractor.

    At the default ``init_std`` its probabilities sit within a few thousandths of uniform whatever
    the input; ``init_std=0.5`` makes one whose outputs depend on the input.
    """
    from transformers import (
        HubertConfig,
        HubertForSequenceClassification,
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForSequenceClassification,
    )

    config_class, model_class = {
        "wav2vec2": (Wav2Vec2Config, Wav2Vec2ForSequenceClassification),
        "hubert": (HubertConfig, HubertForSequenceClassification),
    }[kind]
    torch.manual_seed(seed)
    config = config_class(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        classifier_proj_size=16,
        initializer_range=init_std,
        **_label_maps(labels),
    )
    model_class(config).save_pretrained(out)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True).save_pretrained(out)
    return out


def save_tiny_whisper(out: Path, labels: list[str] = LABELS) -> Path:
    """A Whisper classifier whose feature extractor pads to 2 s (200 mel frames) instead of 30 s."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForAudioClassification

    config = WhisperConfig(
        d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64, decoder_layers=1,
        decoder_attention_heads=2, decoder_ffn_dim=64, num_mel_bins=80, max_source_positions=100,
        max_target_positions=32, vocab_size=100, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1, classifier_proj_size=16, init_std=0.3, **_label_maps(labels),
    )
    torch.manual_seed(0)
    WhisperForAudioClassification(config).save_pretrained(out)
    WhisperFeatureExtractor(feature_size=80, chunk_length=2).save_pretrained(out)
    return out
