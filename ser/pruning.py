"""Structured pruning of a Whisper encoder: whole attention heads and FFN channels removed.

transformers 5 dropped ``prune_heads`` (and Whisper never had it), so the Linear layers are sliced
here: a pruned head's rows of ``q/k/v_proj`` and columns of ``out_proj`` go, and so do the least
important channels of ``fc1``/``fc2``. The model gets genuinely smaller and faster (no masks, no
zeros multiplied), and any runtime (eager, ONNX, int8) runs it unchanged.

Layers then differ in shape, which a ``WhisperConfig`` cannot say, so the structure is recorded in
the encoder's config under ``ser_pruned`` and ``load_pruned_encoder`` rebuilds those shapes before
loading the weights: a pruned probe loads through ``Predictor.from_pretrained`` like any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

PRUNED_KEY = "ser_pruned"


def _rows(linear: nn.Linear, keep: torch.Tensor) -> nn.Linear:
    """A Linear keeping output features ``keep``."""
    out = nn.Linear(linear.in_features, len(keep), bias=linear.bias is not None)
    out.weight.data = linear.weight.data[keep].clone()
    if linear.bias is not None:
        out.bias.data = linear.bias.data[keep].clone()
    return out


def _columns(linear: nn.Linear, keep: torch.Tensor) -> nn.Linear:
    """A Linear keeping input features ``keep`` (the bias is untouched)."""
    out = nn.Linear(len(keep), linear.out_features, bias=linear.bias is not None)
    out.weight.data = linear.weight.data[:, keep].clone()
    if linear.bias is not None:
        out.bias.data = linear.bias.data.clone()
    return out


def head_importance(encoder: nn.Module) -> list[list[float]]:
    """Per layer, per head: the L2 norm of the head's slice of ``out_proj`` (what it adds to the stream)."""
    scores = []
    for layer in encoder.layers:
        attn = layer.self_attn
        weight = attn.out_proj.weight.data.reshape(attn.out_proj.out_features, attn.num_heads, attn.head_dim)
        scores.append(weight.norm(dim=(0, 2)).tolist())
    return scores


def least_important_heads(encoder: nn.Module, per_layer: int) -> dict[int, list[int]]:
    """The ``per_layer`` heads of lowest ``head_importance`` in every layer."""
    return {i: sorted(torch.tensor(s).argsort()[:per_layer].tolist()) for i, s in enumerate(head_importance(encoder))}


def prune_heads(encoder: nn.Module, heads: dict[int, list[int]]) -> None:
    """Remove the listed heads (current indices) of each layer, in place; a layer keeps at least one."""
    for index, pruned in heads.items():
        attn = encoder.layers[int(index)].self_attn
        pruned = sorted(set(int(h) for h in pruned))
        if not pruned:
            continue
        if any(not 0 <= h < attn.num_heads for h in pruned):
            raise ValueError(f"layer {index} has heads 0..{attn.num_heads - 1}, not {pruned}")
        kept = [h for h in range(attn.num_heads) if h not in pruned]
        if not kept:
            raise ValueError(f"pruning every head of layer {index} would cut the layer off; keep at least one")
        keep = torch.cat([torch.arange(h * attn.head_dim, (h + 1) * attn.head_dim) for h in kept])
        attn.q_proj, attn.k_proj, attn.v_proj = (_rows(p, keep) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
        attn.out_proj = _columns(attn.out_proj, keep)
        attn.num_heads = len(kept)
    _record(encoder)


def prune_ffn(encoder: nn.Module, keep_fraction: float) -> None:
    """Keep the ``keep_fraction`` of each layer's FFN channels with the largest |fc1 row| x |fc2 column|."""
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], not {keep_fraction}")
    for layer in encoder.layers:
        score = layer.fc1.weight.data.norm(dim=1) * layer.fc2.weight.data.norm(dim=0)
        keep = score.argsort(descending=True)[: max(1, round(keep_fraction * layer.fc1.out_features))].sort().values
        layer.fc1, layer.fc2 = _rows(layer.fc1, keep), _columns(layer.fc2, keep)
    _record(encoder)


def structure(encoder: nn.Module) -> dict[str, list[int]]:
    """Heads and FFN width per layer, as stored under ``config.ser_pruned``."""
    return {"heads": [layer.self_attn.num_heads for layer in encoder.layers],
            "ffn": [layer.fc1.out_features for layer in encoder.layers]}


def _record(encoder: nn.Module) -> None:
    setattr(encoder.config, PRUNED_KEY, structure(encoder))


def shape_like(encoder: nn.Module, pruned: dict[str, list[int]]) -> None:
    """Give a fresh encoder the shapes of ``pruned`` (its weights are then loaded over them)."""
    for index, (layer, heads, ffn) in enumerate(zip(encoder.layers, pruned["heads"], pruned["ffn"])):
        surplus = list(range(layer.self_attn.num_heads - int(heads)))
        if surplus:
            prune_heads(encoder, {index: surplus})
        keep = torch.arange(int(ffn))
        layer.fc1, layer.fc2 = _rows(layer.fc1, keep), _columns(layer.fc2, keep)
    _record(encoder)


def load_pruned_encoder(source: str | Path, config: Any) -> nn.Module:
    """A Whisper encoder saved pruned (``ser.probe`` embeds it with ``encoder.*`` keys)."""
    from safetensors.torch import load_file
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    encoder = WhisperEncoder(config)
    shape_like(encoder, getattr(config, PRUNED_KEY))
    state = load_file(str(Path(source) / "model.safetensors"))
    prefix = "encoder."
    encoder.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=True)
    return encoder


def parse_heads(spec: str) -> dict[int, list[int]]:
    """``"0:1,3;2:0"`` -> {0: [1, 3], 2: [0]}: layer, colon, comma-separated heads; layers split by ``;``."""
    heads: dict[int, list[int]] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        layer, _, listed = part.partition(":")
        if not listed:
            raise ValueError(f"expected LAYER:HEAD,HEAD in {part!r} (e.g. '0:1,3;2:0')")
        heads[int(layer)] = [int(h) for h in listed.split(",") if h.strip()]
    return heads
