"""``python -m finetune prune``: remove attention heads / FFN channels from a Whisper probe's encoder.

The pruned encoder is embedded in the new checkpoint (``backbone/``), with its layer shapes in its
config (``ser.pruning``), so ``Predictor.from_pretrained`` loads it like any probe. Removing heads
changes every hidden state after the first pruned layer, so the old head no longer fits them:
with ``--corpus``/``--root`` the probe's head is refitted on the pruned encoder's hidden states
(the recovery fine-tune; the probe's own fast path, L-BFGS on cached layer means). The encoder
itself stays frozen, as in every probe.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from finetune.card import version_id
from ser.probe import ProbeForAudioClassification
from ser.pruning import least_important_heads, parse_heads, prune_ffn, prune_heads, structure


def prune_probe(
    model: ProbeForAudioClassification, heads: dict[int, list[int]] | None = None,
    heads_per_layer: int = 0, ffn_keep: float = 1.0,
) -> dict[str, Any]:
    """Prune ``model``'s encoder in place (named heads, or the weakest ``heads_per_layer``); the new structure."""
    if model.config.backbone_type != "whisper":
        raise ValueError(f"pruning supports Whisper probes, not a {model.config.backbone_type!r} encoder")
    encoder = model.encoder
    chosen = dict(heads or {}) or (least_important_heads(encoder, heads_per_layer) if heads_per_layer else {})
    if chosen:
        prune_heads(encoder, chosen)
    if ffn_keep < 1:
        prune_ffn(encoder, ffn_keep)
    model.config.backbone_embedded = True  # the offline backbone's name no longer describes this encoder
    model.config.backbone = f"{model.config.backbone}+pruned"
    return {"pruned_heads": {str(k): v for k, v in chosen.items()}, "ffn_keep": ffn_keep, **structure(encoder)}


def recover(model: ProbeForAudioClassification, dataset: Any, cache_dir: str | None = None) -> dict[str, Any]:
    """Refit the probe's head on the pruned encoder's hidden states of ``dataset`` (every clip)."""
    import torch

    from finetune.cache import cached_hidden_states
    from finetune.probe import CachedFeatures, ProbeOptions, probe_config, train_head_lbfgs
    from ser.corpora import label_names

    denoise = getattr(model.config, "ser_denoise", None)  # a probe trained on denoised audio stays so
    cached = cached_hidden_states(dataset, model, cache_dir=cache_dir, denoise=denoise).with_format("numpy")
    means = torch.from_numpy(np.asarray(cached["layer_means"])).float()
    n = len(dataset)
    features = CachedFeatures(means=means, frames=None, clip=np.arange(n), copy=np.zeros(n, dtype=int))
    options = ProbeOptions(layer_mix=model.config.layer_mix, head_hidden_size=model.config.head_hidden_size,
                           denoise=denoise)
    config = probe_config(model.config, label_names(dataset), options)
    head, log = train_head_lbfgs(config, features, np.asarray(dataset["label"]), np.arange(n), options)
    model.head.load_state_dict(head.state_dict())
    return {"recovery_clips": n, "recovery_iterations": log["epochs_run"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a Whisper probe checkpoint (e.g. ser/default_model)")
    parser.add_argument("--heads", default=None, help='heads to remove, "LAYER:HEAD,HEAD;LAYER:HEAD" (e.g. "0:1,3;2:0")')
    parser.add_argument("--heads-per-layer", type=int, default=0,
                        help="instead of --heads: remove this many heads of lowest out_proj norm from every layer")
    parser.add_argument("--ffn-keep", type=float, default=1.0, help="fraction of FFN channels to keep per layer")
    parser.add_argument("--corpus", default=None, help="recovery: refit the head on this corpus (ser.corpora name)")
    parser.add_argument("--root", default=None, help="folder holding the recovery corpus")
    parser.add_argument("--label-map", default=None, help="recovery corpus label map (the model's classes)")
    parser.add_argument("--cache-dir", default=None, help="hidden-state cache for the recovery")
    parser.add_argument("--out", required=True, help="pruned checkpoint directory to write")


def run(args: argparse.Namespace) -> int:
    model = ProbeForAudioClassification.from_pretrained(args.model)
    report = prune_probe(model, parse_heads(args.heads) if args.heads else None, args.heads_per_layer, args.ffn_keep)
    if args.corpus:
        from ser.corpora import load_corpus, with_label_names

        dataset = load_corpus(args.corpus, args.root, label_map=args.label_map)
        names = [model.config.id2label[i] for i in range(len(model.config.id2label))]
        report |= recover(model, with_label_names(dataset, names), args.cache_dir)
    out = Path(args.out)
    model.config.ser_model_version = version_id(f"pruned-{out.name}")  # not the source's version: other weights
    model.save_pretrained(out)
    (out / "pruning.json").write_text(json.dumps({"source": str(args.model), **report}, indent=2) + "\n")
    print(f"pruned {args.model}: heads per layer {report['heads']}, FFN {report['ffn']} -> {out}")
    return 0
