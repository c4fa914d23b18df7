"""Structured pruning (ser/pruning.py, finetune/prune.py): heads and FFN channels really go, and the
pruned probe still loads through Predictor and predicts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from transformers import WhisperConfig

from ser.pruning import parse_heads, prune_ffn, prune_heads
from tests.tiny_models import LABELS

RATE = 16000


def _tiny_encoder():
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    config = WhisperConfig(d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64,
                           num_mel_bins=80, max_source_positions=100)
    torch.manual_seed(0)
    return WhisperEncoder(config).eval()


def test_pruning_a_head_equals_zeroing_its_output() -> None:
    """Slicing a head out gives exactly the layer with that head's contribution removed."""
    encoder = _tiny_encoder()
    hidden = torch.randn(1, 10, 32)
    attn = encoder.layers[0].self_attn
    reference = attn.out_proj
    masked = torch.nn.Linear(32, 32)
    masked.weight.data = reference.weight.data.clone()
    masked.bias.data = reference.bias.data.clone()
    masked.weight.data[:, 8:16] = 0  # head 1 of 4 (head_dim 8)
    attn.out_proj = masked
    expected = attn(hidden)[0]
    attn.out_proj = reference
    prune_heads(encoder, {0: [1]})
    assert torch.allclose(encoder.layers[0].self_attn(hidden)[0], expected, atol=1e-5)


def test_parse_heads_and_refusals() -> None:
    assert parse_heads("0:1,3; 2:0") == {0: [1, 3], 2: [0]}
    encoder = _tiny_encoder()
    with pytest.raises(ValueError, match="at least one"):
        prune_heads(encoder, {0: [0, 1, 2, 3]})
    with pytest.raises(ValueError, match="heads 0..3"):
        prune_heads(encoder, {0: [7]})
    with pytest.raises(ValueError):
        prune_ffn(encoder, 0.0)


def test_prune_command_removes_the_named_heads_and_predictor_loads_it(tmp_path) -> None:
    from finetune.__main__ import COMMANDS
    from ser.cli import dispatch
    from ser.model import Predictor
    from ser.probe import ProbeForAudioClassification
    from tests.tiny_models import save_tiny_whisper

    backbone = save_tiny_whisper(tmp_path / "whisper")
    probe = ProbeForAudioClassification.from_backbone(str(backbone), LABELS)
    probe.save_pretrained(tmp_path / "probe")
    out = tmp_path / "pruned"
    rc = dispatch("python -m finetune", "", COMMANDS, [
        "prune", "--model", str(tmp_path / "probe"), "--heads", "0:1", "--ffn-keep", "0.5", "--out", str(out),
    ])
    assert rc == 0
    config = json.loads((out / "backbone" / "config.json").read_text())
    assert config["ser_pruned"] == {"heads": [1], "ffn": [32]}  # 2 heads -> 1, FFN 64 -> 32
    predictor = Predictor.from_pretrained(out, runtime="eager")
    layer = predictor.model.encoder.layers[0]
    assert layer.self_attn.num_heads == 1 and tuple(layer.self_attn.q_proj.weight.shape) == (16, 32)
    assert tuple(layer.fc1.weight.shape) == (32, 32) and tuple(layer.fc2.weight.shape) == (32, 32)
    wave = (0.2 * np.sin(2 * np.pi * 220 * np.arange(RATE) / RATE)).astype(np.float32)
    probs = predictor.predict(wave)
    assert set(probs) == set(LABELS) and math.isclose(sum(probs.values()), 1.0, rel_tol=1e-5)
    # The checkpoint predicts as the pruned model did in memory.
    pruned = ProbeForAudioClassification.from_pretrained(out)
    inputs = predictor._inputs(wave)
    with torch.no_grad():
        assert torch.allclose(pruned(**inputs).logits, predictor.model(**inputs).logits, atol=1e-5)
