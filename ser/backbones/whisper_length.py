"""Run a Whisper encoder on a clip's real length instead of Whisper's fixed 30 s window.

transformers' ``WhisperEncoder.forward`` refuses anything but 3000 mel frames, so a 3 s
clip costs as much as a 30 s one. The encoder itself has no such limit: the positional
embeddings just need slicing to the real length. This runs the encoder's own modules in
HF's order, so weights, dropout and attention implementation are shared with the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from transformers.models.whisper.modeling_whisper import WhisperEncoder

Lengths = int | Sequence[int] | torch.Tensor | None


def output_lengths(num_frames: torch.Tensor) -> torch.Tensor:
    """Encoder positions per clip: conv2 has stride 2 (50 positions per second)."""
    return (num_frames + 1) // 2


def frames_from_attention_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Real mel frames per clip from ``WhisperFeatureExtractor(..., return_attention_mask=True)``."""
    return attention_mask.sum(-1)


def _key_padding_mask(lengths: torch.Tensor, size: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive (batch, 1, 1, size) mask: clips shorter than the batch's longest ignore its tail."""
    padded = torch.arange(size, device=lengths.device)[None, :] >= lengths[:, None]
    mask = torch.zeros(padded.shape, dtype=dtype, device=lengths.device)
    return mask.masked_fill(padded, torch.finfo(dtype).min)[:, None, None, :]


def encode_hidden_states(
    encoder: WhisperEncoder, input_features: torch.Tensor, num_frames: Lengths = None
) -> tuple[torch.Tensor, ...]:
    """All hidden states (embeddings, then each layer; the last layer-normed, as HF returns them).

    ``input_features`` is (batch, mel bins, frames), padded or not. ``num_frames`` is the real
    number of mel frames: None (use them all), one int for the batch, or one per clip; with
    several lengths the batch is cut to the longest and shorter clips are masked, so positions
    past ``output_lengths(num_frames)`` of a clip are padding the caller must ignore.
    """
    if num_frames is None:
        return _encode_unpadded(encoder, input_features)
    batch = input_features.shape[0]
    lengths = torch.as_tensor(num_frames, device=input_features.device).reshape(-1).expand(batch)
    longest = int(lengths.max())
    limit = encoder.embed_positions.num_embeddings * encoder.conv1.stride[0] * encoder.conv2.stride[0]
    if not 0 < longest <= min(limit, input_features.shape[-1]):
        raise ValueError(f"num_frames must be in 1..{min(limit, input_features.shape[-1])}, got {longest}")

    # Zero each clip's tail before each conv so its last positions match a clip encoded alone.
    real = (torch.arange(longest, device=lengths.device)[None, :] < lengths[:, None]).unsqueeze(1)
    features = input_features[..., :longest].to(encoder.conv1.weight.dtype) * real
    embeds = nn.functional.gelu(encoder.conv1(features)) * real
    embeds = nn.functional.gelu(encoder.conv2(embeds)).permute(0, 2, 1)
    size = embeds.shape[1]
    hidden = embeds + encoder.embed_positions.weight[:size]
    hidden = nn.functional.dropout(hidden, p=encoder.dropout, training=encoder.training)

    out_lengths = output_lengths(lengths)
    mask = None if bool((out_lengths == size).all()) else _key_padding_mask(out_lengths, size, hidden.dtype)
    states = [hidden]
    for layer in encoder.layers:
        hidden = layer(hidden, mask)
        states.append(hidden)
    states[-1] = encoder.layer_norm(hidden)
    return tuple(states)


def _encode_unpadded(encoder: WhisperEncoder, input_features: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Every frame is real: no masks, and no Python numbers taken from tensors, so a traced (ONNX)
    export keeps the time axis dynamic instead of freezing the example's length."""
    limit = encoder.embed_positions.num_embeddings * encoder.conv1.stride[0] * encoder.conv2.stride[0]
    if input_features.shape[-1] > limit:
        raise ValueError(f"at most {limit} mel frames ({limit // 100} s) fit the encoder, got {input_features.shape[-1]}")
    embeds = nn.functional.gelu(encoder.conv1(input_features.to(encoder.conv1.weight.dtype)))
    embeds = nn.functional.gelu(encoder.conv2(embeds)).permute(0, 2, 1)
    hidden = embeds + encoder.embed_positions.weight[: embeds.shape[1]]
    hidden = nn.functional.dropout(hidden, p=encoder.dropout, training=encoder.training)
    states = [hidden]
    for layer in encoder.layers:
        hidden = layer(hidden, None)
        states.append(hidden)
    states[-1] = encoder.layer_norm(hidden)
    return tuple(states)


def masked_mean(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over each clip's first ``lengths`` positions: (batch, time, dim) -> (batch, dim)."""
    keep = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths.to(hidden.device)[:, None]
    keep = keep.unsqueeze(-1).to(hidden.dtype)
    return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1)
