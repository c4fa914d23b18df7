"""What every training run leaves beside its model: metrics.json, a report with plots, a model card.

All training paths (fine-tuning, probe, classical) call :func:`write_run_outputs`, so every model
directory the app can switch to says the same things in the same place: which data it learned
from, how the test speakers were kept apart, what it scored, and under which licence the training
data may be used (a model inherits its data's terms; acted corpora are mostly non-commercial).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ser.metrics import write_report

# Terms of the corpora ser.corpora reads, as their publishers state them.
DATA_LICENCES: dict[str, str] = {
    "emodb": (
        "EmoDB (Burkhardt et al., Interspeech 2005): distributed free of charge by TU Berlin for research; "
        "no formal licence file. Cite the paper."
    ),
    "ravdess": "RAVDESS (Livingstone & Russo, 2018): CC BY-NC-SA 4.0 (non-commercial).",
    "crema-d": "CREMA-D (Cao et al., 2014): Open Database License v1.0, contents under the Database Contents License v1.0.",
    "tess": "TESS (Dupuis & Pichora-Fuller, 2010): CC BY-NC-ND 4.0 (non-commercial).",
}
UNKNOWN_LICENCE = "Unknown: check the terms of the training data before sharing this model."


def corpus_licence(corpus: str) -> str:
    """The training-data licence line for a corpus name known to ``ser.corpora``."""
    return DATA_LICENCES.get(corpus.strip().lower().replace("_", "-"), UNKNOWN_LICENCE)


def default_version(out_dir: str | Path) -> str:
    """A version that tells runs apart: the directory name and the UTC time of writing."""
    return f"{Path(out_dir).name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


def write_run_outputs(
    out_dir: str | Path,
    metrics: Mapping[str, Any],
    *,
    model_name: str,
    data_desc: str,
    split_desc: str,
    licence: str,
    extra: Mapping[str, Any] | None = None,
    version: str | None = None,
) -> dict[str, Path]:
    """Write ``metrics.json``, ``report.md`` + confusion/per-class PNGs and the model card ``README.md``.

    ``metrics`` is what ``ser.metrics.compute_metrics`` returns for the test split; ``extra``
    (options, speakers, validation scores...) is stored in metrics.json beside it. Returns the
    written paths by kind.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    version = version or default_version(out)
    record = {
        **dict(metrics),
        "model_version": version,
        "model": model_name,
        "data": data_desc,
        "split": split_desc,
        "data_licence": licence,
        **dict(extra or {}),
    }
    paths = {"metrics": out / "metrics.json", "card": out / "README.md"}
    paths["metrics"].write_text(json.dumps(record, indent=2, default=_json_default) + "\n", encoding="utf-8")
    paths.update(write_report(dict(metrics), out, title=f"{model_name}: test split"))
    paths["card"].write_text(
        model_card(metrics, model_name=model_name, data_desc=data_desc, split_desc=split_desc,
                   licence=licence, version=version),
        encoding="utf-8",
    )
    return paths


def model_card(
    metrics: Mapping[str, Any], *, model_name: str, data_desc: str, split_desc: str, licence: str, version: str
) -> str:
    """The README.md of a model directory, with Hugging Face model-card front matter."""
    labels = list(metrics["labels"])
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: audio-classification",
        "tags:",
        "- speech-emotion-recognition",
        "- audio-classification",
        "---",
        "",
        f"# Speech emotion recognition: {model_name}",
        "",
        f"Version `{version}`. Predicts one of: {', '.join(labels)}.",
        "",
        "## Training data",
        "",
        data_desc,
        "",
        f"**Data licence:** {licence}",
        "",
        "## Split",
        "",
        split_desc,
        "",
        "## Test metrics",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| UAR (unweighted average recall) | {metrics['uar']:.4f} |",
        f"| accuracy | {metrics['accuracy']:.4f} |",
        f"| macro-F1 | {metrics['macro_f1']:.4f} |",
        f"| test clips | {metrics.get('n', '?')} |",
        "",
        "Per-class scores and the confusion matrix: `report.md`, `confusion_matrix.png`, `per_class.png`;",
        "everything in machine-readable form: `metrics.json`.",
        "",
        "## Use",
        "",
        "```python",
        "from ser.model import Predictor",
        "",
        'predictor = Predictor.from_pretrained("path/to/this/folder")',
        'print(predictor.predict("clip.wav"))',
        "```",
        "",
        "Acted speech differs from everyday speech: expect lower scores on spontaneous recordings,",
        "other languages and other microphones than the test split above.",
        "",
    ]
    return "\n".join(lines)


def _json_default(value: Any) -> Any:
    """NumPy scalars/arrays and paths in ``extra`` become plain JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(value)
    raise TypeError(f"cannot store {type(value).__name__} in metrics.json")


__all__ = ["DATA_LICENCES", "UNKNOWN_LICENCE", "corpus_licence", "default_version", "model_card", "write_run_outputs"]
