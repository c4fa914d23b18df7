"""What every training run leaves beside its model: metrics.json, a report with plots, a model card.

All training paths (fine-tuning, probe, classical, retrain, the default model) describe their run
as one :class:`RunRecord` and write it with :func:`write_run_outputs`, so every model directory
the app can switch to says the same things in the same place: its version (:func:`version_id`),
which data it learned from, how the test speakers were kept apart, what it scored, and under which
licence the training data may be used (a model inherits its data's terms; acted corpora are
mostly non-commercial). The licence texts are ``ser.corpora.CorpusSpec.licence``'s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ser.metrics import write_report

UNKNOWN_LICENCE = "Unknown: check the terms of the training data before sharing this model."
VERSION_TIME = "%Y%m%dT%H%M%SZ"


def corpus_licence(corpus: str) -> str:
    """The training-data licence of a corpus (or comma-separated corpora), from ``ser.corpora``'s specs."""
    from ser.corpora import CorpusError, corpus_spec

    texts = []
    for name in (part.strip() for part in corpus.split(",") if part.strip()):
        try:
            spec = corpus_spec(name)
        except CorpusError:
            spec = None
        texts.append(f"{spec.name}: {spec.licence}" if spec and spec.licence else f"{name}: {UNKNOWN_LICENCE}")
    return " ".join(texts) or UNKNOWN_LICENCE


def version_id(name: str, when: float | None = None) -> str:
    """``{name}-{UTC YYYYmmddTHHMMSSZ}``: the one version format of every run (sortable, zone-free)."""
    return f"{name}-{time.strftime(VERSION_TIME, time.gmtime(when))}"


@dataclass
class RunRecord:
    """One training run as stored in metrics.json and told by the model card.

    ``metrics`` is what ``ser.metrics.compute_metrics`` returns for the test clips; ``extra``
    (options, speakers, validation scores...) is stored in metrics.json beside it; ``card`` is a
    model card the method renders itself (the probe's), else :func:`model_card` writes one.
    """

    metrics: Mapping[str, Any]
    model_name: str
    data_desc: str
    split_desc: str
    licence: str
    version: str
    extra: Mapping[str, Any] = field(default_factory=dict)
    title: str | None = None  # of report.md; default "<model_name>: test split"
    card: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The content of metrics.json: the test metrics, then what the run was, then ``extra``."""
        return {
            **dict(self.metrics),
            "model_version": self.version,
            "model": self.model_name,
            "data": self.data_desc,
            "split": self.split_desc,
            "data_licence": self.licence,
            **dict(self.extra),
        }


def write_run_outputs(
    out_dir: str | Path,
    metrics: Mapping[str, Any],
    *,
    model_name: str,
    data_desc: str,
    split_desc: str,
    licence: str,
    version: str | None = None,
    extra: Mapping[str, Any] | None = None,
    title: str | None = None,
    card: str | None = None,
) -> dict[str, Path]:
    """Write ``metrics.json``, ``report.md`` + confusion/per-class PNGs and the model card ``README.md``.

    The arguments are the fields of :class:`RunRecord`; ``version`` defaults to :func:`version_id`
    of the directory's name. Returns the written paths by kind.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record = RunRecord(metrics, model_name, data_desc, split_desc, licence, version or version_id(out.name),
                       dict(extra or {}), title, card)
    paths = {"metrics": out / "metrics.json", "card": out / "README.md"}
    paths["metrics"].write_text(json.dumps(record.to_json(), indent=2, default=_json_default) + "\n", encoding="utf-8")
    paths.update(write_report(dict(metrics), out, title=record.title or f"{record.model_name}: test split"))
    paths["card"].write_text(record.card or model_card(record), encoding="utf-8")
    return paths


def model_card(record: RunRecord) -> str:
    """The README.md of a model directory, with Hugging Face model-card front matter."""
    metrics, version = record.metrics, record.version
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
        f"# Speech emotion recognition: {record.model_name}",
        "",
        f"Version `{version}`. Predicts one of: {', '.join(labels)}.",
        "",
        "## Training data",
        "",
        record.data_desc,
        "",
        f"**Data licence:** {record.licence}",
        "",
        "## Split",
        "",
        record.split_desc,
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
        return asdict(value)
    raise TypeError(f"cannot store {type(value).__name__} in metrics.json")


__all__ = ["UNKNOWN_LICENCE", "RunRecord", "corpus_licence", "model_card", "version_id", "write_run_outputs"]
