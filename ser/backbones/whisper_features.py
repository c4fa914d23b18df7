"""Whisper's log-mel features without importing transformers, for the exported serving path.

Importing transformers costs about 0.8 s of a CLI call's 3 s start-up (benchmarks/startup.py),
and a model served from its ONNX/OpenVINO export needs nothing of it but the feature extractor.
This computes what ``transformers.WhisperFeatureExtractor`` computes on CPU with torch present
(its ``_torch_extract_fbank_features``, ``padding="longest"``, its attention mask), with
the mel filters from torchaudio (equal to transformers' slaney filters to 1e-7);
``tests/test_backbones.py`` pins the two against each other on real speech. Anything this does
not reproduce (dither, normalisation, other sizes) is refused by :func:`from_config`, and the
caller falls back to transformers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

SUPPORTED = {"feature_extractor_type": "WhisperFeatureExtractor", "dither": 0.0, "n_fft": 400,
             "hop_length": 160, "sampling_rate": 16000, "padding_side": "right", "padding_value": 0.0}


class WhisperLogMel:
    """Callable like the transformers extractor, for mono 16 kHz clips at their own length: one clip,
    or a batch of clips of one length (as ``ser.bulk`` batches them: no padding)."""

    def __init__(self, feature_size: int, n_fft: int, hop_length: int, sampling_rate: int,
                 return_attention_mask: bool) -> None:
        import torchaudio.functional  # 25 ms, against transformers' 800

        self.n_fft, self.hop_length, self.sampling_rate = n_fft, hop_length, sampling_rate
        self.return_attention_mask = return_attention_mask
        self.mel_filters = torchaudio.functional.melscale_fbanks(
            n_fft // 2 + 1, 0.0, 8000.0, feature_size, sampling_rate, norm="slaney", mel_scale="slaney"
        )

    def __call__(self, waveform: np.ndarray | list[np.ndarray], *, sampling_rate: int,
                 padding: str = "longest", return_tensors: str = "pt") -> dict[str, torch.Tensor]:
        if sampling_rate != self.sampling_rate or padding != "longest" or return_tensors != "pt":
            raise ValueError("WhisperLogMel computes clips at their own length, as torch tensors")
        if isinstance(waveform, (list, tuple)) and len({len(clip) for clip in waveform}) > 1:
            raise ValueError("WhisperLogMel batches clips of one length only (no padding)")
        samples = torch.from_numpy(np.asarray(waveform, dtype=np.float32))
        batch = samples if samples.dim() == 2 else samples[None]
        stft = torch.stft(batch, self.n_fft, self.hop_length, window=torch.hann_window(self.n_fft),
                          return_complex=True)
        magnitudes = (stft[..., :-1].abs() ** 2).contiguous()
        log_spec = torch.clamp(self.mel_filters.T @ magnitudes, min=1e-10).log10()
        # Each clip's floor is 8 below its own maximum, as transformers computes a batch.
        ceiling = log_spec.amax(dim=(1, 2), keepdim=True)
        log_spec = (torch.maximum(log_spec, ceiling - 8.0) + 4.0) / 4.0
        features = {"input_features": log_spec}
        if self.return_attention_mask:
            # Sample-level, as transformers returns it when the call does not ask for a mask itself.
            features["attention_mask"] = torch.ones(batch.shape, dtype=torch.int32)
        return features


def from_config(checkpoint: Path) -> WhisperLogMel | None:
    """The fast extractor for a checkpoint whose preprocessor config it reproduces, else None."""
    path = Path(checkpoint) / "preprocessor_config.json"
    if not path.is_file():
        return None
    config: dict[str, Any] = json.loads(path.read_text())
    if any(config.get(key) != value for key, value in SUPPORTED.items()) or config.get("do_normalize"):
        return None
    return WhisperLogMel(int(config.get("feature_size", 80)), config["n_fft"], config["hop_length"],
                         config["sampling_rate"], bool(config.get("return_attention_mask", False)))
