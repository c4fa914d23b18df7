"""The seed article's light models: a 2-D CNN on log-mel/MFCC and a BiLSTM on MFCC frames.

They are ``PreTrainedModel`` subclasses registered with the transformers Auto classes, so a light
checkpoint directory loads, trains and serves exactly like a wav2vec2 one: ``Trainer`` fine-tunes
it, ``Predictor`` loads it with ``AutoFeatureExtractor`` + ``AutoModelForAudioClassification``.
They train from scratch in minutes on a CPU and are a few hundred kilobytes on disk, which is what
makes them usable as an embedded default model and as a baseline beside the large encoders.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModelForAudioClassification,
    BatchFeature,
    PretrainedConfig,
    PreTrainedModel,
    SequenceFeatureExtractor,
)
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutput

from ser.audio import SAMPLE_RATE

FEATURE_TYPES = ("logmel", "mfcc")
LIGHT_MODELS = ("light-cnn", "light-bilstm")


@lru_cache(maxsize=8)
def _spectral_transform(
    feature_type: str, sampling_rate: int, n_fft: int, hop_length: int, n_mels: int, n_mfcc: int, device: str = "cpu"
) -> nn.Module:
    """One torchaudio transform per parameter set and device, built once (the mel filterbank is not free)."""
    import torchaudio

    mel_kwargs = {"n_fft": n_fft, "hop_length": hop_length, "n_mels": n_mels, "f_min": 20.0}
    if feature_type == "mfcc":
        transform = torchaudio.transforms.MFCC(sample_rate=sampling_rate, n_mfcc=n_mfcc, melkwargs=mel_kwargs)
    else:
        transform = torchaudio.transforms.MelSpectrogram(sample_rate=sampling_rate, **mel_kwargs)
    return transform.to(device)


class LightFeatureExtractor(SequenceFeatureExtractor):
    """Log-mel or MFCC frames (25 ms window, 10 ms hop), with the recording's gain removed.

    Gain differs far more between microphones than between emotions, and in the log domain it is
    a constant offset: ``normalize`` subtracts the utterance's mean log-mel level (for MFCC, the
    mean of c0, the only coefficient a gain moves). The spectral shape and its dynamics, which do
    carry emotion, are kept; the models standardise each feature with a batch-norm learned on the
    training set. Padded frames are zeros and are marked in ``attention_mask`` so the models pool
    over real frames only.
    """

    model_input_names: ClassVar[list[str]] = ["input_features", "attention_mask"]

    def __init__(
        self,
        feature_type: str = "logmel",
        sampling_rate: int = SAMPLE_RATE,
        n_fft: int = 400,
        hop_length: int = 160,
        n_mels: int = 64,
        n_mfcc: int = 40,
        normalize: bool = True,
        padding_value: float = 0.0,
        return_attention_mask: bool = True,
        **kwargs: Any,
    ) -> None:
        if feature_type not in FEATURE_TYPES:
            raise ValueError(f"feature_type must be one of {FEATURE_TYPES}, not {feature_type!r}")
        feature_size = n_mfcc if feature_type == "mfcc" else n_mels
        kwargs.pop("feature_size", None)
        super().__init__(
            feature_size=feature_size,
            sampling_rate=sampling_rate,
            padding_value=padding_value,
            return_attention_mask=return_attention_mask,
            **kwargs,
        )
        self.feature_type = feature_type
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.n_mfcc = n_mfcc
        self.normalize = normalize

    def __call__(
        self,
        raw_speech: np.ndarray | Sequence[float] | Sequence[np.ndarray] | torch.Tensor,
        sampling_rate: int | None = None,
        padding: bool | str = "longest",
        max_length: int | None = None,
        truncation: bool = False,
        pad_to_multiple_of: int | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
        device: str = "cpu",
        **kwargs: Any,
    ) -> BatchFeature:
        """Features for one waveform or a batch; ``max_length`` counts frames (100 per second).

        ``device="cuda"`` computes them on the GPU (training there), returning CPU arrays all the same.
        """
        if sampling_rate is not None and sampling_rate != self.sampling_rate:
            raise ValueError(
                f"{type(self).__name__} expects audio at {self.sampling_rate} Hz, got {sampling_rate} Hz: "
                "resample first (ser.audio.load_audio does)."
            )
        features = [self.features(wave, device) for wave in _as_batch(raw_speech)]
        return self.pad(
            BatchFeature({"input_features": features}),
            padding=padding,
            max_length=max_length,
            truncation=truncation,
            pad_to_multiple_of=pad_to_multiple_of,
            return_attention_mask=return_attention_mask,
            return_tensors=return_tensors,
        )

    def features(self, waveform: np.ndarray, device: str = "cpu") -> np.ndarray:
        """(frames, feature_size) float32 features of one 1-D waveform."""
        wave = torch.as_tensor(np.asarray(waveform, dtype=np.float32)).to(device)
        if wave.numel() < self.n_fft:  # the centred STFT reflects n_fft/2 samples at each end
            wave = nn.functional.pad(wave, (0, self.n_fft - wave.numel()))
        transform = _spectral_transform(
            self.feature_type, self.sampling_rate, self.n_fft, self.hop_length, self.n_mels, self.n_mfcc, device
        )
        with torch.no_grad():
            spec = transform(wave)
        if self.feature_type == "logmel":
            spec = torch.log(spec + 1e-6)
        frames = spec.T
        if self.normalize and self.feature_type == "logmel":
            frames = frames - frames.mean()
        elif self.normalize:
            frames[:, 0] -= frames[:, 0].mean()
        return frames.cpu().numpy().astype(np.float32)


def _as_batch(raw_speech: Any) -> list[np.ndarray]:
    """Accept one waveform or several, as arrays, tensors or lists."""
    if isinstance(raw_speech, torch.Tensor):
        raw_speech = raw_speech.detach().cpu().numpy()
    if isinstance(raw_speech, np.ndarray):
        if raw_speech.ndim == 1:
            return [raw_speech]
        if raw_speech.ndim == 2:
            return list(raw_speech)
        raise ValueError(f"expected a 1-D waveform or a 2-D batch, got shape {raw_speech.shape}")
    items = list(raw_speech)
    if items and np.isscalar(items[0]):
        return [np.asarray(items, dtype=np.float32)]
    return [np.asarray(item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else item) for item in items]


class LightCNNConfig(PretrainedConfig):
    """A stack of conv-pool-batchnorm blocks over the (frequency, time) plane."""

    model_type = "ser-light-cnn"

    def __init__(
        self,
        num_features: int = 64,
        channels: Sequence[int] = (32, 64, 128),
        kernel_size: int = 3,
        dropout: float = 0.3,
        **kwargs: Any,
    ) -> None:
        self.num_features = num_features
        self.channels = list(channels)
        self.kernel_size = kernel_size
        self.dropout = dropout
        super().__init__(**kwargs)


class LightBiLSTMConfig(PretrainedConfig):
    """A bidirectional LSTM over feature frames.

    ``frame_stride`` > 1 averages that many 10 ms frames into one before the LSTM: its recurrence is
    sequential, so on a CPU the time goes down almost in proportion.
    """

    model_type = "ser-light-bilstm"

    def __init__(
        self,
        num_features: int = 40,
        hidden_size: int = 128,
        num_layers: int = 2,
        dropout: float = 0.3,
        frame_stride: int = 1,
        **kwargs: Any,
    ) -> None:
        self.num_features = num_features
        self.frame_stride = frame_stride
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.dropout = dropout
        super().__init__(**kwargs)


class _LightPreTrainedModel(PreTrainedModel):
    main_input_name = "input_features"
    base_model_prefix = ""

    def _init_weights(self, module: nn.Module) -> None:
        """He init for ReLU convolutions, Xavier for the classifier; the library default otherwise."""
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    def _output(self, logits: torch.Tensor, labels: torch.Tensor | None) -> SequenceClassifierOutput:
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


def _frame_mask(input_features: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    if attention_mask is None:
        return input_features.new_ones(input_features.shape[:2])
    return attention_mask.to(input_features.dtype)


def _pool_frames(features: torch.Tensor, mask: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Average every ``stride`` real frames into one; a pooled frame is real if any of its frames is."""
    if stride <= 1:
        return features, mask
    batch, frames, width = features.shape
    extra = -frames % stride
    features = nn.functional.pad(features * mask.unsqueeze(-1), (0, 0, 0, extra))
    mask = nn.functional.pad(mask, (0, extra))
    summed = features.reshape(batch, -1, stride, width).sum(dim=2)
    counts = mask.reshape(batch, -1, stride).sum(dim=2)
    return summed / counts.clamp(min=1).unsqueeze(-1), (counts > 0).to(mask.dtype)


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over time (dim 1) of real frames only; values (B, T, C), mask (B, T)."""
    weights = mask.unsqueeze(-1)
    return (values * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class LightCNNForAudioClassification(_LightPreTrainedModel):
    """Input batch-norm, conv -> ReLU -> max-pool -> batch-norm blocks, masked global average pooling,
    dropout, linear."""

    config_class = LightCNNConfig

    def __init__(self, config: LightCNNConfig) -> None:
        super().__init__(config)
        blocks = []
        in_channels = 1
        for out_channels in config.channels:
            blocks.append(
                nn.ModuleDict(
                    {
                        "conv": nn.Conv2d(in_channels, out_channels, config.kernel_size, padding=config.kernel_size // 2),
                        "pool": nn.MaxPool2d(2, ceil_mode=True),
                        "norm": nn.BatchNorm2d(out_channels),
                    }
                )
            )
            in_channels = out_channels
        self.input_norm = nn.BatchNorm1d(config.num_features)
        self.blocks = nn.ModuleList(blocks)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(in_channels, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        """``input_features``: (batch, frames, features); ``attention_mask``: (batch, frames)."""
        mask = _frame_mask(input_features, attention_mask)
        x = (self.input_norm(input_features.transpose(1, 2)) * mask[:, None, :]).unsqueeze(1)  # (B, 1, F, T)
        for block in self.blocks:
            # Padding is zeroed after each step that could make it non-zero, so a clip gives the same
            # logits alone or padded in a batch (ReLU outputs are >= 0, so zeros never win a max-pool).
            x = nn.functional.relu(block["conv"](x)) * mask[:, None, None, :]
            x = block["pool"](x)
            mask = nn.functional.max_pool1d(mask.unsqueeze(1), 2, ceil_mode=True).squeeze(1)
            x = block["norm"](x) * mask[:, None, None, :]
        pooled = _masked_mean(x.mean(dim=2).transpose(1, 2), mask)
        return self._output(self.classifier(self.dropout(pooled)), labels)


class LightBiLSTMForAudioClassification(_LightPreTrainedModel):
    """Input batch-norm, a packed BiLSTM (padding never enters the recurrence), masked mean of outputs,
    dropout, linear."""

    config_class = LightBiLSTMConfig

    def __init__(self, config: LightBiLSTMConfig) -> None:
        super().__init__(config)
        self.input_norm = nn.BatchNorm1d(config.num_features)
        self.lstm = nn.LSTM(
            config.num_features,
            config.hidden_size,
            num_layers=config.num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(2 * config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_features: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        """``input_features``: (batch, frames, features); ``attention_mask``: (batch, frames)."""
        mask = _frame_mask(input_features, attention_mask)
        input_features, mask = _pool_frames(input_features, mask, self.config.frame_stride)
        lengths = mask.sum(dim=1).long().clamp(min=1).cpu()
        frames = self.input_norm(input_features.transpose(1, 2)).transpose(1, 2)
        packed = nn.utils.rnn.pack_padded_sequence(frames, lengths, batch_first=True, enforce_sorted=False)
        outputs, _ = self.lstm(packed)
        outputs, _ = nn.utils.rnn.pad_packed_sequence(outputs, batch_first=True, total_length=input_features.shape[1])
        pooled = _masked_mean(outputs, mask)
        return self._output(self.classifier(self.dropout(pooled)), labels)


def create_light_model(
    kind: str, labels: Sequence[str], *, feature_type: str | None = None, **config_kwargs: Any
) -> tuple[PreTrainedModel, LightFeatureExtractor]:
    """A freshly initialised light model and its feature extractor for ``labels``.

    ``kind`` is ``light-cnn`` (log-mel by default) or ``light-bilstm`` (MFCC by default).
    """
    if kind not in LIGHT_MODELS:
        raise ValueError(f"unknown light model {kind!r}; choose one of {LIGHT_MODELS}")
    default_feature = "logmel" if kind == "light-cnn" else "mfcc"
    extractor = LightFeatureExtractor(feature_type=feature_type or default_feature)
    label_maps = {
        "id2label": {i: str(label) for i, label in enumerate(labels)},
        "label2id": {str(label): i for i, label in enumerate(labels)},
    }
    if kind == "light-cnn":
        config = LightCNNConfig(num_features=extractor.feature_size, **label_maps, **config_kwargs)
        return LightCNNForAudioClassification(config), extractor
    config = LightBiLSTMConfig(num_features=extractor.feature_size, **label_maps, **config_kwargs)
    return LightBiLSTMForAudioClassification(config), extractor


def _register() -> None:
    for config_class, model_class in (
        (LightCNNConfig, LightCNNForAudioClassification),
        (LightBiLSTMConfig, LightBiLSTMForAudioClassification),
    ):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModelForAudioClassification.register(config_class, model_class, exist_ok=True)
        AutoFeatureExtractor.register(config_class, LightFeatureExtractor, exist_ok=True)


_register()

__all__ = [
    "FEATURE_TYPES",
    "LIGHT_MODELS",
    "LightBiLSTMConfig",
    "LightBiLSTMForAudioClassification",
    "LightCNNConfig",
    "LightCNNForAudioClassification",
    "LightFeatureExtractor",
    "create_light_model",
]
