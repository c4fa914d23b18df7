"""Frozen-encoder probe: a pretrained speech encoder, left untouched, plus a small trained head.

Fine-tuning a transformer needs a GPU and hours; a probe needs seconds on a CPU because the encoder
runs once per clip and only the head learns. The head mixes the encoder's layers with learned
softmax weights (middle layers carry much of the emotion), pools over time (masked mean, or
attention) and classifies with a small MLP.

Whisper encoders run at the clip's real length, not padded to 30 s: ten times faster for a 3 s
clip. The feature extractor saved with a probe returns an attention mask, from which the probe
reads the real number of frames.

A probe is a Hugging Face checkpoint directory: ``import ser.probe`` registers it, then
``AutoModelForAudioClassification.from_pretrained(dir)`` and ``AutoFeatureExtractor.from_pretrained(dir)``
load it. The directory holds the head only when the encoder can be rebuilt offline (an entry of
``ser.backbones.OFFLINE_BACKBONES``, from its PyPI wheels); any other encoder is embedded under
``backbone/`` so the directory loads with no network.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoModel,
    AutoModelForAudioClassification,
    PretrainedConfig,
    PreTrainedModel,
    WhisperForAudioClassification,
)
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.utils import logging as hf_logging
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from ser.backbones import OFFLINE_WHISPER, encoder_shape, family, is_offline_backbone, resolve_backbone
from ser.backbones.whisper_length import encode_hidden_states, output_lengths

HEAD_WEIGHTS = "head.safetensors"
SPEAKER_HEAD_WEIGHTS = "speaker_head.safetensors"
BACKBONE_SUBDIR = "backbone"
POOLINGS = ("mean", "attentive")
LAYER_MIXES = ("weighted", "concat")


class ProbeConfig(PretrainedConfig):
    """What a probe needs to rebuild itself: where its encoder comes from and the head's shape."""

    model_type = "ser-probe"

    backbone: str = OFFLINE_WHISPER
    backbone_type: str = "whisper"
    backbone_embedded: bool = False
    num_layers: int = 5
    hidden_size: int = 384
    pooling: str = "mean"
    layer_mix: str = "weighted"
    # The lowest hidden states the head reads (0: the input embeddings). The layers below carry more of
    # the voice and the recording than of the emotion: leaving them out holds up better on unseen corpora.
    first_layer: int = 0
    head_hidden_size: int = 256
    dropout: float = 0.2
    # A second head trained on speaker-standardised features (``ser.adaptation``), used when
    # several clips of the same voice are known.
    speaker_adaptation: bool = False
    ser_model_version: str | None = None
    # The ``ser.denoise`` method the training audio went through; Predictor applies it to every clip.
    ser_denoise: str | None = None


class ProbeHead(nn.Module):
    """Layer mixing, pooling over time and an MLP: the only trained part of a probe.

    Per-layer feature standardisation (means and standard deviations of the training set) is
    stored as buffers so the checkpoint carries it: the head then sees unit-scale inputs whatever
    the encoder's layer scales are.
    """

    def __init__(self, config: ProbeConfig) -> None:
        super().__init__()
        if config.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, not {config.pooling!r}")
        if config.layer_mix not in LAYER_MIXES:
            raise ValueError(f"layer_mix must be one of {LAYER_MIXES}, not {config.layer_mix!r}")
        if not 0 <= config.first_layer < config.num_layers:
            raise ValueError(f"first_layer must be in [0, {config.num_layers}), not {config.first_layer}")
        width = config.hidden_size
        self.layer_mix = config.layer_mix
        self.first_layer = config.first_layer
        layers = config.num_layers - config.first_layer  # the layers the head reads
        self.register_buffer("feature_mean", torch.zeros(config.num_layers, width))
        self.register_buffer("feature_std", torch.ones(config.num_layers, width))
        self.layer_logits = nn.Parameter(torch.zeros(layers))
        mixed = width if config.layer_mix == "weighted" else layers * width
        self.attention = nn.Linear(mixed, 1) if config.pooling == "attentive" else None
        if config.head_hidden_size > 0:
            self.classifier = nn.Sequential(
                nn.Dropout(config.dropout),
                nn.Linear(mixed, config.head_hidden_size),
                nn.GELU(),
                nn.Dropout(config.dropout),
                nn.Linear(config.head_hidden_size, config.num_labels),
            )
        else:
            self.classifier = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(mixed, config.num_labels))

    def layer_weights(self) -> torch.Tensor:
        return torch.softmax(self.layer_logits, dim=0)

    def standardise(self, hidden: torch.Tensor) -> torch.Tensor:
        return (hidden - self.feature_mean) / self.feature_std

    def mix(self, hidden: torch.Tensor, *, standardised: bool = False) -> torch.Tensor:
        """(..., layers, width) -> (..., width) weighted, or (..., read layers * width) concatenated."""
        if not standardised:
            hidden = self.standardise(hidden)
        hidden = hidden[..., self.first_layer:, :]
        if self.layer_mix == "weighted":
            return torch.einsum("...lh,l->...h", hidden, self.layer_weights())
        return hidden.flatten(-2)

    def forward(self, hidden: torch.Tensor, frame_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from per-frame hidden states (batch, frames, layers, width)."""
        mixed = self.mix(hidden)
        if frame_mask is None:
            frame_mask = torch.ones(mixed.shape[:2], dtype=torch.bool, device=mixed.device)
        frame_mask = frame_mask.bool()
        if self.attention is None:
            weights = frame_mask.to(mixed.dtype) / frame_mask.sum(-1, keepdim=True).clamp(min=1)
        else:
            scores = self.attention(mixed).squeeze(-1).masked_fill(~frame_mask, torch.finfo(mixed.dtype).min)
            weights = torch.softmax(scores, dim=-1)
        pooled = torch.einsum("bt,bth->bh", weights, mixed)
        return self.classifier(pooled)

    def forward_pooled(self, layer_means: torch.Tensor, *, standardised: bool = False) -> torch.Tensor:
        """Logits from per-layer means over frames (batch, layers, width).

        Standardising and mixing layers are linear, so they commute with the mean over frames: for
        mean pooling this equals ``forward`` on the frames, and training can use cached means.
        """
        if self.attention is not None:
            raise ValueError("attentive pooling needs every frame, not per-layer means")
        return self.classifier(self.mix(layer_means, standardised=standardised))


def whisper_hidden_states(
    encoder: WhisperEncoder, input_features: torch.Tensor, mel_mask: torch.Tensor | None = None
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Every hidden state of a Whisper encoder run on the real length, and the mask of real frames.

    transformers' ``WhisperEncoder`` insists on 3000 mel frames (30 s); ``ser.backbones`` runs it on
    the clip's own length, masking a batch's padding, so a clip gives the same states alone or in a
    batch.
    """
    mel_lengths = _mel_lengths(input_features, mel_mask)
    unpadded = mel_mask is None or bool((mel_lengths == input_features.shape[-1]).all())
    states = encode_hidden_states(encoder, input_features, None if unpadded else mel_lengths)
    frames = states[0].shape[1]
    if unpadded:  # the Predictor's case: one clip, features of its own length
        return states, torch.ones(states[0].shape[:2], dtype=torch.bool, device=states[0].device)
    frame_lengths = output_lengths(mel_lengths).to(states[0].device)
    return states, torch.arange(frames, device=states[0].device)[None, :] < frame_lengths[:, None]


def _mel_lengths(input_features: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Real mel frames per clip, from a mask over mel frames or over samples.

    ``WhisperFeatureExtractor`` rescales its mask to mel frames only when ``return_attention_mask``
    is passed to the call; set in its config, the mask comes back per sample (160 per frame).
    """
    if mask is None:
        return torch.full((input_features.shape[0],), input_features.shape[-1], dtype=torch.long)
    lengths = mask.long().sum(-1)
    if mask.shape[-1] > input_features.shape[-1]:
        lengths = lengths // (mask.shape[-1] // input_features.shape[-1])
    return lengths.clamp(min=1, max=input_features.shape[-1])


def load_encoder(source: str) -> nn.Module:
    """The encoder of a checkpoint (local dir or hub id): Whisper's encoder half, else ``AutoModel``."""
    config = AutoConfig.from_pretrained(source)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the Whisper wrapper's unused classifier is reported as new
    try:
        if getattr(config, "ser_pruned", None):  # heads/FFN channels removed: layers of their own shapes
            from ser.pruning import load_pruned_encoder

            encoder = load_pruned_encoder(source, config)
        elif family(config.model_type).real_length_mel:  # Whisper: the encoder half of its classifier
            encoder = WhisperForAudioClassification.from_pretrained(source).encoder
        else:
            encoder = AutoModel.from_pretrained(source)
    finally:
        hf_logging.set_verbosity(verbosity)
    encoder.eval().requires_grad_(False)
    return encoder


def load_backbone_feature_extractor(source: str) -> Any:
    """The encoder's feature extractor; Whisper's is told to return the mask the probe needs."""
    extractor = AutoFeatureExtractor.from_pretrained(source)
    if type(extractor).__name__ == "WhisperFeatureExtractor":
        extractor.return_attention_mask = True
    return extractor


class SpeakerAdaptedHead(nn.Module):
    """The head for speaker-standardised features, and the training speakers' typical spread
    (``ser.adaptation.within_speaker_std``) that a voice heard in only a few clips is shrunk to."""

    def __init__(self, config: ProbeConfig) -> None:
        super().__init__()
        self.head = ProbeHead(config)
        self.register_buffer("prior_std", torch.ones(config.num_layers, config.hidden_size))


class ProbeForAudioClassification(PreTrainedModel):
    """A frozen pretrained encoder and a trained ``ProbeHead``."""

    config_class = ProbeConfig
    base_model_prefix = "probe"
    main_input_name = "input_values"
    _no_split_modules: list[str] = []

    def __init__(self, config: ProbeConfig, encoder: nn.Module | None = None, feature_extractor: Any = None) -> None:
        super().__init__(config)
        self.head = ProbeHead(config)
        self.speaker_head = SpeakerAdaptedHead(config) if config.speaker_adaptation else None
        self.post_init()
        # Attached after post_init so weight initialisation never touches pretrained weights.
        self.encoder = encoder
        self.feature_extractor = feature_extractor
        if encoder is not None:
            encoder.eval().requires_grad_(False)
        self.main_input_name = family(config.backbone_type).input_name

    def _init_weights(self, module: nn.Module) -> None:
        """The head keeps PyTorch's default initialisation; the encoder is pretrained."""

    @classmethod
    def from_backbone(
        cls,
        backbone: str,
        labels: list[str],
        *,
        pooling: str = "mean",
        layer_mix: str = "weighted",
        head_hidden_size: int = 256,
        dropout: float = 0.2,
        embed_backbone: bool | None = None,
    ) -> ProbeForAudioClassification:
        """A new probe (untrained head) on ``backbone``: a hub id, a local dir or an offline name."""
        source = resolve_backbone(backbone)
        encoder = load_encoder(source)
        num_layers, hidden_size = encoder_shape(encoder.config)
        config = ProbeConfig(
            backbone=backbone,
            backbone_type=encoder.config.model_type,
            backbone_embedded=not is_offline_backbone(backbone) if embed_backbone is None else embed_backbone,
            num_layers=num_layers,
            hidden_size=hidden_size,
            pooling=pooling,
            layer_mix=layer_mix,
            head_hidden_size=head_hidden_size,
            dropout=dropout,
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
        )
        return cls(config, encoder=encoder, feature_extractor=load_backbone_feature_extractor(source))

    def train(self, mode: bool = True) -> ProbeForAudioClassification:
        """Train the head only: the encoder stays in eval mode (no dropout, no SpecAugment)."""
        super().train(mode)
        if self.encoder is not None:
            self.encoder.eval()
        return self

    @torch.no_grad()
    def encode(
        self,
        input_values: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen hidden states (batch, frames, layers, width) and the mask of real frames."""
        if self.encoder is None:
            raise RuntimeError("this probe has no encoder: load it with from_pretrained or from_backbone")
        if family(self.config.backbone_type).real_length_mel:
            if input_features is None:
                raise ValueError("a Whisper probe takes input_features (log-mel), from its feature extractor")
            states, frame_mask = whisper_hidden_states(self.encoder, input_features, attention_mask)
        else:
            if input_values is None:
                raise ValueError("this probe takes input_values (raw waveform), from its feature extractor")
            output = self.encoder(input_values, attention_mask=attention_mask, output_hidden_states=True)
            states = output.hidden_states
            frames = states[0].shape[1]
            if attention_mask is None:
                frame_mask = torch.ones(states[0].shape[:2], dtype=torch.bool, device=states[0].device)
            else:
                frame_mask = self.encoder._get_feature_vector_attention_mask(frames, attention_mask).bool()
        return torch.stack(states, dim=2), frame_mask

    def forward(
        self,
        input_values: torch.Tensor | None = None,
        input_features: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        hidden, frame_mask = self.encode(input_values, input_features, attention_mask)
        logits = self.head(hidden, frame_mask)  # the plain head: one clip, no knowledge of the voice
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """config.json, the head's weights and the feature extractor; the encoder only if embedded."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        self.config.architectures = [type(self).__name__]
        self.config.save_pretrained(out)
        head = {name: tensor.detach().contiguous().cpu() for name, tensor in self.head.state_dict().items()}
        save_file(head, str(out / HEAD_WEIGHTS), metadata={"format": "pt"})
        if self.speaker_head is not None:
            adapted = {name: t.detach().contiguous().cpu() for name, t in self.speaker_head.state_dict().items()}
            save_file(adapted, str(out / SPEAKER_HEAD_WEIGHTS), metadata={"format": "pt"})
        if self.feature_extractor is not None:
            self.feature_extractor.save_pretrained(out)
        if self.config.backbone_embedded:
            _save_encoder(self.encoder, self.feature_extractor, out / BACKBONE_SUBDIR)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, *model_args: Any, config: Any = None, **kwargs: Any
    ) -> ProbeForAudioClassification:
        """Load a saved probe: its head, and its encoder from ``backbone/`` or rebuilt offline."""
        path = Path(pretrained_model_name_or_path)
        if not path.is_dir():
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(str(pretrained_model_name_or_path), revision=kwargs.get("revision")))
        if not isinstance(config, ProbeConfig):
            config = ProbeConfig.from_pretrained(path)
        source = str(path / BACKBONE_SUBDIR) if config.backbone_embedded else resolve_backbone(config.backbone)
        model = cls(config, encoder=load_encoder(source), feature_extractor=load_backbone_feature_extractor(str(path)))
        model.head.load_state_dict(load_file(str(path / HEAD_WEIGHTS)), strict=True)
        if model.speaker_head is not None:
            model.speaker_head.load_state_dict(load_file(str(path / SPEAKER_HEAD_WEIGHTS)), strict=True)
        return model.eval()

    @torch.no_grad()
    def pooled_features(self, **inputs: torch.Tensor) -> torch.Tensor:
        """Per-layer means over real frames (batch, layers, width): what the heads and
        speaker statistics are computed on."""
        hidden, frame_mask = self.encode(
            inputs.get("input_values"), inputs.get("input_features"), inputs.get("attention_mask")
        )
        weights = frame_mask.to(hidden.dtype) / frame_mask.sum(-1, keepdim=True).clamp(min=1)
        return torch.einsum("bt,btlh->blh", weights, hidden)


def _save_encoder(encoder: nn.Module, feature_extractor: Any, out: Path) -> None:
    """Embed the encoder in a form ``load_encoder`` reads back."""
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(encoder, WhisperEncoder):
        # Keys as in WhisperModel ("encoder.*"), which WhisperForAudioClassification loads.
        state = {f"encoder.{name}": t.detach().contiguous().cpu() for name, t in encoder.state_dict().items()}
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        encoder.config.save_pretrained(out)
    else:
        encoder.save_pretrained(out)
    if feature_extractor is not None:
        feature_extractor.save_pretrained(out)


AutoConfig.register(ProbeConfig.model_type, ProbeConfig, exist_ok=True)
AutoModelForAudioClassification.register(ProbeConfig, ProbeForAudioClassification, exist_ok=True)
