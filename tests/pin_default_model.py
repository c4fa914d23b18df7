"""Pin what the shipped default model predicts on the repository's example clips.

    python -m tests.pin_default_model

Run it deliberately whenever ``ser/default_model`` is replaced, and commit the rewritten
``tests/default_model_pins.json``: ``tests/test_default_model.py`` then fails on any unintended
change of the model's outputs (a new head, labels order, feature pipeline or encoder conversion).
The probabilities come from eager PyTorch, the reference that every faster runtime is checked against.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
PINS = REPO / "tests" / "default_model_pins.json"
EXAMPLES = REPO / "examples"
# Eager PyTorch on different x86 CPUs and thread counts agrees to about 1e-6 here; 1e-3 leaves room
# for library updates while any real change of the model moves probabilities by far more.
TOLERANCE = 1e-3


def model_fingerprint(model_dir: Path) -> str:
    """SHA-256 over the model directory's config and weights files: which model the pins belong to."""
    digest = hashlib.sha256()
    for path in sorted(model_dir.iterdir()):
        if path.is_file() and path.suffix in {".json", ".safetensors", ".bin", ".joblib"} and path.name != "metrics.json":
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def example_clips() -> list[Path]:
    return sorted(EXAMPLES.rglob("*.flac"))


def clip_key(clip: Path) -> str:
    """The clip's path under examples/ ("nemo/EB0/angry.flac"): names repeat across folders."""
    return clip.relative_to(EXAMPLES).as_posix()


def predict_examples() -> dict[str, Any]:
    """The default model's eager probabilities on every example clip, with what identifies the model."""
    from ser.model import DEFAULT_MODEL_DIR, Predictor

    predictor = Predictor.from_pretrained(DEFAULT_MODEL_DIR, runtime="eager")
    return {
        "model_version": predictor.version,
        "model_sha256": model_fingerprint(DEFAULT_MODEL_DIR),
        "labels": predictor.labels,
        "tolerance": TOLERANCE,
        "probabilities": {clip_key(clip): predictor.predict(clip) for clip in example_clips()},
    }


def main() -> int:
    sys.path.insert(0, str(REPO))
    pins = predict_examples()
    PINS.write_text(json.dumps(pins, indent=2) + "\n", encoding="utf-8")
    for name, probs in pins["probabilities"].items():
        top = max(probs, key=probs.get)
        print(f"{name:24s} {top:10s} {probs[top]:.3f}")
    print(f"wrote {PINS.relative_to(REPO)} for {pins['model_version']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
